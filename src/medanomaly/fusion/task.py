"""The ``fusion`` task: ``medanomaly train CONFIG`` / ``evaluate RUN`` for multimodal fusion.

Config (``task: fusion``)::

    data:      source (simulated | manifest), modalities, size, sizes of the simulated splits or
               the manifest and its patient-level split fractions, HU windows
    model:     {name: fusion_feature, params: {mode: attention, widths: [8, 16, 32]}}
    train:     epochs, batch_size, lr, modality_dropout, branch_weight, ...
    benchmark: the variants ``medanomaly fusion-benchmark`` compares, bootstrap resamples

A run directory holds ``config.yaml``, ``weights.safetensors``, ``train.json`` and, after
``evaluate``, ``metrics.json`` (AUC with a 95 % bootstrap CI, plus AUC with each modality
removed). Results on simulated data are marked ``synthetic``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import ConfigDict, Field, field_validator, model_validator

from medanomaly.config import ComponentConfig, RunConfig, Section, distinct_names, ordered_pair
from medanomaly.engine.run import MODEL_JSON, RunInfo, write_run_info
from medanomaly.errors import InputError, about_file
from medanomaly.fusion.training import FusionTrainSection
from medanomaly.fusion.model import run_info
from medanomaly.jsonio import write_json
from medanomaly.models.fusion_common import ENCODER_WIDTHS
from medanomaly.registry import TASKS

#: The weights file of a fusion run.
WEIGHTS = "weights.safetensors"


_Contrast = Annotated[float, Field(ge=-1.0, le=10.0)]


class SimulationConfig(Section):
    """Lesion simulation in the two real MRI contrasts (see :mod:`medanomaly.fusion.simulate`)."""

    model_config = ConfigDict(allow_inf_nan=False)

    #: Range of the relative change in the contrast that shows a lesion (-1: black, 10: eleven times as bright).
    strong_contrast: tuple[_Contrast, _Contrast] = (0.6, 1.0)
    weak_contrast: float = Field(0.05, ge=0.0, le=1.0)
    p_both: float = Field(0.2, ge=0.0, le=1.0)
    noise: float = Field(0.04, ge=0.0, le=1.0)
    #: Probability that a sample has a lesion; strictly between 0 and 1, as both classes are needed.
    lesion_fraction: float = Field(0.5, gt=0.0, lt=1.0)

    @field_validator("strong_contrast")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        return ordered_pair("strong_contrast", v)


class FusionDataConfig(Section):
    """Where the paired images come from.

    ``source: simulated`` draws ``n_train``/``n_val``/``n_test`` T1/PD crops (synthetic);
    ``source: manifest`` reads ``manifest`` (``patient_id,<mod>_path...,label``) and splits
    patients ``val``/``test`` fractions (stratified, seeded). ``volumes``: the volume of a 4D file each modality
    is (the Medical Segmentation Decathlon's BrainTumour holds FLAIR, T1w, T1gd and T2w as volumes 0-3 of one file,
    so two modality columns may name the same file); recorded in the run, so ``predict MOD=FILE`` takes the same.
    ``alignment``: how each case's other modalities are brought onto the first's grid as they load (``none``: they
    must share it; ``resample``: by patient coordinates, one DICOM frame of reference; ``register``: rigid
    registration, a CT and an MR of two visits: :mod:`medanomaly.engine.alignment`); recorded in the run, so predict,
    explain, an archive, the PACS bridge, the node and the service align its inputs the same way unless told another.
    """

    model_config = ConfigDict(allow_inf_nan=False)

    source: Literal["simulated", "manifest"] = "simulated"
    manifest: str | None = None
    modalities: tuple[str, ...] = ("T1", "PD")
    size: tuple[Annotated[int, Field(ge=8, le=2048)], ...] = (64, 64)
    n_train: int = Field(300, ge=4, le=100_000)
    n_val: int = Field(100, ge=4, le=100_000)
    n_test: int = Field(200, ge=4, le=100_000)
    val: float = Field(0.15, ge=0.0, lt=1.0)
    test: float = Field(0.2, ge=0.0, lt=1.0)
    windows: dict[str, tuple[float, float]] = {}
    volumes: dict[str, Annotated[int, Field(ge=0, le=100_000)]] = Field({}, max_length=64)
    alignment: Literal["none", "resample", "register"] = "none"
    simulation: SimulationConfig = SimulationConfig()

    @model_validator(mode="after")
    def _volumes_of_modalities(self) -> "FusionDataConfig":
        unknown = sorted(set(self.volumes) - set(self.modalities))
        if unknown:
            raise ValueError(f"data.volumes names {unknown}, not among data.modalities {list(self.modalities)}")
        if self.alignment != "none" and self.source != "manifest":  # it would be recorded without having been used
            raise ValueError("data.alignment aligns a manifest's images; the simulated pairs share one grid")
        return self


class FusionTrainConfig(FusionTrainSection):
    """The ``train:`` section: :class:`medanomaly.fusion.training.FusionTrainSection` (its
    defaults and limits are the only ones)."""


class VariantConfig(Section):
    """One row of the benchmark: a label, a fusion network, the modalities it sees (default: all)."""

    label: str
    model: ComponentConfig
    modalities: tuple[str, ...] | None = None


#: Most variants one benchmark trains (each is a full training; the YAML node limit alone allowed 100,000).
MAX_VARIANTS = 32


class BenchmarkConfig(Section):
    """The benchmark's rows (default: :func:`medanomaly.fusion.benchmark.default_variants`), each labelled once."""

    variants: tuple[VariantConfig, ...] = Field((), max_length=MAX_VARIANTS)
    n_bootstrap: int = Field(1000, ge=0, le=1_000_000)

    @field_validator("variants")
    @classmethod
    def _labelled_once(cls, variants: tuple[VariantConfig, ...]) -> tuple[VariantConfig, ...]:
        labels = [v.label for v in variants]
        if not distinct_names(labels):
            raise ValueError(f"benchmark variant labels must be non-empty and distinct (rows of one table), got {labels}")
        return variants


