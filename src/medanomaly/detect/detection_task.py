"""The ``detection`` task: a 2D heatmap lesion detector plus a per-lesion classifier, from one config.

``medanomaly train configs/breast_mammo_detect.yaml`` draws (or loads) the annotated images named
by ``data.source``, trains the :class:`~medanomaly.detect.generic.HeatmapDetector` on the training
patients, the :class:`~medanomaly.detect.lesion_classifier.LesionClassifier` on their lesions (its
decision rule on the validation patients), writes the run folder (``model.json`` with task
``detection``, the classes, thresholds, the recorded preprocessing, modality MG or US,
``spatial_dims`` 2; safetensors weights), then evaluates on the test patients
(:mod:`medanomaly.detect.breast_eval`: metrics.json and report.html).

A loaded run (:class:`HeatmapDetectionModel`) answers ``predict(image)`` with findings (box, mask,
detection score, class or ``abstain``, measurements) and a per-image summary: the highest-risk
lesion's class probabilities and a BI-RADS-like category (flag ``birads_like:N``).

Example:
    >>> from medanomaly.registry import TASKS
    >>> type(TASKS.get("detection")).__name__
    'DetectionTask'
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.detect.detection_config import DetectionConfig
from medanomaly.detect.model import NO_FINDING, DetectionModel
from medanomaly.engine.contract import finite_output
from medanomaly.engine.run import MODEL_JSON, RunInfo, write_run_info
from medanomaly.errors import InputError
from medanomaly.registry import TASKS
from medanomaly.types import ABSTAIN, Finding, Prediction, Volume

__all__ = ["DetectionTask", "HeatmapDetectionModel", "birads_like", "check_phantom_memory", "load_lesion_set"]


def load_lesion_set(cfg: DetectionConfig) -> Any:
    """The annotated images of ``cfg.data`` with patient-level train / val / test splits (a phantom cohort's memory is
    checked first: :func:`check_phantom_memory`)."""
    d = cfg.data
    if d.source in ("mammo_phantom", "us_phantom"):
        check_phantom_memory(d)
    if d.source == "mammo_phantom":
        from medanomaly.synth.mammo import make_lesion_cohort

        return make_lesion_cohort(d.n_patients, d.size, cfg.seed, normal_fraction=d.normal_fraction,
                                  max_lesions=d.max_lesions, val=d.val, test=d.test)  # fmt: skip
    if d.source == "us_phantom":
        from medanomaly.synth.ultrasound import make_us_cohort

        return make_us_cohort(d.n_patients, (d.size, d.size), cfg.seed, normal_fraction=d.normal_fraction,
                              val=d.val, test=d.test)  # fmt: skip
    if d.source == "inbreast":
        from medanomaly.data.inbreast import load_inbreast_lesions

        return load_inbreast_lesions(d.root, max_side=d.max_side, val=d.val, test=d.test, seed=cfg.seed)  # type: ignore[arg-type]
    if d.source == "busi":
        from medanomaly.data.busi import load_busi_lesions

        return load_busi_lesions(d.root, val=d.val, test=d.test, seed=cfg.seed)  # type: ignore[arg-type]
    from medanomaly.data.cbis_ddsm import load_cbis_ddsm_lesions

    return load_cbis_ddsm_lesions(d.root, max_side=d.max_side, val=d.val, test=d.test, seed=cfg.seed)  # type: ignore[arg-type]


#: Images a phantom patient can have (a mammography patient's two views), and bytes per pixel of each (float32).
_PHANTOM_IMAGES_PER_PATIENT, _PHANTOM_PIXEL_BYTES = 2, 4


def check_phantom_memory(data: Any, available: int | None = None) -> int:
    """Refuse a phantom cohort whose images alone (``n_patients`` x up to two views x ``size`` squared float32 pixels)
    would take more than 45 % of the memory available, before any is drawn (the rest is left for what training builds
    from them: grid copies, patches); returns the estimate in bytes.

    Raises:
        InputError: one line with the estimate and the keys to lower.
    """
    from medanomaly.io.limits import format_bytes, memory_shortfall

    need = data.n_patients * _PHANTOM_IMAGES_PER_PATIENT * data.size**2 * _PHANTOM_PIXEL_BYTES
    available = memory_shortfall(need, 0.45, available)
    if available is not None:
        raise InputError(f"a phantom cohort of {data.n_patients} patients at {data.size} px needs about "
                         f"{format_bytes(need)} for its images, more than 45 % of the {format_bytes(available)} "
                         "available: lower data.n_patients or data.size")  # fmt: skip
    return need


def birads_like(called: str | None, abstained: bool, p_malignant: float) -> str:
    """A BI-RADS-like category of an image from its highest-risk lesion (a triage hint, not BI-RADS):
    ``0`` abstained (needs further evaluation), ``1`` nothing found, ``2`` benign, ``3`` uncertain
    (probably benign), ``4`` malignant with P(malignant) < 0.9, ``5`` malignant with P >= 0.9."""
    if called is None:
        return "1"
    if abstained:
        return "0"
    if called == "malignant":
        return "5" if p_malignant >= 0.9 else "4"
    return {"benign": "2", "uncertain": "3"}.get(called, "0")


class HeatmapDetectionModel(DetectionModel):
    """A trained ``detection`` run: heatmap detector + lesion classifier behind the engine contract."""

    #: Bytes per input voxel, a floor: measured 28-38 (2D, 4 and 16 megapixels) by bench/bench_predict_memory.py.
    PREDICT_BYTES_PER_VOXEL = 22.0

    def __init__(self, info: RunInfo, run_dir: Path, detector: Any, classifier: Any) -> None:
        super().__init__(info, run_dir, detector)
        self.classifier = classifier

    def classify(self, image: Volume, findings: Sequence[Finding]) -> tuple[list[Finding], np.ndarray, np.ndarray]:
        """Findings relabelled with their class (or ``abstain``), their probabilities (N, K), abstained (N,)."""
        from dataclasses import replace

        k = len(self.class_names)
        if self.classifier is None or not findings:
            return list(findings), np.full((len(findings), k), np.nan), np.zeros(len(findings), bool)
        probs, called, abstained = self.classifier.classify(self.classifier.crops_for(image, findings))
        finite_output(probs, "the lesion classifier's probabilities")  # NaN read as "no classifier": 3 equal scores
        out = [replace(f, label=ABSTAIN if a else self.class_names[int(c)])
               for f, c, a in zip(findings, called, abstained, strict=True)]  # fmt: skip
        return out, probs, abstained

    def _predict(self, volume: Volume) -> Prediction:
        """Findings (best detection score first) and the image summary (highest-risk lesion). A colour image (an
        ultrasound's RGB, palette or YBR frames) is run as its luma, flagged ``colour_to_grey`` when its channels
        differ (:func:`~medanomaly.preprocess.colour.grey_volume`: the detector and its classifier take grey images;
        it was an ITK resampling error)."""
        from medanomaly.preprocess.colour import grey_volume

        volume, coloured = grey_volume(volume)
        found = self.detector.detect(volume)
        findings, probs, abstained = self.classify(volume, found)
        threshold = float(self.info.thresholds.get("finding") or 0.5)
        kept = [i for i, f in enumerate(findings) if f.score >= threshold]
        flags = [*self.flags(), *(("colour_to_grey",) if coloured else ())]
        if not kept:
            flags.append("birads_like:1")
            return Prediction(scores=(0.0,) * len(self.class_names), class_names=self.class_names, label=NO_FINDING,
                              findings=tuple(findings), flags=tuple(flags))  # fmt: skip
        risk = probs[:, -1] if np.isfinite(probs).all() else np.array([f.score for f in findings])
        top = max(kept, key=lambda i: float(risk[i]))
        label = findings[top].label if findings[top].label != ABSTAIN else self.class_names[int(np.nanargmax(probs[top]))]
        flags.append("birads_like:" + birads_like(label, bool(abstained[top]), float(probs[top, -1])))
        scores = tuple(float(p) for p in probs[top]) if np.isfinite(probs[top]).all() else (float(findings[top].score),) * 3
        return Prediction(scores=scores, class_names=self.class_names, label=label, abstained=bool(abstained[top]),
                          findings=tuple(findings), flags=tuple(flags))  # fmt: skip

    def network(self) -> Any:
        """The heatmap network (one-slice input for 2D: (B, 1, 1, y, x) -> logit map)."""
        return self.detector.model_.eval()

    def explainable(self) -> Any:
        """The whole-image explanation of the heatmap's maximum (Grad-CAM / occlusion on the grid)."""
        from medanomaly.explain.adapters import Explainable

        from medanomaly.detect.infer import padded_to_divisor
        from medanomaly.preprocess.colour import grey_volume

        def peak(output: Any) -> Any:
            return output.flatten(1).max(dim=1).values

        def prepare(image: Volume) -> Volume:  # the U-Net needs sizes its poolings divide, as in run_network
            return padded_to_divisor(self.detector.prepare(image), self.detector.divisor)

        return Explainable(model=self.detector.model_.eval(), preprocess=prepare, patch_size=None,
                           output_fn=peak, class_names=("lesion",), target=0, kind="detection",
                           synthetic=self.synthetic, runner=self.detector, model_image=grey_volume)  # fmt: skip


def _run_info(cfg: DetectionConfig, detector: Any, classifier: Any, synthetic: bool) -> RunInfo:
    from medanomaly.data.lesions2d import CLASSES
    from medanomaly.detect.generic import DETECTOR_WEIGHTS
    from medanomaly.detect.lesion_classifier import CLASSIFIER_WEIGHTS

    thresholds: dict[str, float | None] = {"candidate": detector.candidate_threshold, "mask": detector.mask_threshold,
                                           "finding": cfg.infer.finding_threshold}  # fmt: skip
    if classifier is not None:
        thresholds.update(abstain=classifier.rule_.abstain_below, temperature=classifier.rule_.temperature)
    return RunInfo(task="detection", class_names=CLASSES, thresholds=thresholds,
                   preprocessing=detector.preprocessing_steps(),
                   weights=(DETECTOR_WEIGHTS,) + ((CLASSIFIER_WEIGHTS,) if classifier is not None else ()),
                   input={"spatial_dims": cfg.spatial_dims, "channels": 1, "modality": cfg.input_modality,
                          "roi": cfg.region.name},
                   synthetic=synthetic, extra={"data_source": cfg.data.source})  # fmt: skip


class DetectionTask:
    """Registered as ``detection`` in :data:`medanomaly.registry.TASKS`."""

    config_class = DetectionConfig

    def __init__(self, progress: bool = True) -> None:
        self.progress = progress

    def train(self, config: DetectionConfig, run_dir: Path, lesions: Any = None) -> Path:
        """Train detector and classifier on the training patients, write the run, then evaluate."""
        from medanomaly.data.lesions2d import CLASSES
        from medanomaly.detect.generic import HeatmapDetector, check_network
        from medanomaly.detect.lesion_classifier import LesionClassifier
        from medanomaly.jsonio import write_json
        from medanomaly.train.distributed import resolve_device

        resolve_device(config.train.device)  # "cuda" without a GPU: one line, before the data work
        check_network(config.model.name, dict(config.model.params), config.spatial_dims,  # and the networks too
                      windows={"train.patch_size": config.train.patch_size, "infer.roi_size": config.infer.roi_size})
        c = config.classifier
        if c.enabled:
            LesionClassifier(CLASSES, c.model.name, dict(c.model.params),
                             c.crop_size).check_network()  # fmt: skip
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        lesions = lesions if lesions is not None else load_lesion_set(config)
        train, val = lesions.split("train"), lesions.split("val")
        if not any(it.lesions for it in train):
            raise InputError(f"the training split of {lesions.source} holds no lesion")
        detector = HeatmapDetector.from_config(config)
        scans = [detector.grid_scan(it.image, it.instance_map()[None] > 0, it.key) for it in train]
        detector.fit(scans, progress=self.progress)
        detector.save(run_dir)
        classifier = None
        if c.enabled:
            classifier = LesionClassifier(lesions.class_names, c.model.name, dict(c.model.params), c.crop_size,
                                          c.epochs, c.batch_size, c.lr, config.seed, c.abstain_coverage)  # fmt: skip
            classifier.fit(train, val, progress=self.progress)
            classifier.save(run_dir)
        write_run_info(run_dir, _run_info(config, detector, classifier, lesions.synthetic))
        write_json(run_dir / "train_history.json", {"detector_loss": detector.history_, "n_train_images": len(train),
                                                    "hard_negative_mining": detector.mining_,
                                                    "data": lesions.summary(), "synthetic": lesions.synthetic})  # fmt: skip
        self.evaluate(run_dir, "test", lesions=lesions, config=config)
        return run_dir

    def load(self, run_dir: Path, info: RunInfo) -> HeatmapDetectionModel:
        """The trained detector and classifier of a checked run folder."""
        from medanomaly.detect.generic import HeatmapDetector
        from medanomaly.detect.lesion_classifier import CLASSIFIER_WEIGHTS, LesionClassifier

        classifier = LesionClassifier.load(run_dir) if CLASSIFIER_WEIGHTS in info.weights else None
        if classifier is not None and tuple(info.class_names) != classifier.class_names:
            raise InputError(f"class names {list(info.class_names)} are not the lesion classifier's "
                             f"{list(classifier.class_names)}", Path(run_dir) / MODEL_JSON)  # fmt: skip
        return HeatmapDetectionModel(info, Path(run_dir), HeatmapDetector.load(run_dir), classifier)

    def evaluate(self, run_dir: Path, split: str = "test", lesions: Any = None,
                 config: DetectionConfig | None = None) -> dict[str, Any]:  # fmt: skip
        """FROC per image and per-lesion 3-class metrics on ``split``; writes metrics.json and report.html."""
        from medanomaly.config import load_config
        from medanomaly.detect.breast_eval import evaluate_detection
        from medanomaly.engine.run import read_run_info

        run_dir = Path(run_dir)
        cfg = config if config is not None else load_config(run_dir / "config.yaml")
        if not isinstance(cfg, DetectionConfig):
            raise InputError("config.yaml is not a detection config", run_dir)
        if split not in ("val", "test"):
            raise InputError(f"detection evaluates the 'val' or 'test' split, got {split!r}")
        lesions = lesions if lesions is not None else load_lesion_set(cfg)
        model = self.load(run_dir, read_run_info(run_dir))
        return evaluate_detection(model, lesions, split, cfg, run_dir, progress=self.progress)


TASKS.register("detection")(DetectionTask())
