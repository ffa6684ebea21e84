"""What the explainers need from a trained model, whatever task produced it.

An :class:`Explainable` bundles the network with the preprocessing it was trained with (a
``Volume -> Volume`` that keeps geometry, so maps land back in patient space), the patch it looks
at (detectors) or ``None`` (whole-image classifiers), and the score being explained.

:func:`as_explainable` accepts an ``Explainable``, anything with an ``explainable()`` method (every
loaded model of the engine contract: ``medanomaly.engine.load_model(run)``), or a plain ``torch``
module. This package imports no task: tasks hand it what it needs through ``explainable()``.

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
        model_image: the image the model takes and whether it was colour, as its ``predict`` makes it (a
            one-channel model runs a colour image as its luma); None = the image as it is.
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
    model_image: Callable[[Volume], tuple[Volume, bool]] | None = None


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


# --------------------------------------------------------------------------------------- classification
def classification_preprocess(image_size: Sequence[int], channels: int,
                              intensity: str = "percentile") -> Callable[[Volume], Volume]:  # fmt: skip
    """The classifier's input as a Volume covering the same physical extent: the recorded
    ``classification_input`` step (:mod:`medanomaly.preprocess.recipes`) replayed."""
    from medanomaly.preprocess.pipeline import Pipeline
    from medanomaly.preprocess.recipes import classification_steps

    pipeline = Pipeline.from_config(classification_steps(image_size, channels, intensity))

    def preprocess(volume: Volume) -> Volume:
        return pipeline(volume).volume

    return preprocess


def ensemble_module(models: Sequence[Any], weights: Sequence[float] | None, temperature: float) -> Any:
    """A torch module averaging the members' softmax (weighted), temperature applied; it returns
    calibrated log-probabilities, so its softmax is the calibrated probability."""
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


def from_classifier(clf: Any, preprocess: Callable[[Volume], Volume] | None = None,
                    model_image: Callable[[Volume], tuple[Volume, bool]] | None = None) -> Explainable:  # fmt: skip
    """Explainable of a calibrated classifier (members, weights, temperature, class names; ensemble-aware).

    Args:
        clf: an object with ``models``, ``weights``, ``temperature``, ``class_names``, ``image_size``,
            ``channels`` and ``synthetic`` (the classification task's ``Classifier``).
        preprocess: the run's recorded input pipeline (default: the classifier's resize and intensity).
        model_image: the loaded model's colour-to-grey step (:attr:`Explainable.model_image`).
    """
    models = list(clf.models)
    if len(models) == 1 and float(clf.temperature) == 1.0:
        model = models[0].eval()
    else:
        model = ensemble_module(models, clf.weights, clf.temperature)
    default = classification_preprocess(clf.image_size, clf.channels, getattr(clf, "intensity", "percentile"))
    return Explainable(
        model=model,
        preprocess=preprocess or default,
        class_names=tuple(clf.class_names), kind="classification", synthetic=bool(clf.synthetic), runner=clf,
        model_image=model_image,
    )  # fmt: skip


# --------------------------------------------------------------------------------------- dispatch
def as_explainable(source: Any) -> Explainable:
    """Normalise an Explainable, a loaded model of any task (``.explainable()``) or a torch module.

    A run folder is not accepted here (explain imports no task): load it first with
    :func:`medanomaly.engine.load_model` and pass ``model.explainable()``.
    """
    if isinstance(source, Explainable):
        return source
    if isinstance(source, (str, Path)):
        raise InputError("explain takes a loaded model: use medanomaly.engine.load_model(run).explainable()", source)
    if callable(getattr(source, "explainable", None)):
        return source.explainable()
    return Explainable(model=source)
