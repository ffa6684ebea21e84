"""An exported model behind the engine contract, run by ONNX Runtime (no torch imported).

:func:`onnx_model` wraps an ONNX file and the package's ``model.json`` into the task's own model
class, with the torch network swapped for an ONNX Runtime session, so the recorded preprocessing,
the thresholds and the post-processing are the very code the torch run uses:

* classification: :class:`~medanomaly.classify.model.ClassificationModel` over an
  :class:`OnnxClassifier` (calibrated log-probabilities out of the graph, then the run's decision
  and abstention thresholds);
* detection: :class:`~medanomaly.detect.model.DetectionModel` over an :class:`OnnxDetector`
  (the network in the graph; the lung region, the NumPy sliding window of
  :mod:`medanomaly.deploy.sliding` and the findings post-processing outside);
* fusion: :class:`OnnxFusionModel` (the presence mask is the graph's second input);
* 2D detection: :mod:`medanomaly.deploy.onnx_detection`; anomaly: :mod:`medanomaly.deploy.onnx_anomaly`.

Example:
    >>> from medanomaly.deploy.package import load_package        # doctest: +SKIP
    >>> load_package("pkg/breast").predict(volume).label           # doctest: +SKIP
    'benign'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.classify.model import ClassificationModel, check_recorded_input
from medanomaly.config import env_whole_number
from medanomaly.detect.detector import NoduleDetector, saved_params
from medanomaly.detect.model import DetectionModel
from medanomaly.engine.contract import finite_output
from medanomaly.engine.run import MODEL_JSON, RunInfo
from medanomaly.errors import InputError, unfit_file
from medanomaly.evaluate.calibration import softmax
from medanomaly.evaluate.decision import DecisionRule
from medanomaly.fusion.model import FusionModel
from medanomaly.fusion.model import check_recorded as check_fusion_recorded
from medanomaly.types import Prediction, Volume

__all__ = ["session", "ort_reason", "CheckedSession", "OnnxClassifier", "OnnxDetector", "OnnxClassificationModel", "OnnxDetectionModel",
           "OnnxFusionModel", "onnx_model", "softmax"]  # fmt: skip

#: Most ONNX Runtime intra-op threads ``MEDANOMALY_ORT_THREADS`` may ask for (far above any CPU this runs on).
MAX_ORT_THREADS = 1024

NO_EXPLAIN = "an exported package cannot explain (no gradients); explain the torch run"


def session(path: str | Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session with full graph optimisation; ``threads`` intra-op threads
    (default ``MEDANOMALY_ORT_THREADS`` or ORT's own choice).

    ``MEDANOMALY_ORT_SPINNING=0`` stops the session's idle worker threads from spinning between runs
    (ORT spins by default, which saves a little latency when it has the CPU to itself but takes cores
    from other work in the same process: measured, a 2-thread int8 ResNet-18 ran at 155 img/s right after
    another session's run and 219 img/s with spinning off; see docs/deploy.md)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 4  # fatal only: a graph ORT cannot load is reported below, in one line
    threads = threads or env_whole_number("MEDANOMALY_ORT_THREADS", 0, high=MAX_ORT_THREADS)
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if not env_whole_number("MEDANOMALY_ORT_SPINNING", 1, high=1):
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001  (ORT's own exception classes derive from Exception only)
        raise InputError(f"ONNX Runtime cannot load this graph: {ort_reason(exc)}", path) from None
    return CheckedSession(sess, Path(path))


class CheckedSession:
    """An ONNX Runtime session that answers for its graph file: a run that fails (a graph that does not fit
    the inputs its package's ``model.json`` describes: another rank, type or input name) and, in
    :meth:`first`, an output of another shape than the task needs are one :class:`InputError` naming the
    graph, not a traceback. Everything else (``get_inputs``, ``get_session_options``...) is the ORT session's."""

    def __init__(self, sess: Any, path: Path) -> None:
        self.session, self.path = sess, path

    def __getattr__(self, name: str) -> Any:
        if name in ("session", "path"):  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self.session, name)

    def run(self, output_names: list[str] | None, feed: Mapping[str, np.ndarray], run_options: Any = None) -> Any:
        try:
            return self.session.run(output_names, dict(feed), run_options)
        except Exception as exc:  # noqa: BLE001  (ORT's own exception classes derive from Exception only)
            raise InputError(f"ONNX Runtime cannot run this graph on its package's inputs: {ort_reason(exc)}",
                             self.path) from None  # fmt: skip

    def first(self, feed: Mapping[str, np.ndarray], expect: tuple[int | None, ...]) -> np.ndarray:
        """The first output, which must have the shape ``expect`` (``None``: any length on that axis)."""
        out = np.asarray(self.run(None, feed)[0])
        if out.ndim != len(expect) or any(e is not None and e != n for e, n in zip(expect, out.shape, strict=True)):
            wanted = "(" + ", ".join("any" if e is None else str(e) for e in expect) + ")"
            raise InputError(f"the graph's output has shape {tuple(out.shape)}, the package needs {wanted}", self.path)
        return out


