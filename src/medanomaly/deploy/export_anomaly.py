"""Export of an ``anomaly`` run (normative, autoencoder, padim) to ONNX.

What goes into ``model.onnx``, per method (the common-grid slicing, the brain masks, the Gaussian
smoothing, the image score and the mapping back to the input grid stay the run's own NumPy code,
:func:`medanomaly.anomaly.pipeline.predict_volume`):

* ``normative``: the per-pixel statistic itself, the mean and spread (``sqrt(std^2 + floor^2)``)
  per height bin as ONNX initializers: inputs ``input`` (N, S, S) and ``bins`` (N,) int64
  (the slice's height bin, computed outside), output ``map`` = |x - mean| / spread;
* ``autoencoder``: the network and its residual map (w (1 - local SSIM) + (1 - w) |x - x^|):
  ``input`` (N, 1, S, S) -> ``map`` (N, 1, S, S);
* ``padim``: the encoder, ``input`` (N, 1, S, S) -> ``features`` (N, C, h, w); the Gaussian
  (``mean`` and ``inv_cov`` per position) is stored beside it as ``padim_mean.npy`` and
  ``padim_inv_cov.npy`` (read with ``allow_pickle=False``) and the Mahalanobis distance and its
  up-sampling run in NumPy, the run's code.

The brain masks multiply every map outside the graph, exactly as the methods do. The ``atlas``
method is refused in one line: its registration of the normal brains to each test volume
(SimpleITK) is not an ONNX graph. The check
(:func:`check`) compares the torch method's maps with the package's on the run's normal
**validation** slices (never the test cases): max abs difference above
:data:`~medanomaly.deploy.export.MATCH_LIMIT` is refused in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.deploy.export import MATCH_LIMIT, GraphSpec
from medanomaly.deploy.onnx_anomaly import PADIM_ARRAYS
from medanomaly.errors import InputError

__all__ = ["graphs", "package_info", "check"]


def _normative_module(method: Any) -> Any:
    import torch

    class NormativeMap(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            std = np.asarray(method.std, np.float32)
            self.register_buffer("mean", torch.from_numpy(np.asarray(method.mean, np.float32).copy()))
            self.register_buffer("spread", torch.from_numpy(np.sqrt(std**2 + method.floor**2).astype(np.float32)))

        def forward(self, x: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
            return torch.abs(x - self.mean[bins]) / self.spread[bins]

    return NormativeMap().eval()


def _autoencoder_module(method: Any) -> Any:
    import torch

    from medanomaly.anomaly.methods import ssim_map

    class ResidualMap(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = method.net.eval()
            self.w = float(method.ssim_weight)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            rec = self.net(x)
            return self.w * (1 - ssim_map(x, rec)) + (1 - self.w) * (x - rec).abs()

    return ResidualMap().eval()


def _encoder_module(method: Any) -> Any:
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = method.net.eval()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net.features(x)

    return Encoder().eval()


def _method_name(model: Any) -> str:
    return str(model.info.extra.get("method", {}).get("name", ""))


def graphs(model: Any) -> list[tuple[str, GraphSpec]]:
    """(file name, what to trace) of an anomaly run; a method export does not know is refused."""
    import torch

    name, size = _method_name(model), int(model.info.extra["size"])
    if name == "atlas":
        raise InputError("the atlas method cannot be exported: it registers the normal brains to each test volume "
                         "(SimpleITK), which is not an ONNX graph; predict with the run folder", model.run_dir)  # fmt: skip
    batch = {0: "batch"}
    if name == "normative":
        return [("model.onnx", GraphSpec(_normative_module(model.method), (torch.zeros((1, size, size)),
                 torch.zeros((1,), dtype=torch.int64)), ["input", "bins"], ["map"],
                 {"input": batch, "bins": batch, "map": batch}))]  # fmt: skip
    x = (torch.zeros((1, 1, size, size)),)
    if name == "autoencoder":
        return [("model.onnx", GraphSpec(_autoencoder_module(model.method), x, ["input"], ["map"],
                                         {"input": batch, "map": batch}))]  # fmt: skip
    if name == "padim":
        return [("model.onnx", GraphSpec(_encoder_module(model.method), x, ["input"], ["features"],
                                         {"input": batch, "features": batch}))]  # fmt: skip
    raise InputError(f"export does not know anomaly method {name!r} (exportable: normative, autoencoder, padim)",
                     model.run_dir)  # fmt: skip


def package_info(model: Any) -> Any:
    """The run's RunInfo unchanged (the method and its parameters are in ``extra.method``)."""
    return model.info


def _write_arrays(model: Any, folder: Path) -> None:
    if _method_name(model) == "padim":
        for name, arr in zip(PADIM_ARRAYS, (model.method.mean, model.method.inv_cov), strict=True):
            np.save(folder / name, np.ascontiguousarray(arr), allow_pickle=False)


def validation_slices(run_dir: Path, limit: int) -> dict[str, np.ndarray]:
    """Common-grid slices of the run's normal validation brains (as training made them), at most ``limit``."""
    from medanomaly.anomaly.pipeline import build_split
    from medanomaly.config import load_config

    cfg = load_config(Path(run_dir) / "config.yaml")
    val = build_split(cfg.data.val, cfg, cfg.seed + 1)
    return {k: v[:limit] for k, v in val.items()}


def check(model: Any, folder: Path, info: Any, limit: int) -> dict[str, Any]:
    """Write the method's side arrays, then compare torch and package maps on validation slices.

    Returns:
        The manifest record: ``fp32_max_abs_diff`` (map values), ``validation_items``, ``method``.

    Raises:
        InputError: a difference above the limit.
    """
    from medanomaly.deploy.onnx_anomaly import onnx_method
    from medanomaly.deploy.onnx_model import session

    _write_arrays(model, folder)
    val = validation_slices(model.run_dir, limit)
    ref = model.method.score(val["images"], val["masks"], val["rel_z"])
    got = onnx_method(session(folder / "model.onnx"), info, folder).score(val["images"], val["masks"], val["rel_z"])
    diff = float(np.abs(ref - got).max(initial=0.0))
    if not diff <= MATCH_LIMIT:
        raise InputError(f"the ONNX graph differs from torch by {diff:.2e} on validation (limit {MATCH_LIMIT:g})",
                         model.run_dir)  # fmt: skip
    return {"fp32_max_abs_diff": diff, "validation_items": int(len(val["images"])), "method": _method_name(model),
            "validation_synthetic": False}  # fmt: skip
