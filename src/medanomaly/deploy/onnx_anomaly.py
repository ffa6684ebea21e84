"""An exported ``anomaly`` run, run by ONNX Runtime (no torch imported).

Each method is rebuilt with its scoring network swapped for an ONNX Runtime session (see
:mod:`medanomaly.deploy.export_anomaly` for what each graph holds); the method's NumPy code and
:class:`~medanomaly.anomaly.model.AnomalyModel` (common grid, smoothing, score, threshold, map on
the input grid) are the torch run's own. ``score(images (N, S, S), masks, rel_z) -> (N, S, S)``
maps, brain masks applied, as the torch methods give them.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.anomaly.draem import DraemMethod
from medanomaly.anomaly.methods import AutoencoderMethod, NormativeMethod, PadimMethod
from medanomaly.anomaly.model import AnomalyModel, check_recorded_settings
from medanomaly.engine.run import MODEL_JSON, RunInfo
from medanomaly.errors import InputError, unfit_file

#: The PaDiM Gaussian beside the encoder graph (NumPy .npy, read without pickle).
PADIM_ARRAYS = ("padim_mean.npy", "padim_inv_cov.npy")

__all__ = ["PADIM_ARRAYS", "OnnxNormative", "OnnxAutoencoder", "OnnxPadim", "OnnxDraem", "OnnxAnomalyModel", "onnx_method",
           "onnx_anomaly_model"]  # fmt: skip


def _run(sess: Any, feed: dict[str, np.ndarray], tail: tuple[int | None, ...], batch: int = 64) -> np.ndarray:
    """The session's first output over a feed of equally long arrays, in batches of ``batch``; each batch's
    output must be (b, *tail) (``None``: any length), else one InputError naming the graph."""
    n = len(next(iter(feed.values())))
    outs = [sess.first({k: np.ascontiguousarray(v[i : i + batch]) for k, v in feed.items()},
                       (min(batch, n - i), *tail)) for i in range(0, n, batch)]  # fmt: skip
    return np.concatenate(outs) if outs else np.zeros((0,), np.float32)


def _one_channel(sess: Any, images: np.ndarray) -> np.ndarray:
    """A graph's one-channel output (N, S, S) for ``images`` (N, S, S): ``input`` (N, 1, S, S) -> (N, 1, S, S)."""
    return _run(sess, {"input": np.asarray(images, np.float32)[:, None]}, (1, *np.shape(images)[1:]))[:, 0]


class OnnxNormative(NormativeMethod):
    """Normative z-score map with the mean and spread inside the graph (initializers)."""

    def __init__(self, sess: Any, params: dict[str, Any]) -> None:
        super().__init__(**params)
        self.session = sess

    def score(self, images: np.ndarray, masks: np.ndarray, rel_z: np.ndarray) -> np.ndarray:
        bins = self._bins(rel_z).astype(np.int64)
        maps = _run(self.session, {"input": np.asarray(images, np.float32), "bins": bins}, np.shape(images)[1:])
        return (maps * masks).astype(np.float32)

    def network(self) -> Any:
        return self.session


class OnnxAutoencoder(AutoencoderMethod):
    """The autoencoder with its network an ONNX Runtime session (``input`` -> ``reconstruction``);
    the residual map is the torch method's own float64 NumPy code
    (:func:`~medanomaly.anomaly.methods.residual_map`)."""

    def __init__(self, sess: Any, ssim_weight: float) -> None:  # noqa: PLW0231 - no torch net
        self.session, self.ssim_weight = sess, float(ssim_weight)

    def _net_output(self, images: np.ndarray) -> np.ndarray:
        return _one_channel(self.session, images)

    def network(self) -> Any:
        return self.session


class OnnxPadim(PadimMethod):
    """PaDiM with its encoder in the graph; the Gaussian from ``.npy`` files (no pickle)."""

    def __init__(self, sess: Any, mean: np.ndarray, inv_cov: np.ndarray) -> None:  # noqa: PLW0231 - no torch net
        self.session = sess
        self.mean, self.inv_cov = mean, inv_cov

    def _features(self, images: np.ndarray) -> np.ndarray:
        """Encoder features (N, C, h, w) whose C and h * w are those of the stored Gaussian."""
        positions, channels = self.mean.shape
        feats = _run(self.session, {"input": np.asarray(images, np.float32)[:, None]}, (channels, None, None))
        if feats.ndim == 4 and feats.shape[2] * feats.shape[3] != positions:
            raise InputError(f"the graph gives {feats.shape[2]} x {feats.shape[3]} feature positions, the Gaussian "
                             f"({PADIM_ARRAYS[0]}) has {positions}", getattr(self.session, "path", None))  # fmt: skip
        return feats

    def network(self) -> Any:
        return self.session


