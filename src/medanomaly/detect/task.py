"""The ``lung_nodule`` task: simulate -> train -> evaluate (held-out synthetic + real lesions) -> report.

``medanomaly train configs/lung_nodule.yaml`` calls :meth:`LungNoduleTask.train`, which trains the
detector, then evaluates it; ``medanomaly evaluate RUN`` re-runs the evaluation. The run folder
holds ``config.yaml``, ``model.json``, ``model.safetensors`` + ``detector.json``, ``train_history.json``,
``metrics.json``, the plots, ``report.html`` and ``<case>/findings.json`` for each real CT.

Example:
    >>> from medanomaly.registry import TASKS
    >>> TASKS.get("lung_nodule").config_class.__name__  # doctest: +SKIP
    'LungNoduleConfig'
"""


from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.detect.config import LungNoduleConfig, SimulationConfig
from medanomaly.detect.model import DetectionModel, detector_explainable, run_info
from medanomaly.detect.simulate import ScanSimulator, SourceScan, load_source
from medanomaly.engine.run import RunInfo, write_run_info
from medanomaly.errors import InputError
from medanomaly.jsonio import read_json, write_json
from medanomaly.registry import TASKS

__all__ = ["LungNoduleTask", "check_training_memory", "evaluate_validation", "iter_simulated", "load_sources",
           "simulate_set", "simulate_training_set", "validation_cpm"]

log = logging.getLogger(__name__)

#: Lung labels of the simulation config (``train_side``) in words.
_SIDE_NAMES = {1: "right", 2: "left"}


def load_sources(sim: SimulationConfig, progress: bool = True) -> list[SourceScan]:
    """Read the source CTs (and real lesion masks) of a simulation config, with their lung masks."""
    from medanomaly.data.sources import pyradiomics_case

    jobs = []
    for i, s in enumerate(sim.sources):
        if s.case is not None:
            image, mask = pyradiomics_case(s.case)
            jobs.append((s.name or s.case, image, s.lesion_mask or mask))
        elif s.image is not None:
            jobs.append((s.name or f"source{i}", s.image, s.lesion_mask))
        else:
            raise InputError(f"simulation.sources[{i}] needs `case` or `image`")
    iterator: Any = jobs
    if progress:
        from rich.progress import track

        iterator = track(jobs, description="read source CTs + lung masks")
    return [load_source(name, image, mask, sim.exclude_margin_mm) for name, image, mask in iterator]


def simulate_set(cfg: LungNoduleConfig, sources: list[SourceScan], purpose: str = "train",
                 progress: bool = True) -> list[Any]:
    """Simulated scans for ``purpose``: ``train`` (lung ``train_side``, LIDC train shapes, seed stream 0),
    ``val`` (the training lung, LIDC val shapes, stream 2, scans 0 .. ``val_scans_per_source`` - 1: the learning
    curve's, which pick the kept weights; never the held-out lung the test scans are searched in), ``val_draw``
    (the training lung, LIDC val shapes, stream 2, the next ``test_scans_per_source`` scans per source: a
    validation draw as large as the held-out one and disjoint from the scans that chose the weights; what
    ``evaluate --split val`` scores) or ``test`` (the held-out lung, LIDC test shapes, stream 1; what
    :meth:`LungNoduleTask.evaluate` scores), as :class:`SimScan` s."""
    return list(iter_simulated(cfg, sources, purpose, progress))


def iter_simulated(cfg: LungNoduleConfig, sources: list[SourceScan], purpose: str = "train",
                   progress: bool = True) -> Iterator[Any]:
    """The scans of :func:`simulate_set`, made one at a time (a caller that keeps only what it needs of each never
    holds the whole set at source resolution)."""
    from medanomaly.detect.simulate import ScanSimulator

    sim = cfg.simulation
    side, first, n_scans, n_nodules, stream = _SETS[purpose](sim)
    split = "val" if purpose == "val_draw" else purpose
    simulator = ScanSimulator(sim.shapes, split, sim.diameter_range_mm, sim.procedural_diameter_range_mm,
                              non_solid_weight=sim.non_solid_weight if purpose == "train" else 1.0)
    jobs = [(si, k) for si in range(len(sources)) for k in range(first, first + n_scans)]
    iterator: Any = jobs
    if progress:
        from rich.progress import track

        iterator = track(jobs, description=f"simulate {purpose} scans (synthetic nodules, {sim.shapes} shapes)")
    for si, k in iterator:
        yield simulator.scan(sources[si], side, n_nodules, np.random.default_rng([cfg.seed, stream, si, k]),
                             f"{sources[si].name}-{split}-{k}", index=k)  # fmt: skip