class FusionConfig(RunConfig):
    """A fusion run: data, one model (for train/evaluate), training, and the benchmark variants."""

    task: Literal["fusion"] = "fusion"
    data: FusionDataConfig = FusionDataConfig()
    model: ComponentConfig = ComponentConfig(name="fusion_feature")
    train: FusionTrainConfig = FusionTrainConfig()
    benchmark: BenchmarkConfig = BenchmarkConfig()

    @model_validator(mode="after")
    def _encoders_fit_the_crops(self) -> FusionConfig:
        """Each width level of a fusion encoder halves the crop (max pooling, :func:`conv_encoder`): more levels
        than the smallest crop side allows (6 on 32 x 32) was a PyTorch traceback at the first batch."""
        smallest = min(self.data.size)
        models = [("model", self.model)] + [(f"benchmark.variants.{i}.model", v.model)
                                            for i, v in enumerate(self.benchmark.variants)]  # fmt: skip
        for where, model in models:
            widths = model.params.get("widths", ENCODER_WIDTHS)
            if isinstance(widths, (list, tuple)) and 2 ** len(widths) > smallest:
                raise ValueError(f"{where}: {len(widths)} width levels halve a {smallest}-pixel crop side "
                                 f"{len(widths)} times, to nothing; use at most {smallest.bit_length() - 1} levels "
                                 "or larger crops (data.size)")  # fmt: skip
        return self


@dataclass(frozen=True, eq=False)
class FusionSplits:
    """Arrays for the three splits: images (N, M, *size), labels (N,), presence (N, M).

    ``visible_in`` (simulated data only) says where each test lesion shows; ``problems`` lists
    manifest rows that were skipped.
    """

    modalities: tuple[str, ...]
    arrays: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    synthetic: bool
    visible_in: dict[str, np.ndarray]
    problems: tuple[tuple[str, str], ...] = ()