def ort_reason(exc: Exception, limit: int = 240) -> str:
    """ONNX Runtime's error message on one line, without its ``[ONNXRuntimeError] : 1 : FAIL :`` prefix
    (e.g. a truncated graph, an external-data path outside the package, an operator it does not know)."""
    text = re.split(r"\[ONNXRuntimeError\] : \d+ : \w+ : ", " ".join(str(exc).split()))[-1]  # the innermost cause
    text = re.sub(r"\S+\.(?:cc|h|cpp):\d+ \w+ ", "", text).strip()  # ORT's source file and function names
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_batches(sess: Any, x: np.ndarray, batch: int = 16, columns: int | None = None, **extra: np.ndarray) -> np.ndarray:
    """The session's first output over ``x`` (N, ...) in batches of ``batch`` (extra inputs sliced alike);
    with ``columns``, each batch's output must be (b, columns) (class scores), checked by :meth:`CheckedSession.first`."""
    name = sess.get_inputs()[0].name
    outs = []
    for i in range(0, len(x), batch):
        feed = {name: np.ascontiguousarray(x[i : i + batch], np.float32)}
        feed.update({k: np.ascontiguousarray(v[i : i + batch]) for k, v in extra.items()})
        outs.append(sess.first(feed, (len(feed[name]), columns)) if columns else sess.run(None, feed)[0])
    return np.concatenate(outs)