#: (lung side, first scan index, scans per source, nodules per scan, seed stream) of each simulated set.
_SETS = {
    "train": lambda s: (s.train_side, 0, s.train_scans_per_source, s.nodules_per_train_scan, 0),
    "val": lambda s: (s.train_side, 0, s.val_scans_per_source, s.nodules_per_test_scan, 2),
    "val_draw": lambda s: (s.train_side, s.val_scans_per_source, s.test_scans_per_source, s.nodules_per_test_scan, 2),
    "test": lambda s: (3 - s.train_side, 0, s.test_scans_per_source, s.nodules_per_test_scan, 1),
}


def simulate_training_set(cfg: LungNoduleConfig, sources: list[SourceScan], progress: bool = True) -> list[Any]:
    """Simulated training scans on the detector grid (nodules in lung ``train_side`` only), each resampled as soon
    as it is made."""
    from medanomaly.detect.patches import to_grid_scan

    return [to_grid_scan(scan, cfg.grid.spacing_mm, cfg.grid.hu_window)
            for scan in iter_simulated(cfg, sources, "train", progress)]  # fmt: skip


def check_training_memory(cfg: LungNoduleConfig, sources: list[SourceScan], available: int | None = None) -> int:
    """Refuse a simulation whose training scans (kept on the detector grid) and learning-curve validation scans (kept
    at source resolution) would not fit in memory, before any is made; returns the estimate in bytes.

    Raises:
        InputError: the estimate is over 90 % of ``available`` (default: what the system has available now).
    """
    from medanomaly.io.limits import format_bytes, memory_shortfall
    from medanomaly.preprocess.resample import resampled_size

    sim = cfg.simulation
    grid = sum(int(np.prod(resampled_size(src.ct.shape[::-1], src.ct.spacing, cfg.grid.spacing_mm))) for src in sources)
    full = sum(math.prod(src.ct.shape) for src in sources)
    need = sim.train_scans_per_source * grid * _GRID_BYTES + sim.val_scans_per_source * full * _SOURCE_BYTES
    available = memory_shortfall(need, 0.9, available)
    if available is not None:
        raise InputError(f"the simulation needs about {format_bytes(need)} of memory ({sim.train_scans_per_source} "
                         f"training and {sim.val_scans_per_source} validation scan(s) per source, {len(sources)} "
                         f"source(s), grid {_mm(cfg.grid.spacing_mm)} mm) but {format_bytes(available)} is available: "
                         "lower simulation.train_scans_per_source or val_scans_per_source, or coarsen "
                         "grid.spacing_mm")  # fmt: skip
    return need


def _mm(spacing: Any) -> str:
    """A grid spacing for a message: ``0.8 x 0.8 x 5``."""
    return " x ".join(f"{float(v):g}" for v in spacing)


#: Bytes per detector-grid voxel of a training scan (image and HU float32, nodule / allowed / exclusion masks).
_GRID_BYTES = 11
#: Bytes per source voxel of a kept simulated scan (CT int16 and its label mask uint8).
_SOURCE_BYTES = 3


def validation_cpm(scans: list[Any], hit_min_radius_mm: float) -> Any:
    """``validate(detector) -> {"cpm": ...}`` on simulated validation scans (synthetic), for the learning
    curve: FROC CPM of the network's findings (region growing off: it moves no centre or score)."""
    from medanomaly.detect.evaluation import score_scans

    def validate(detector: Any) -> dict[str, float]:
        grow, detector.grow = detector.grow, False
        try:
            return {"cpm": score_scans(detector, scans, hit_min_radius_mm)["froc"].cpm}
        finally:
            detector.grow = grow

    return validate


