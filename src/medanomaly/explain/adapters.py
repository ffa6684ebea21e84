"""What the explainers need from a trained model, whatever task produced it.

An :class:`Explainable` bundles the network with the preprocessing it was trained with (a
``Volume -> Volume`` that keeps geometry, so maps land back in patient space), the patch it looks
at (detectors) or ``None`` (whole-image classifiers), and the score being explained.

:func:`as_explainable` accepts a run directory (lung-nodule runs: ``detector.json`` +
``model.safetensors``; classification runs: ``classifier.json`` + ``members/<i>/model.safetensors``),
a loaded :class:`~medanomaly.detect.detector.NoduleDetector` or
:class:`~medanomaly.classify.engine.Classifier`, an ``Explainable``, or a plain ``torch`` module.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten())
    >>> as_explainable(net).patch_size is None
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.errors import InputError
from medanomaly.types import Volume


@dataclass(frozen=True, eq=False)
class Explainable:
    """A model ready to be explained.

    Attributes:
        model: torch module (or callable, for occlusion only) returning class scores or a map.
        preprocess: whole image (HU for CT) -> model grid and intensities, geometry kept; None = as is.
        patch_size: (z, y, x) model-grid patch explained around a finding; None = the whole image.
        output_fn: picks the explained score from the model output (None: class logits, or a
            map's maximum).
        class_names: names of the outputs, when known.
        target: class index explained by default (None: the predicted class).
        kind: "lung_nodule", "classification" or "model".
        synthetic: the model was trained on simulated data (labelled in outputs).
        runner: the loaded task object (NoduleDetector / Classifier), for predictions.
    """

    model: Any
    preprocess: Callable[[Volume], Volume] | None = None
    patch_size: tuple[int, int, int] | None = None
    output_fn: Callable[[Any], Any] | None = None
    class_names: tuple[str, ...] | None = None
    target: int | None = None
    kind: str = "model"
    synthetic: bool = False
    runner: Any = None


def centre_max(fraction: float = 0.5) -> Callable[[Any], Any]:
    """Output function: maximum of a map over the central ``fraction`` of the patch.

    A patch cut around a finding may also hold a vessel or a second nodule at its edge; the
    explained score is the detector's response at the finding, not anywhere in the patch.
    """

    def fn(out: Any) -> Any:
        if out.ndim <= 2:
            return out
        sl = [slice(None), slice(None)]
        for n in out.shape[2:]:
            k = max(1, int(round(n * fraction)))
            start = (n - k) // 2
            sl.append(slice(start, start + k))
        return out[tuple(sl)].flatten(2).amax(dim=2)

    return fn


# --------------------------------------------------------------------------------------- lung nodule
def lung_preprocess(spacing_mm: Sequence[float], hu_window: Sequence[float]) -> Callable[[Volume], Volume]:
    """The detector's input: CT resampled to its grid (``detect.grid.to_grid``) and HU-windowed to 0..1."""

    def preprocess(ct: Volume) -> Volume:
        from medanomaly.detect.grid import to_grid, window

        grid = to_grid(ct, tuple(float(s) for s in spacing_mm))  # type: ignore[arg-type]
        return grid.with_array(window(grid.array, float(hu_window[0]), float(hu_window[1])))

    return preprocess


def from_detector(detector: Any, patch_size: tuple[int, int, int] = (16, 96, 96)) -> Explainable:
    """Explainable of a fitted :class:`~medanomaly.detect.detector.NoduleDetector`.

    The default patch (16 x 96 x 96 at 5 x 1.25 x 1.25 mm = 80 x 120 x 120 mm) holds a 3 cm mass
    with context, and is divisible by the U-Net's (2, 4, 4).
    """
    if not hasattr(detector, "model_"):
        raise InputError("the nodule detector is not trained (no weights loaded)")
    model = detector.model_.eval()
    return Explainable(
        model=model, preprocess=lung_preprocess(detector.spacing_mm, detector.hu_window),
        patch_size=patch_size, output_fn=centre_max(0.5), class_names=("nodule",), target=0,
        kind="lung_nodule", synthetic=True, runner=detector,
    )  # fmt: skip


# --------------------------------------------------------------------------------------- classification
def classification_preprocess(image_size: Sequence[int], channels: int,
                              intensity: str = "percentile") -> Callable[[Volume], Volume]:  # fmt: skip
    """The classifier's input (``data.arrays.to_model_array``: the run's intensity mapping, resize),
    returned as a Volume whose geometry covers the same physical extent (align_corners=False)."""

    def preprocess(volume: Volume) -> Volume:
        from medanomaly.data.arrays import to_model_array

        size = tuple(int(s) for s in image_size)
        arr = to_model_array(volume.array, size, channels, intensity)  # (C, *size)
        zyx = (1, *size) if len(size) == 2 else size
        ratio = np.asarray(volume.shape[::-1], float) / np.asarray(zyx[::-1], float)  # x, y, z
        spacing = tuple(float(s) for s in np.asarray(volume.spacing) * ratio)
        origin = tuple(float(o) for o in volume.index_to_physical(0.5 * ratio - 0.5))
        data = arr.reshape((arr.shape[0], *zyx))
        data = data[0] if channels == 1 else np.moveaxis(data, 0, -1)
        meta = {k: v for k, v in volume.meta.items() if k in ("modality", "synthetic")}
        return Volume(data, spacing=spacing, origin=origin, direction=volume.direction, meta=meta)

    return preprocess


def _ensemble_module(models: Sequence[Any], weights: Sequence[float] | None, temperature: float) -> Any:
    import torch
    from torch import nn

    from medanomaly.explain.methods import default_layer

    class Ensemble(nn.Module):
        """Members' softmax averaged (weighted), temperature applied; returns calibrated log-probs."""

        def __init__(self) -> None:
            super().__init__()
            self.members = nn.ModuleList(models)
            w = np.ones(len(models)) if weights is None else np.asarray(weights, float)
            self.register_buffer("w", torch.as_tensor(w / w.sum(), dtype=torch.float32))
            self.temperature = float(temperature)
            self.spatial_dims = getattr(models[0], "spatial_dims", None)
            self.explain_layer = f"members.0.{default_layer(models[0])}"

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            probs = sum(w * m(x).softmax(1) for w, m in zip(self.w, self.members, strict=True))
            return torch.log(probs.clamp_min(1e-12)) / self.temperature

    return Ensemble().eval()


def from_classifier(clf: Any) -> Explainable:
    """Explainable of a loaded :class:`~medanomaly.classify.engine.Classifier` (ensemble-aware)."""
    models = list(clf.models)
    if len(models) == 1 and float(clf.temperature) == 1.0:
        model = models[0].eval()
    else:
        model = _ensemble_module(models, clf.weights, clf.temperature)
    return Explainable(
        model=model,
        preprocess=classification_preprocess(clf.image_size, clf.channels, getattr(clf, "intensity", "percentile")),
        class_names=tuple(clf.class_names), kind="classification", synthetic=bool(clf.synthetic), runner=clf,
    )  # fmt: skip


# --------------------------------------------------------------------------------------- dispatch
def load_run(run_dir: str | Path) -> Explainable:
    """Explainable of a run directory written by ``medanomaly train`` (lung_nodule or classification)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise InputError("run directory not found", run)
    if (run / "detector.json").is_file():
        from medanomaly.detect.detector import NoduleDetector

        return from_detector(NoduleDetector.load(run))
    if (run / "classifier.json").is_file():
        from medanomaly.classify.engine import load_classifier

        return from_classifier(load_classifier(run))
    raise InputError("not a trained lung_nodule or classification run (no detector.json / classifier.json)", run)


def as_explainable(source: Any) -> Explainable:
    """Normalise a run dir, detector, classifier, Explainable or torch module to an Explainable."""
    if isinstance(source, Explainable):
        return source
    if isinstance(source, (str, Path)):
        return load_run(source)
    if hasattr(source, "model_") and hasattr(source, "spacing_mm"):
        return from_detector(source)
    if hasattr(source, "models") and hasattr(source, "image_size"):
        return from_classifier(source)
    return Explainable(model=source)