class OnnxDraem(DraemMethod):
    """DRAEM-style method with both networks in the graph (``input`` -> ``map``, the probability per pixel)."""

    def __init__(self, sess: Any) -> None:  # noqa: PLW0231 - no torch net
        self.session = sess

    def _net_output(self, images: np.ndarray) -> np.ndarray:
        return _one_channel(self.session, images)

    def network(self) -> Any:
        return self.session


class OnnxAnomalyModel(AnomalyModel):
    """An anomaly run's model over an exported graph (``network()`` is the ORT session)."""

    def explainable(self) -> Any:
        from medanomaly.deploy.onnx_model import NO_EXPLAIN

        raise InputError(NO_EXPLAIN, self.run_dir)


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        raise InputError(f"package file unreadable: {path.name}", path.parent) from None


def _check_gaussian(mean: np.ndarray, inv_cov: np.ndarray, folder: Path) -> None:
    """The PaDiM Gaussian must be finite floats, mean (positions P, channels C) and inverse covariance (P, C, C)."""
    for name, arr in zip(PADIM_ARRAYS, (mean, inv_cov), strict=True):
        if arr.dtype.kind != "f" or not np.all(np.isfinite(arr)):
            raise InputError(f"{name} must hold finite floating-point numbers (it has {arr.dtype})", folder)
    if mean.ndim != 2 or inv_cov.shape != (*mean.shape, mean.shape[1]):
        raise InputError(f"{PADIM_ARRAYS[0]} {mean.shape} and {PADIM_ARRAYS[1]} {inv_cov.shape} do not make one "
                         "Gaussian (need (P, C) and (P, C, C))", folder)  # fmt: skip


def _refuse_map_graph(sess: Any, folder: str | Path) -> None:
    """Refuse an autoencoder package from an earlier export, whose graph held the float32 map (output
    ``map``, which failed the 1e-4 check on real-size networks) instead of the reconstruction."""
    if [o.name for o in sess.get_outputs()] != ["reconstruction"]:
        raise InputError("this autoencoder package holds the residual map in its graph (an older export): "
                         "export the run again", folder)  # fmt: skip


def onnx_method(sess: Any, info: RunInfo, folder: str | Path) -> Any:
    """The anomaly method of a package, its network an ONNX Runtime session (recorded parameters that do not
    fit the method are one InputError naming model.json)."""
    spec = info.extra.get("method", {})
    name, params = spec.get("name", ""), dict(spec.get("params", {}))
    with unfit_file(Path(folder) / MODEL_JSON, "anomaly method parameters"):
        return _onnx_method(sess, name, params, folder)


def _onnx_method(sess: Any, name: str, params: dict[str, Any], folder: str | Path) -> Any:
    if name == "normative":
        return OnnxNormative(sess, params)
    if name == "autoencoder":
        _refuse_map_graph(sess, folder)
        default = inspect.signature(AutoencoderMethod).parameters["ssim_weight"].default
        return OnnxAutoencoder(sess, params.get("ssim_weight", default))
    if name == "padim":
        mean, inv_cov = (_load_npy(Path(folder) / f) for f in PADIM_ARRAYS)
        _check_gaussian(mean, inv_cov, Path(folder))
        return OnnxPadim(sess, mean, inv_cov)
    if name == "draem":
        return OnnxDraem(sess)
    raise InputError(f"no ONNX runner for anomaly method {name!r}", folder)


def onnx_anomaly_model(sess: Any, info: RunInfo, folder: str | Path) -> OnnxAnomalyModel:
    """The anomaly model of a package folder (its recorded settings checked as a run's are)."""
    check_recorded_settings(info, Path(folder) / MODEL_JSON)
    return OnnxAnomalyModel(info, Path(folder), onnx_method(sess, info, folder))