class LungNoduleTask:
    """Registered as ``lung_nodule`` in :data:`medanomaly.registry.TASKS`."""

    config_class = LungNoduleConfig

    def __init__(self, progress: bool = True) -> None:
        self.progress = progress

    def train(
        self,
        config: LungNoduleConfig,
        run_dir: Path,
        sources: list[SourceScan] | None = None,
        out_dir: Path | None = None,
    ) -> Path:
        """Simulate, train, save the detector, then evaluate (metrics and report into ``out_dir``,
        default ``run_dir``)."""
        from medanomaly.detect.detector import WEIGHTS_FILE, NoduleDetector
        from medanomaly.detect.generic import check_network
        from medanomaly.train.distributed import resolve_device

        check_network(config.model.name, dict(config.model.params),  # before minutes of data work
                      windows={"train.patch_size": config.train.patch_size, "infer.roi_size": config.infer.roi_size})
        resolve_device(config.train.device)  # "cuda" without a GPU: one line, before it too
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        if config.luna16 is not None:  # the LUNA16 recipe: annotated nodules of its training folds
            from medanomaly.detect.luna16_source import train_luna16

            return train_luna16(config, run_dir, out_dir, self.progress)
        sources = sources if sources is not None else load_sources(config.simulation, self.progress)
        check_training_memory(config, sources)
        scans = simulate_training_set(config, sources, self.progress)
        validate, eval_every = None, config.train.eval_every
        if eval_every > 0 and config.simulation.val_scans_per_source > 0:
            validate = validation_cpm(simulate_set(config, sources, "val", self.progress), config.infer.hit_min_radius_mm)
        detector = NoduleDetector.from_config(config).fit(scans, progress=self.progress, validate=validate,
                                                          eval_every=eval_every)  # fmt: skip
        detector.save(run_dir)
        write_run_info(run_dir, run_info(detector, WEIGHTS_FILE))
        write_json(run_dir / "train_history.json",
                   {"loss": detector.history_, "n_train_scans": len(scans), "synthetic": True,
                    **detector.fit_.to_json(), "budget_minutes": config.train.budget_minutes,
                    "steps_max": config.train.steps, "shapes": config.simulation.shapes,
                    "note": f"trained on simulated nodules ({config.simulation.shapes} shapes) in lung "
                            f"{config.simulation.train_side}; learning curve: CPM on "
                            f"{config.simulation.val_scans_per_source} validation scan(s) per source "
                            "(val-split shapes, training lung, separate seed)"})  # fmt: skip
        self.evaluate(run_dir, "test", sources=sources, config=config, out_dir=out_dir)
        return run_dir

    def load(self, run_dir: Path, info: RunInfo) -> DetectionModel:
        """The trained detector of a checked run folder, behind the engine contract."""
        from medanomaly.detect.detector import NoduleDetector

        return DetectionModel(info, run_dir, NoduleDetector.load(run_dir))

    def evaluate(
        self,
        run_dir: Path,
        split: str = "test",
        sources: list[SourceScan] | None = None,
        config: LungNoduleConfig | None = None,
        out_dir: Path | None = None,
    ) -> dict[str, Any]:
        """Held-out synthetic FROC/agreement + real-lesion detection; writes metrics.json and report.html.

        Args:
            run_dir: the trained run folder.
            split: "test" (held-out simulated scans + the real lesions) or "val" (a validation draw in the
                training lung, :func:`evaluate_validation`: ``metrics_val.json`` and ``froc_val.png``; the
                held-out ``metrics.json`` and ``report.html`` are left as they are).
            sources: already loaded source CTs (else read from the config).
            config: the run's config (else read from ``run_dir/config.yaml``).
            out_dir: where findings, plots and the report go (default ``run_dir``).
        """
        from medanomaly.config import load_config
        from medanomaly.detect.detector import NoduleDetector
        from medanomaly.detect.evaluation import evaluate_heldout
        from medanomaly.evaluate.froc import cpm_interval
        from medanomaly.evaluate.lung_report import plot_froc

        run_dir = Path(run_dir)
        out_dir = Path(out_dir) if out_dir is not None else run_dir
        cfg = config if config is not None else load_config(run_dir / "config.yaml")
        assert isinstance(cfg, LungNoduleConfig)
        if cfg.luna16 is not None:  # LUNA16 folds: 'test' or 'val', the challenge's CPM
            from medanomaly.detect.luna16_source import evaluate_luna16

            return evaluate_luna16(run_dir, cfg, split, out_dir, self.progress)
        if split not in ("test", "val"):
            raise InputError(f"lung_nodule has the splits 'test' and 'val', got {split!r}")
        detector = NoduleDetector.load(run_dir, device="auto")  # a GPU when present: the evaluation's sliding windows
        sources = sources if sources is not None else load_sources(cfg.simulation, self.progress)
        if split == "val":
            return evaluate_validation(detector, cfg, sources, out_dir, self.progress)
        sim = cfg.simulation
        heldout_side = 3 - sim.train_side
        held = evaluate_heldout(
            detector, sources, heldout_side, sim.test_scans_per_source, sim.nodules_per_test_scan,
            sim.diameter_range_mm, cfg.seed, cfg.infer.hit_min_radius_mm, self.progress,
            simulator=ScanSimulator(sim.shapes, "test", sim.diameter_range_mm),
        )  # fmt: skip
        fr, large = held["froc"], held["froc_large"]
        cpm_ci = cpm_interval(held["marks"])  # here, not in score_scans: the learning curve's validations need no CI
        plot_froc(fr, out_dir / "froc.png")
        agreement = _agreement_plots(held, out_dir)
        cases = [_real_case(detector, source, cfg.infer.explain_top, out_dir) for source in sources
                 if source.lesion is not None]  # fmt: skip
        split_text = _split_text(cfg, sources)
        training = _training_record(run_dir, out_dir)
        metrics = {
            **_froc_entries("heldout_synthetic", fr, large, cpm_ci, split_text, held["recurring_fp"], held["by_size"]),
            "agreement_synthetic": {a["what"]: {k: a[k] for k in ("bias", "sd", "loa_low", "loa_high", "n",
                                                                 "relative_percent")} for a in agreement},  # fmt: skip
            "real_lesions": {c["name"]: {k: c[k] for k in ("rank", "score", "fp_at_threshold", "n_findings",
                                                          "reference_ml", "measured_ml", "measured_mask_ml")}
                           for c in cases},  # fmt: skip
        }
        if training is not None:
            metrics["training"] = {k: v for k, v in training.items() if k != "plot"}
        write_json(out_dir / "metrics.json", metrics)
        _write_heldout_report(out_dir, held, cpm_ci, split_text, agreement, cases, training)
        return metrics