def build_splits(config: FusionConfig) -> FusionSplits:
    """Deterministically build train/val/test arrays from a config (same config -> same data)."""
    data = config.data
    if data.source == "simulated":
        from medanomaly.fusion.simulate import MODALITIES, simulate_pairs

        if set(data.modalities) - set(MODALITIES):
            raise InputError(f"simulated data has modalities {MODALITIES}, config asks {list(data.modalities)}")
        if len(data.size) != 2 or data.size[0] != data.size[1]:
            raise InputError(f"simulated data is 2D and square: size must be [S, S], got {list(data.size)}")
        idx = [MODALITIES.index(m) for m in data.modalities]
        sim = data.simulation.model_dump()
        arrays, visible = {}, {}
        for offset, (split, n) in enumerate((("train", data.n_train), ("val", data.n_val), ("test", data.n_test))):
            s = simulate_pairs(n, split=split, seed=config.seed * 10 + offset, size=data.size[0], **sim)
            arrays[split] = (s.images[:, idx], s.labels, np.ones((n, len(idx)), bool))
            visible[split] = s.visible_in
        _check_both_labels(arrays, "the simulated data (raise lesion_fraction's distance from 0 and 1, or n_*)")
        return FusionSplits(tuple(data.modalities), arrays, True, visible)

    from medanomaly.data.arrays import check_array_memory
    from medanomaly.data.splits import patient_split
    from medanomaly.fusion.data import load_paired_dataset, read_manifest, sample_to_array

    if not data.manifest:
        raise InputError("data.source is 'manifest' but data.manifest is not set")
    manifest = read_manifest(data.manifest)
    missing = set(data.modalities) - set(manifest.modalities)
    if missing:
        raise InputError(f"manifest has no column for {sorted(missing)}", data.manifest)
    check_array_memory(len(manifest.cases), (len(data.modalities), *data.size), data.manifest,
                       "use fewer patients or a smaller data.size")  # fmt: skip

    def as_input(s: Any) -> tuple[str, int, np.ndarray, np.ndarray]:  # each case converted as it loads
        return (s.patient_id, s.label, *sample_to_array(s, data.modalities, data.size, data.windows))

    samples, problems = load_paired_dataset(manifest, convert=as_input, volumes=data.volumes, alignment=data.alignment)
    if len(samples) < 6:  # say why the others were left out (the first reason; no patient id)
        why = f" ({len(problems)} left out, the first because: {problems[0][1]})" if problems else ""
        raise InputError(f"only {len(samples)} usable patients in the manifest; need at least 6{why}", data.manifest)
    x = np.stack([s[2] for s in samples])
    present = np.stack([s[3] for s in samples])
    y = np.asarray([s[1] for s in samples], np.int64)
    names = patient_split(np.asarray([s[0] for s in samples]), y, data.val, data.test, config.seed)
    arrays = {s: (x[names == s], y[names == s], present[names == s]) for s in ("train", "val", "test")}
    with about_file(data.manifest):
        _check_both_labels(arrays, "the manifest's patients")
    return FusionSplits(tuple(data.modalities), arrays, False, {}, tuple(problems))


def _check_both_labels(arrays: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], source: str) -> None:
    """Refuse a split holding one label only (the training split always, validation and test when not empty):
    a network cannot learn from it, and its AUC is undefined (it printed ``val_auc nan`` before)."""
    for split, (_, labels, _) in arrays.items():
        found = np.unique(labels)
        if len(found) == 1 or (split == "train" and len(found) < 2):
            held = f"only label {int(found[0])}" if len(found) else "no sample"
            raise InputError(f"the {split} split of {source} holds {held} ({len(labels)} samples): "
                             "both normal (0) and abnormal (1) are needed")  # fmt: skip


def settings_from(config: FusionConfig):
    from medanomaly.fusion.training import FusionTrainSettings

    return FusionTrainSettings(**config.train.model_dump(), seed=config.seed)


def build_model(component: ComponentConfig, modalities: tuple[str, ...], spatial_dims: int):
    """Create a registered fusion network for the given modalities."""
    from medanomaly.registry import MODELS

    factory = MODELS.get(component.name)
    if getattr(factory, "task", None) != "fusion":
        raise InputError(f"model {component.name!r} is not a fusion network (fusion_early, fusion_feature, ...)")
    params = {"modalities": modalities, "spatial_dims": spatial_dims, **component.params}
    return MODELS.build(component.name, factory, params)


def auc_with_ci(
    labels: np.ndarray, p_abnormal: np.ndarray, n_bootstrap: int, seed: int, synthetic: bool
) -> dict[str, Any]:
    """ROC AUC of P(abnormal) with a stratified bootstrap 95% CI (medanomaly.evaluate.metrics)."""
    from medanomaly.evaluate.metrics import classification_metrics

    result = classification_metrics(
        labels, p_abnormal, ("normal", "abnormal"), n_bootstrap=n_bootstrap, seed=seed, synthetic=synthetic
    )
    return result.per_class["abnormal"]["roc_auc"].to_json()


def evaluate_model(model, splits: FusionSplits, split: str, n_bootstrap: int, seed: int) -> dict[str, Any]:
    """AUC (95% CI) on ``split`` with all modalities, and with each modality removed."""
    from medanomaly.fusion.training import predict_proba

    x, y, present = splits.arrays[split]
    out: dict[str, Any] = {"synthetic": splits.synthetic, "split": split, "n": int(len(y))}
    p = predict_proba(model, x, present)[:, 1]
    out["auc"] = auc_with_ci(y, p, n_bootstrap, seed, splits.synthetic)
    if len(model.modalities) > 1:
        for j, name in enumerate(model.modalities):
            removed = present.copy()
            removed[:, j] = False
            keep = removed.any(axis=1)
            pr = predict_proba(model, x[keep], removed[keep])[:, 1]
            out[f"auc_without_{name}"] = auc_with_ci(y[keep], pr, n_bootstrap, seed, splits.synthetic)
    visible = splits.visible_in.get(split)
    if visible is not None:
        for kind in ("T1", "PD"):
            sel = (visible == "none") | (visible == kind)
            if (y[sel] == 1).any():
                out[f"auc_{kind}_visible_lesions"] = auc_with_ci(y[sel], p[sel], n_bootstrap, seed, splits.synthetic)
    return out


