"""A trained detection run behind the engine contract (:class:`medanomaly.engine.TaskModel`).

``predict(ct)`` runs the whole-volume detector (lung-restricted search for the lung recipe) and
returns a :class:`~medanomaly.types.Prediction` whose ``findings`` are best first, each with centre,
box, score, mask on the input grid and measurements (mL, mm, HU). Its image-level score is the best
finding's score; ``label`` is the lesion class when a finding reaches the run's ``finding``
threshold, else ``"none"``.

Example:
    >>> from medanomaly.engine import load_model                  # doctest: +SKIP
    >>> [f.score for f in load_model("runs/lung").predict(ct).findings][:1]   # doctest: +SKIP
    [0.97]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medanomaly.engine.contract import ModelBase
from medanomaly.engine.run import RunInfo
from medanomaly.types import Prediction, Volume

__all__ = ["DetectionModel", "run_info", "detector_explainable", "NO_FINDING"]

#: ``Prediction.label`` of a detector that finds nothing above its threshold.
NO_FINDING = "none"


def run_info(detector: Any, weights: str, finding_threshold: float = 0.5) -> RunInfo:
    """``model.json`` of a fitted :class:`~medanomaly.detect.detector.NoduleDetector`."""
    from medanomaly.preprocess.recipes import detection_steps

    return RunInfo(
        task="lung_nodule",
        class_names=("nodule",),
        thresholds={"candidate": float(detector.candidate_threshold), "mask": float(detector.mask_threshold),
                    "finding": float(finding_threshold)},  # fmt: skip
        preprocessing=detection_steps(detector.spacing_mm, detector.hu_window),
        weights=(weights,),
        input={"spatial_dims": 3, "channels": 1, "modality": "CT", "roi": "lung"},
        synthetic=True,
        extra={"detector": detector.get_params()},
    )


def detector_explainable(detector: Any, patch_size: tuple[int, int, int] = (16, 96, 96)) -> Any:
    """What explain needs from a fitted detector: its network, its input (the recorded grid and
    window), the patch around a finding and the explained score (the map's maximum near the centre).

    The default patch (16 x 96 x 96 at 5 x 1.25 x 1.25 mm = 80 x 120 x 120 mm) holds a 3 cm mass
    with context, and is divisible by the U-Net's (2, 4, 4).
    """
    from medanomaly.errors import InputError
    from medanomaly.explain.adapters import Explainable, centre_max
    from medanomaly.preprocess.pipeline import Pipeline
    from medanomaly.preprocess.recipes import detection_steps

    if not hasattr(detector, "model_"):
        raise InputError("the nodule detector is not trained (no weights loaded)")
    pipeline = Pipeline.from_config(detection_steps(detector.spacing_mm, detector.hu_window))

    def preprocess(ct: Volume) -> Volume:
        return pipeline(ct).volume

    return Explainable(
        model=cpu_network(detector.model_).eval(), preprocess=preprocess, patch_size=patch_size, output_fn=centre_max(0.5),
        class_names=("nodule",), target=0, kind="lung_nodule", synthetic=True, runner=detector,
    )  # fmt: skip


def cpu_network(network: Any) -> Any:
    """``network`` itself on the CPU, else a CPU copy of it (explanation feeds CPU tensors; a detector evaluated on a
    GPU keeps its own network there)."""
    import copy

    from medanomaly.train.distributed import module_device

    return network if module_device(network).type == "cpu" else copy.deepcopy(network).cpu()


class DetectionModel(ModelBase):
    """Whole-volume lesion detector loaded from a run (the lung-nodule recipe today)."""

    #: Bytes per input voxel, a floor: measured 27-65 (CTs of 16-64 million voxels) by bench/bench_predict_memory.py.
    PREDICT_BYTES_PER_VOXEL = 20.0

    def __init__(self, info: RunInfo, run_dir: Path, detector: Any) -> None:
        super().__init__(info, run_dir)
        self.detector = detector

    def _predict(self, volume: Volume) -> Prediction:
        from medanomaly.detect.grid import lung_region, require_chest_ct

        ct = require_chest_ct(volume)
        findings = tuple(self.detector.detect(ct, lung_region(ct)))
        best = max((float(f.score) for f in findings), default=0.0)
        called = best >= float(self.info.thresholds.get("finding") or 0.5)
        return Prediction(scores=(best,), class_names=self.class_names,
                          label=self.class_names[0] if called else NO_FINDING, findings=findings,
                          flags=self.flags())  # fmt: skip

    def network(self) -> Any:
        """The fully convolutional 3D network (patch in, nodule logit map out)."""
        return self.detector.model_.eval()

    def explainable(self) -> Any:
        return detector_explainable(self.detector)