def evaluate_validation(detector: Any, cfg: LungNoduleConfig, sources: list[SourceScan], out_dir: Path,
                        progress: bool = True) -> dict[str, Any]:
    """FROC (CPM with its scan-bootstrap CI, the >= 6 mm FROC) and volume agreement on the ``val_draw`` scans of
    :func:`simulate_set` (synthetic; the training lung, LIDC val shapes, as many scans and nodules as the held-out
    draw, none of the scans that chose the kept weights): for choosing between runs or recipes without the
    held-out lung (the config guarantees at least one scan and one nodule). Writes ``metrics_val.json`` and
    ``froc_val.png`` into ``out_dir``.
    """
    from medanomaly.detect.evaluation import score_scans
    from medanomaly.evaluate.froc import cpm_interval
    from medanomaly.evaluate.lung_report import plot_froc

    sim = cfg.simulation
    n_scans = len(sources) * sim.test_scans_per_source
    scans = iter_simulated(cfg, sources, "val_draw", progress=False)  # one at a time: score_scans shows the progress
    held = score_scans(detector, scans, cfg.infer.hit_min_radius_mm, progress, total=n_scans)
    fr, large = held["froc"], held["froc_large"]
    plot_froc(fr, out_dir / "froc_val.png", "FROC on validation scans, training lung (synthetic)")
    side = _SIDE_NAMES[sim.train_side]
    shapes = "procedural nodules" if sim.shapes == "procedural" else "LIDC-IDRI val-split shapes"
    split_text = (f"validation draw (SYNTHETIC): {n_scans} simulated scans with {sim.nodules_per_test_scan} "
                  f"{shapes} each in the {side} (training) lung of {', '.join(s.name for s in sources)}, "
                  f"seed stream 2 from scan {sim.val_scans_per_source} on (after the learning curve's scans); "
                  "never the held-out lung or test shapes")  # fmt: skip
    metrics = {
        **_froc_entries("validation_synthetic", fr, large, cpm_interval(held["marks"]), split_text,
                        held["recurring_fp"], held["by_size"]),
        "agreement_synthetic": {key: held[key].to_json() for key in ("volume", "volume_large", "diameter")
                                if held[key] is not None},
        "files": ["metrics_val.json", "froc_val.png"],
    }
    write_json(out_dir / "metrics_val.json", metrics)
    return metrics