class OnnxClassifier:
    """The classifier interface :class:`~medanomaly.classify.model.ClassificationModel` uses
    (``predict_proba`` and ``call``) over an exported graph of calibrated log-probabilities."""

    def __init__(self, sess: Any, info: RunInfo) -> None:
        self.session = sess
        self.n_classes = len(info.class_names)
        self.decision = decision_rule(info)
        self.channels = int(info.input.get("channels", 1))
        self.image_size = tuple(int(s) for s in info.input.get("image_size", ()))

    def predict_proba(self, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
        """Calibrated class probabilities (N, K) of model inputs (N, C, *spatial)."""
        return softmax(run_batches(self.session, images, batch_size, columns=self.n_classes))

    def call(self, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(called class per row, abstained mask) under the run's learned decision rule."""
        return self.decision.call(probs)


def decision_rule(info: RunInfo) -> DecisionRule:
    """The run's decision rule from model.json (temperature is already inside the exported graph)."""
    stored = dict(info.extra.get("decision") or {"threshold": info.thresholds.get("decision"),
                                                 "abstain_below": float(info.thresholds.get("abstain") or 0.0)})
    return DecisionRule(**{**stored, "temperature": 1.0})


class OnnxDetector(NoduleDetector):
    """The lung-nodule detector with its network in an ONNX graph: ``detect`` (lung region,
    findings, masks, measurements) is the torch detector's; only the heatmap runs through ONNX
    Runtime with the NumPy sliding window."""

    def __init__(self, sess: Any, params: dict[str, Any]) -> None:
        super().__init__(**params)
        self.session = sess

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        """Logit maps (B, 1, *roi) of windows (B, 1, *roi)."""
        return self.session.first({self.session.get_inputs()[0].name: x}, (len(x), 1, *x.shape[2:]))

    def heatmap(self, ct: Volume, region: np.ndarray | None) -> Volume:
        from medanomaly.deploy.sliding import run_network_numpy
        from medanomaly.detect.infer import heatmap

        return heatmap(self.predict_logits, ct, self.spacing_mm, self.hu_window, self.roi_size,  # type: ignore[arg-type]
                       self.overlap, region, runner=run_network_numpy, mirror_axes=self.mirror_axes,
                       scales=self.scales, coarse_filter=self.coarse_filter)  # fmt: skip


class OnnxClassificationModel(ClassificationModel):
    """A classification run's model over an exported graph (``network()`` is the ORT session)."""

    def model_input(self, volume: Volume) -> np.ndarray:
        """The recorded pipeline's output, refused in one line when it is not the graph's input."""
        try:
            return super().model_input(volume)
        except InputError:
            raise  # the pipeline's own line (an unknown step, a wrong image)
        except ValueError:
            want = [self.info.input.get("channels"), *self.info.input.get("image_size", [])]
            raise InputError(f"the image does not give the model input (channels, size) {want}: "
                             f"shape {tuple(volume.array.shape)}") from None  # fmt: skip

    def network(self) -> Any:
        return self.classifier.session

    def explainable(self) -> Any:
        raise InputError(NO_EXPLAIN, self.run_dir)


class OnnxDetectionModel(DetectionModel):
    """A detection run's model over an exported graph (``network()`` is the ORT session)."""

    def network(self) -> Any:
        return self.detector.session

    def explainable(self) -> Any:
        raise InputError(NO_EXPLAIN, self.run_dir)


class OnnxFusionModel(FusionModel):
    """Fusion model over an exported graph ``(x, present) -> logits``: missing modalities are
    zero-filled and flagged exactly as the torch run does (same checks, same input builder)."""

    def __init__(self, info: RunInfo, run_dir: Path, sess: Any) -> None:
        self.info = info
        self.run_dir = Path(run_dir)
        self._pipeline = None
        self.session = sess

    def _predict_volumes(self, volumes: Mapping[str, Volume | None]) -> Prediction:
        from medanomaly.fusion.data import PairedSample, model_inputs, sample_to_array

        full = model_inputs(volumes, self.modalities)
        windows = {k: tuple(v) for k, v in self.info.extra.get("windows", {}).items()}
        array, present = sample_to_array(PairedSample("case", full, -1), self.modalities,
                                         self.info.input["image_size"], windows)  # fmt: skip
        probs = finite_output(self.probabilities(array[None], present[None])[0], "the fusion probabilities")
        flags = tuple(f"missing_modality:{n}" for n, ok in zip(self.modalities, present, strict=True) if not ok)
        return Prediction(scores=tuple(float(p) for p in probs), class_names=self.class_names,
                          label=self.class_names[int(np.argmax(probs))], flags=flags + self.flags())  # fmt: skip

    def probabilities(self, x: np.ndarray, present: np.ndarray) -> np.ndarray:
        """Class probabilities (N, K) of inputs (N, M, *size) with presence masks (N, M)."""
        return softmax(run_batches(self.session, x, 16, columns=len(self.class_names), present=np.asarray(present, bool)))

    def network(self) -> Any:
        return self.session

    def explainable(self) -> Any:
        raise InputError(NO_EXPLAIN, self.run_dir)


def package_detector_params(info: RunInfo, folder: Path) -> dict[str, Any]:
    """The lung detector's constructor parameters recorded in a package's ``model.json``, checked as a run's
    ``detector.json`` is (:func:`medanomaly.detect.detector.saved_params`).

    Raises:
        InputError: no detector parameters, or a value out of the config's bounds, naming the package's ``model.json``.
    """
    recorded = info.extra.get("detector")
    if not isinstance(recorded, dict):
        raise InputError("no detector parameters recorded", folder / "model.json")
    with unfit_file(folder / "model.json", "detector parameters"):
        return saved_params(dict(recorded))


def onnx_model(onnx_path: str | Path, info: RunInfo, folder: str | Path, threads: int | None = None) -> Any:
    """The task model of an exported graph (see the module docstring).

    Raises:
        InputError: a task that export does not know.
    """
    sess = session(onnx_path, threads)
    folder = Path(folder)
    if info.task in ("classification", "fusion") and len(info.class_names) < 2:
        raise InputError(f"a {info.task} package needs at least 2 class names, model.json has {len(info.class_names)}",
                         folder / MODEL_JSON)  # fmt: skip
    if info.task == "classification":
        check_recorded_input(info, folder / MODEL_JSON)
        with unfit_file(folder / MODEL_JSON, "decision rule values"):
            return OnnxClassificationModel(info, folder, OnnxClassifier(sess, info))
    if info.task == "lung_nodule":
        return OnnxDetectionModel(info, folder, OnnxDetector(sess, package_detector_params(info, folder)))
    if info.task == "fusion":
        check_fusion_recorded(info, folder / MODEL_JSON)
        return OnnxFusionModel(info, folder, sess)
    if info.task == "detection":
        from medanomaly.deploy.onnx_detection import onnx_detection_model

        return onnx_detection_model(sess, info, folder, threads)
    if info.task == "anomaly":
        from medanomaly.deploy.onnx_anomaly import onnx_anomaly_model

        return onnx_anomaly_model(sess, info, folder)
    raise InputError(f"no ONNX runner for task {info.task!r}", folder)