class FusionTask:
    """``train`` and ``evaluate`` for ``task: fusion`` (registered in TASKS)."""

    config_class = FusionConfig

    def train(self, config: FusionConfig, run_dir: Path) -> Path:
        from medanomaly.config import save_config
        from medanomaly.fusion.training import fit_fusion
        from medanomaly.train.checkpoint import save_weights
        from medanomaly.train.loop import seed_everything

        run_dir = Path(run_dir)
        splits = build_splits(config)
        seed_everything(config.seed)
        model = build_model(config.model, splits.modalities, len(config.data.size))
        result = fit_fusion(model, splits.arrays["train"], splits.arrays["val"], settings_from(config))
        save_config(config, run_dir)
        save_weights(model, run_dir / WEIGHTS, metadata={"model": config.model.name})
        info = {"synthetic": splits.synthetic, "fit": result.to_json(), "skipped": [list(p) for p in splits.problems]}
        write_json(run_dir / "train.json", info)
        write_run_info(run_dir, run_info(config, splits.modalities, splits.synthetic, WEIGHTS))
        return run_dir

    def load(self, run_dir: Path, info: RunInfo) -> Any:
        """The trained fusion network of a checked run folder, behind the engine contract."""
        from medanomaly.config import load_config
        from medanomaly.fusion.model import FusionModel, check_classes, check_recorded
        from medanomaly.train.checkpoint import load_weights

        check_recorded(info, Path(run_dir) / MODEL_JSON)
        config = load_config(run_dir / "config.yaml")
        network = build_model(config.model, tuple(info.input["modalities"]), int(info.input["spatial_dims"]))
        check_classes(info, network, Path(run_dir) / MODEL_JSON)
        return FusionModel(info, run_dir, load_weights(network, run_dir / WEIGHTS))

    def evaluate(self, run_dir: Path, split: str = "test") -> dict[str, Any]:
        from medanomaly.config import load_config
        from medanomaly.train.checkpoint import load_weights

        run_dir = Path(run_dir)
        if split not in ("train", "val", "test"):
            raise InputError(f"split must be train, val or test, got {split!r}")
        config = load_config(run_dir / "config.yaml")
        splits = build_splits(config)
        model = build_model(config.model, splits.modalities, len(config.data.size))
        load_weights(model, run_dir / WEIGHTS)
        metrics = evaluate_model(model, splits, split, config.benchmark.n_bootstrap, config.seed)
        metrics["model"] = config.model.name
        write_report(run_dir, model, splits, split, config, metrics)  # metrics.json: one schema + "fusion"
        return metrics


def write_report(run_dir: Path, model: Any, splits: FusionSplits, split: str, config: FusionConfig,
                 metrics: dict[str, Any]) -> Path:
    """``report.html`` of a fusion run: the one classification evaluation of the all-modality
    prediction (ROC, confusion matrix, calibration with CIs); the title gives the AUC without each
    modality. ``metrics.json`` keeps the fusion keys (AUC without each modality) beside it."""
    from medanomaly.evaluate.report import evaluate_classification
    from medanomaly.fusion.infer import CLASS_NAMES
    from medanomaly.fusion.training import predict_proba

    x, y, present = splits.arrays[split]
    without = ", ".join(f"AUC without {k[len('auc_without_'):]} {v['value']:.3f}"
                        for k, v in metrics.items() if k.startswith("auc_without_") and v.get("value") is not None)  # fmt: skip
    tag = " (SYNTHETIC data)" if splits.synthetic else ""
    title = f"Fusion ({config.model.name}, {' + '.join(splits.modalities)}): {split} split{tag}"
    evaluate_classification(run_dir, y, predict_proba(model, x, present), CLASS_NAMES,
                            n_bootstrap=config.benchmark.n_bootstrap, seed=config.seed, synthetic=splits.synthetic,
                            split=split, title=title + (f"; {without}" if without else ""),
                            extra={"fusion": metrics})  # fmt: skip
    return run_dir / "report.html"


TASKS.register("fusion")(FusionTask())