def _froc_entries(key: str, fr: Any, large: Any, cpm_ci: tuple[float, float], split_text: str,
                  recurring: Any, by_size: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    """``key`` (the FROC with its CPM's scan-bootstrap CI, its false positives that recur at one position across a
    source's scans and its sensitivity at 1 FP/scan per nodule-diameter band, SYNTHETIC) and ``key_6mm_or_more``
    (the FROC of the nodules of :data:`~medanomaly.detect.evaluation.LARGE_NODULE_MM` or more; None without such
    nodules) of a metrics file."""
    from medanomaly.detect.evaluation import LARGE_NODULE_MM

    return {key: {**fr.to_json(), "cpm_ci95_scan_bootstrap": list(cpm_ci), "recurring_false_positives":
                  recurring.to_json(), "sensitivity_by_size": by_size, "synthetic": True, "split": split_text},
            f"{key}_6mm_or_more": None if large is None else {**large.to_json(), "synthetic": True,
                                                              "min_diameter_mm": LARGE_NODULE_MM}}  # fmt: skip


def _training_record(run_dir: Path, out_dir: Path) -> dict[str, Any] | None:
    """The training run's budget, steps, wall / CPU seconds and learning curve (from
    ``train_history.json``; None for a run without one), with ``learning_curve.png`` drawn into ``out_dir``."""

    from medanomaly.evaluate.lung_report import plot_learning_curve

    path = run_dir / "train_history.json"
    if not path.is_file():
        return None
    try:
        history = read_json(path)
    except (OSError, ValueError):
        log.warning("%s: train_history.json is not readable JSON; the report leaves out the training section",
                    run_dir.name)
        return None
    if not isinstance(history, dict) or "steps_done" not in history:  # a run from before budgets and learning curves
        return None
    keys = ("steps_done", "wall_seconds", "cpu_seconds", "stop_reason", "budget_minutes", "steps_max", "best_step",
            "learning_curve", "shapes", "hard_negative_mining")
    record = {k: history.get(k) for k in keys}
    record["plot"] = None
    if record["learning_curve"]:
        shapes = "LIDC val" if record["shapes"] in ("lidc", "mixed") else str(record["shapes"])
        loss = history.get("loss")
        loss = loss if isinstance(loss, list) and all(isinstance(v, (int, float)) for v in loss) else None
        record["plot"] = plot_learning_curve(record["learning_curve"], out_dir / "learning_curve.png",
                                             record["best_step"], shapes=shapes, loss=loss).name  # fmt: skip
    return record


def _write_heldout_report(out_dir: Path, held: dict[str, Any], cpm_ci: Any, split_text: str,
                          agreement: list[dict[str, Any]], cases: list[dict[str, Any]],
                          training: dict[str, Any] | None) -> Path:  # fmt: skip
    """``out_dir/report.html`` of a held-out evaluation: FROC (all nodules and those of
    :data:`~medanomaly.detect.evaluation.LARGE_NODULE_MM` or more), agreement plots, real cases, training."""
    from medanomaly.detect.evaluation import LARGE_NODULE_MM
    from medanomaly.evaluate.lung_report import write_lung_report

    fr, large = held["froc"], held["froc_large"]
    return write_lung_report(
        out_dir / "report.html",
        {
            "title": "Lung nodule detection and measurement",
            "intro": "A 3D heatmap network trained only on simulated nodules inserted into real chest CT, "
            "tested on held-out simulated nodules (synthetic) and on the real lesions of pyradiomics "
            "lung1 and lung2, which the simulation never saw.",
            "split": split_text,
            "froc": {"cpm": fr.cpm, "cpm_ci": cpm_ci, "n_scans": fr.n_scans, "n_lesions": fr.n_lesions, "plot": "froc.png",
                     "recurring": held["recurring_fp"].to_json(), "by_size": held["by_size"],
                     "points": {_fmt_rate(k): v for k, v in fr.operating_points.items()},
                     "large": None if large is None else {
                         "cpm": large.cpm, "n_lesions": large.n_lesions, "min_mm": f"{LARGE_NODULE_MM:g}",
                         "points": {_fmt_rate(k): v for k, v in large.operating_points.items()}}},  # fmt: skip
            "agreement": agreement,
            "cases": cases,
            "training": training,
        },
    )


def _agreement_plots(held: dict[str, Any], out_dir: Path) -> list[dict[str, Any]]:
    """Bland-Altman plots of measured vs true volume and diameter on the held-out simulated nodules."""
    from medanomaly.detect.evaluation import LARGE_NODULE_MM
    from medanomaly.evaluate.lung_report import plot_bland_altman

    agreement = []
    rows = (("volume", "volume", "mL"), ("volume_large", f"volume, nodules >= {LARGE_NODULE_MM:g} mm", "mL"),
            ("volume_mask", "volume of the mask's voxels", "mL"), ("diameter", "max 3D diameter", "mm"))  # fmt: skip
    for key, what, unit in rows:
        ba = held[key]
        if ba is None:
            continue
        png = plot_bland_altman(ba, out_dir / f"bland_altman_{key}.png", what, unit)
        agreement.append({**ba.to_json(), "what": what, "unit": "%" if ba.relative else unit, "plot": png.name})
    return agreement


def _real_case(detector: Any, source: SourceScan, explain_top: int, out_dir: Path) -> dict[str, Any]:
    """Detect in one real CT, write its findings.json and overlays, explain its top findings."""
    from medanomaly.detect.evaluation import evaluate_real, write_case

    case = evaluate_real(detector, source)
    entry = write_case(case, source, out_dir)
    explain_case(detector, source.ct, case.findings[:explain_top], entry, out_dir)
    return entry


def _split_text(cfg: LungNoduleConfig, sources: list[SourceScan]) -> str:
    """How the held-out evaluation was split from training, in words (for metrics.json and the report)."""
    sim = cfg.simulation
    real = ("real LIDC-IDRI consensus outlines, training from the LIDC train split, validation from the val split, "
            "these held-out scans from the test split (split by LIDC patient, never mixed). ")
    shapes = {"lidc": "Nodule shapes: " + real, "procedural": "Nodule shapes: procedural. ",
              "mixed": "Nodule shapes: procedural in every second training scan, otherwise " + real}[sim.shapes]
    return shapes + (
        f"Training used simulated nodules in the {_SIDE_NAMES[sim.train_side]} lung of "
        f"{', '.join(s.name for s in sources)}; these held-out scans have nodules only in the "
        f"{_SIDE_NAMES[3 - sim.train_side]} lung (a separate seed stream), searched only there. The real lesions "
        f"grown by {sim.exclude_margin_mm:g} mm were excluded from simulation and training; findings "
        f"there are ignored in the FROC. Hit: centre within max(radius, {cfg.infer.hit_min_radius_mm:g} mm)."
    )


def explain_case(detector: Any, ct: Any, findings: list[Any], entry: dict[str, Any], out_dir: Path) -> None:
    """Grad-CAM overlay of each given finding into ``<out_dir>/<case>/explain/``; the report entry's
    findings get the relative path under ``"explain"`` (a finding that cannot be explained gets none)."""
    if not findings:
        return
    from medanomaly.explain.findings import explain_findings_detailed

    results = explain_findings_detailed(detector_explainable(detector), ct, findings, out_dir / entry["name"] / "explain",
                                        method="gradcam", fov_mm=80.0)  # fmt: skip
    for r in results:
        if r.png is not None:
            entry["findings"][r.index - 1]["explain"] = f"{entry['name']}/explain/{r.png.name}"


def _fmt_rate(rate: float) -> str:
    return {0.125: "1/8", 0.25: "1/4", 0.5: "1/2"}.get(rate, f"{rate:g}")


TASKS.register("lung_nodule")(LungNoduleTask())
