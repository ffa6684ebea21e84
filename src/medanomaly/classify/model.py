"""A trained classification run behind the engine contract (:class:`medanomaly.engine.TaskModel`).

:func:`run_info` is what the task writes as ``model.json``; :class:`ClassificationModel` is what
``load_model(run)`` returns: ``predict(volume)`` gives the calibrated class probabilities, the
called class (decision threshold learned on validation, else arg-max) and whether the model
abstains (top probability below the abstention threshold learned on validation).

Example:
    >>> from medanomaly.engine import load_model                 # doctest: +SKIP
    >>> load_model("runs/breast").predict(volume).decision        # doctest: +SKIP
    'malignant'
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.engine.contract import ModelBase, finite_output
from medanomaly.engine.run import RunInfo
from medanomaly.types import Prediction, Volume

__all__ = ["ClassificationModel", "check_recorded", "check_recorded_input", "run_info"]


def run_info(clf: Any, member_weights: Sequence[str]) -> RunInfo:
    """``model.json`` of a calibrated :class:`~medanomaly.classify.engine.Classifier`."""
    from medanomaly.preprocess.recipes import classification_steps

    return RunInfo(
        task="classification",
        class_names=tuple(clf.class_names),
        thresholds={"decision": clf.decision.threshold, "abstain": clf.decision.abstain_below,
                    "temperature": clf.decision.temperature},  # fmt: skip
        preprocessing=classification_steps(clf.image_size, clf.channels, clf.intensity),
        weights=tuple(member_weights),
        input={"spatial_dims": len(clf.image_size), "channels": clf.channels, "image_size": list(clf.image_size)},
        synthetic=bool(clf.synthetic),
        extra={"ensemble": {"members": len(clf.models), "method": clf.method, "tta": clf.tta},
               "decision": clf.decision.to_json()},
    )


def check_recorded_input(info: RunInfo, path: Path) -> None:
    """One line naming ``path`` (model.json) unless the recorded input has ``spatial_dims``, ``channels`` and an
    ``image_size`` of ``spatial_dims`` sizes (what an exported package, which has no ``classifier.json``, shapes each
    image by: without them it was a KeyError / TypeError traceback at the first prediction)."""
    from medanomaly.errors import InputError

    given = info.input
    if any(given.get(k) is None for k in ("spatial_dims", "channels", "image_size")) or \
            len(given["image_size"]) != given["spatial_dims"]:  # fmt: skip
        raise InputError("the recorded input needs spatial_dims, channels and an image_size of spatial_dims sizes, "
                         f"got {dict(given)}", path)  # fmt: skip


def check_recorded(info: RunInfo, clf: Any, path: Path) -> None:
    """Refuse, in one line naming ``path`` (model.json), class names or an input that are not the loaded classifier's
    (``classifier.json`` and the weights were made together; model.json names the classes and shapes each input):
    an edited or foreign model.json with one class name less, a class twice or a ``spatial_dims`` of 0 was a
    traceback at the first prediction."""
    from medanomaly.errors import InputError

    if list(info.class_names) != list(clf.class_names):
        raise InputError(f"class names {list(info.class_names)} are not the classifier's {list(clf.class_names)}", path)
    expected = {"spatial_dims": len(clf.image_size), "channels": clf.channels, "image_size": list(clf.image_size)}
    if dict(info.input) != expected:
        raise InputError(f"input {dict(info.input)} is not the classifier's {expected}", path)


class ClassificationModel(ModelBase):
    """Binary / multi-class classifier (2D or 3D, single model or ensemble) loaded from a run."""

    #: Bytes per input voxel, a floor: measured 20 (2D, 4 and 16 megapixels) by bench/bench_predict_memory.py.
    PREDICT_BYTES_PER_VOXEL = 16.0

    def __init__(self, info: RunInfo, run_dir: Path, classifier: Any) -> None:
        super().__init__(info, run_dir)
        self.classifier = classifier

    def model_image(self, volume: Volume) -> tuple[Volume, bool]:
        """(the image the model takes, whether it was colour): for a one-channel model a colour image (an
        ultrasound's RGB, palette or YBR frames; a colour picture) is its BT.601 luma
        (:func:`~medanomaly.preprocess.colour.grey_volume`; it was refused with advice for training, "set
        data.channels to 3", at predict time); anything else as it is (the recorded pipeline checks it)."""
        from medanomaly.preprocess.colour import grey_volume

        return grey_volume(volume) if int(self.info.input.get("channels") or 1) == 1 else (volume, False)

    def model_input(self, volume: Volume) -> np.ndarray:
        """The network input (C, *spatial) of one image, by replaying the recorded pipeline (on :meth:`model_image`)."""
        from medanomaly.preprocess.resize import channels_first

        image = self.model_image(volume)[0]
        return channels_first(self.preprocessing(image).volume, int(self.info.input["spatial_dims"]))

    def _predict(self, volume: Volume) -> Prediction:
        return self._predict_many([volume])[0]

    def _predict_many(self, volumes: Sequence[Volume]) -> list[Prediction]:
        """Batched prediction: one forward pass per batch of images; a colour image run as grey is flagged
        ``colour_to_grey``."""
        if not volumes:
            return []
        images = [self.model_image(v) for v in volumes]
        x = np.stack([self.model_input(v) for v, _ in images])
        probs = self.classifier.predict_proba(x)
        return self.predictions(probs, [("colour_to_grey",) if coloured else () for _, coloured in images])

    def predictions(self, probs: np.ndarray, extra_flags: Sequence[tuple[str, ...]] | None = None) -> list[Prediction]:
        """Predictions from calibrated probabilities (N, K): called class and abstention; ``extra_flags``: each
        image's own flags."""
        arg, abstained = self.classifier.call(finite_output(probs, "the classifier's probabilities"))
        extra = extra_flags if extra_flags is not None else [()] * len(probs)
        return [Prediction(scores=tuple(float(v) for v in p), class_names=self.class_names,
                           label=self.class_names[int(a)], abstained=bool(ab), flags=(*self.flags(), *e))
                for p, a, ab, e in zip(probs, arg, abstained, extra, strict=True)]  # fmt: skip

    def network(self) -> Any:
        """A torch module mapping the model input to calibrated log-probabilities (members averaged,
        temperature applied): its softmax is what ``predict`` reports."""
        from medanomaly.explain.adapters import ensemble_module

        return ensemble_module(list(self.classifier.models), self.classifier.weights, self.classifier.temperature)

    def explainable(self) -> Any:
        from medanomaly.explain.adapters import from_classifier

        return from_classifier(self.classifier, preprocess=self._explain_preprocess(), model_image=self.model_image)

    def _explain_preprocess(self) -> Any:
        def preprocess(volume: Volume) -> Volume:
            return self.preprocessing(volume).volume

        return preprocess
