"""The generic 2D ``detection`` run over exported graphs, run by ONNX Runtime (no torch imported).

The package of a ``detection`` run holds the heatmap network (``model.onnx``: windows
``(B, 1, 1, y, x)`` in, logit maps out, dynamic batch and in-plane axes) and, when the run has
one, the lesion classifier (``lesion_classifier.onnx``: crops ``(B, 1, y, x)`` in, logits out).
Its ``model.json`` carries the detector's parameters (``extra.heatmap_detector``: grid, window,
region, sliding window, thresholds) and the classifier's parameters and learned decision rule
(``extra.lesion_classifier``), all JSON.

Everything outside the two networks is the torch run's own code: the recorded preprocessing
(:meth:`~medanomaly.detect.generic.HeatmapDetector.prepare`), the search region, the findings
(:func:`~medanomaly.detect.infer.findings_from_heatmap`), the lesion crops and the decision rule,
and :class:`~medanomaly.detect.detection_task.HeatmapDetectionModel` (per-image summary). Only
the heatmap runs through the NumPy sliding window of :mod:`medanomaly.deploy.sliding` (same
windows and Gaussian blending as MONAI's) and the crop probabilities through ONNX Runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.detect.detection_task import HeatmapDetectionModel
from medanomaly.detect.generic import HeatmapDetector
from medanomaly.detect.lesion_classifier import LesionClassifier
from medanomaly.engine.run import MODEL_JSON, RunInfo
from medanomaly.errors import InputError, unfit_file
from medanomaly.evaluate.calibration import softmax
from medanomaly.evaluate.decision import DecisionRule

__all__ = ["CLASSIFIER_GRAPH", "OnnxHeatmapDetector", "OnnxLesionClassifier", "OnnxHeatmapDetectionModel",
           "onnx_detection_model"]  # fmt: skip

#: The lesion classifier's graph in a detection package.
CLASSIFIER_GRAPH = "lesion_classifier.onnx"


class OnnxHeatmapDetector(HeatmapDetector):
    """:class:`HeatmapDetector` whose network is an ONNX Runtime session (``detect`` unchanged)."""

    def __init__(self, sess: Any, params: dict[str, Any]) -> None:
        super().__init__(**params)
        self.session = sess
        self.model_ = sess  # "fitted"
        self.history_: list[float] = []

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        """Logit maps (B, 1, 1, y, x) of windows (B, 1, 1, y, x) float32."""
        return self.session.first({self.session.get_inputs()[0].name: np.ascontiguousarray(x, np.float32)},
                                  (len(x), 1, *x.shape[2:]))  # fmt: skip

    def run_windows(self, arr: np.ndarray) -> np.ndarray:
        """Sliding-window probabilities with the ONNX session (:func:`medanomaly.deploy.sliding.run_network_numpy`)."""
        from medanomaly.deploy.sliding import run_network_numpy

        return run_network_numpy(self.predict_logits, arr, self.roi_size, self.overlap, self.divisor)  # type: ignore[arg-type]

    def save(self, run_dir: str | Path) -> Path:
        raise InputError("an exported detector cannot be saved as a run; export the torch run again")


class OnnxLesionClassifier(LesionClassifier):
    """:class:`LesionClassifier` whose crop network is an ONNX Runtime session (crops, calibration
    and the decision rule unchanged)."""

    def __init__(self, sess: Any, doc: dict[str, Any]) -> None:
        super().__init__(**doc["params"])
        self.session = sess
        self.rule_ = DecisionRule(**doc["rule"])
        self.rule_fitted_on_ = doc.get("rule_fitted_on", "val")

    def raw_proba(self, crops: np.ndarray) -> np.ndarray:
        """(N, K) softmax of the graph on crops (N, 1, y, x), float64 like the torch classifier."""
        from medanomaly.deploy.onnx_model import run_batches

        if len(crops) == 0:
            return np.zeros((0, len(self.class_names)))
        return softmax(run_batches(self.session, crops, 32, columns=len(self.class_names)).astype(np.float64))

    def save(self, run_dir: str | Path) -> None:
        raise InputError("an exported lesion classifier cannot be saved as a run; export the torch run again")


class OnnxHeatmapDetectionModel(HeatmapDetectionModel):
    """A ``detection`` run's model over exported graphs (``network()`` is the heatmap session)."""

    def network(self) -> Any:
        return self.detector.session

    def explainable(self) -> Any:
        from medanomaly.deploy.onnx_model import NO_EXPLAIN

        raise InputError(NO_EXPLAIN, self.run_dir)


def onnx_detection_model(sess: Any, info: RunInfo, folder: str | Path,
                         threads: int | None = None) -> OnnxHeatmapDetectionModel:  # fmt: skip
    """The detection model of a package folder: ``sess`` runs the heatmap graph; the classifier
    graph (when ``model.json`` lists one) gets a session of its own."""
    from medanomaly.deploy.onnx_model import session

    folder = Path(folder)
    params = info.extra.get("heatmap_detector")
    if not isinstance(params, dict):
        raise InputError("model.json has no heatmap_detector parameters (export the run again)", folder)
    doc = info.extra.get("lesion_classifier")
    classifier = None
    if doc:
        with unfit_file(folder / MODEL_JSON, "lesion classifier settings"):
            classifier = OnnxLesionClassifier(session(folder / CLASSIFIER_GRAPH, threads), dict(doc))
    return OnnxHeatmapDetectionModel(info, folder, OnnxHeatmapDetector(sess, dict(params)), classifier)
