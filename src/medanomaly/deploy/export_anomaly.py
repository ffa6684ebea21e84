"""Export of an ``anomaly`` run (normative, autoencoder, padim, draem) to ONNX.

What goes into ``model.onnx``, per method (the common-grid slicing, the brain masks, the Gaussian
smoothing, the image score and the mapping back to the input grid stay the run's own NumPy code,
:func:`medanomaly.anomaly.pipeline.predict_volume`):

* ``normative``: the per-pixel statistic itself, the mean and spread (``sqrt(std^2 + floor^2)``)
  per height bin as ONNX initializers: inputs ``input`` (N, S, S) and ``bins`` (N,) int64
  (the slice's height bin, computed outside), output ``map`` = |x - mean| / spread;
* ``autoencoder``: the network, ``input`` (N, 1, S, S) -> ``reconstruction`` (N, 1, S, S); the
  residual map (w (1 - local SSIM) + (1 - w) |x - x^|) runs in NumPy in float64, the run's code
  (:func:`~medanomaly.anomaly.methods.residual_map`): a float32 local SSIM is noise of order 1e-4
  in flat tissue, so a real-size autoencoder's map failed the 1e-4 check when it was in the graph;
* ``padim``: the encoder, ``input`` (N, 1, S, S) -> ``features`` (N, C, h, w); the Gaussian
  (``mean`` and ``inv_cov`` per position) is stored beside it as ``padim_mean.npy`` and
  ``padim_inv_cov.npy`` (read with ``allow_pickle=False``) and the Mahalanobis distance and its
  up-sampling run in NumPy, the run's code;
* ``draem``: both networks, ``input`` (N, 1, S, S) -> ``map`` (N, 1, S, S), the discriminator's
  probability per pixel (the reconstruction feeds the discriminator inside the graph).

``--int8`` (:func:`quantise`): the graph is quantised as :mod:`medanomaly.deploy.quantise` does,
calibrated on up to ``--calibration`` normal **validation** slices (evenly spaced through the split;
never test data). Quantised: the autoencoder's encoder (its decoder stays float: the local SSIM of
the reconstruction reads differences that 8-bit activations erase, see :func:`_float_nodes`) and
PaDiM's encoder (both maps are computed outside the graph, in float), the normative graph's mean
and spread tables (it has no network, so int8 saves no time there).
The guard and the int8 thresholds are :mod:`medanomaly.deploy.anomaly_guard`'s: pixel (and, for
2D runs, image) AUROC on the validation slices with SYNTHETIC lesions, and thresholds recomputed
on the int8 maps of the normal validation slices (stored in ``model.json`` as
``extra.int8_thresholds``; the package loader uses them with the int8 graph).

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

__all__ = ["graphs", "package_info", "check", "quantise"]


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
        return [("model.onnx", GraphSpec(model.method.net.eval(), x, ["input"], ["reconstruction"],
                                         {"input": batch, "reconstruction": batch}))]  # fmt: skip
    if name == "padim":
        return [("model.onnx", GraphSpec(_encoder_module(model.method), x, ["input"], ["features"],
                                         {"input": batch, "features": batch}))]  # fmt: skip
    if name == "draem":
        return [("model.onnx", GraphSpec(model.method.net.eval(), x, ["input"], ["map"], {"input": batch, "map": batch}))]
    raise InputError(f"export does not know anomaly method {name!r} (exportable: normative, autoencoder, padim, draem)",
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


#: What the int8 graph quantises, per method (recorded in the manifest).
QUANTISED = {"autoencoder": "the encoder; the decoder stays float and the residual map (local SSIM, L1) runs in NumPy, float64",
             "padim": "the encoder; the Gaussian (Mahalanobis) distance runs in NumPy, float",
             "normative": "the mean and spread tables and the input (no network)",
             "draem": "both networks (the reconstruction and the discriminator whose probability is the map)"}  # fmt: skip


def _calibration_feeds(model: Any, val: dict[str, np.ndarray], limit: int) -> list[dict[str, np.ndarray]]:
    """Graph inputs of up to ``limit`` normal validation slices, evenly spaced through the split
    (its first slices alone would all be the bottom of one brain)."""
    n = len(val["images"])
    idx = np.unique(np.linspace(0, n - 1, min(limit, n)).round().astype(int)) if n else []
    feeds = []
    for i in idx:
        x = np.ascontiguousarray(val["images"][i : i + 1], np.float32)
        if _method_name(model) == "normative":
            feeds.append({"input": x, "bins": model.method._bins(val["rel_z"][i : i + 1]).astype(np.int64)})
        else:
            feeds.append({"input": x[:, None]})
    return feeds


def _float_nodes(model: Any, fp32: Path) -> list[str]:
    """Nodes that stay float: the autoencoder's decoder. Its output is the reconstruction, whose
    local SSIM in flat tissue reads differences that 8-bit activations erase: on the brain config's
    autoencoder the synthetic validation pixel AUROC fell 0.797 -> 0.742 fully quantised, 0.784 with
    the last decoder stage float, 0.799 with the whole decoder float (the encoder quantised)."""
    import onnx

    if _method_name(model) != "autoencoder":
        return []
    return [n.name for n in onnx.load(str(fp32)).graph.node if n.name.startswith("/decode/")]


def quantise(model: Any, folder: Path, info: Any, limit: int, force: bool) -> dict[str, Any]:
    """``model.int8.onnx`` from ``folder/model.onnx`` behind the synthetic-lesion AUROC guard, with
    thresholds recomputed on its maps (see the module docstring).

    Returns:
        The manifest's ``int8`` record (AUROCs of both graphs, drops, thresholds, ``passed``) and
        ``int8_thresholds`` (``pixel``, ``decision``) for ``model.json``.

    Raises:
        InputError: no validation slice, or the guard refuses without ``force``.
    """
    from medanomaly.deploy.anomaly_guard import auroc_problem, guard_set, int8_thresholds, map_metrics
    from medanomaly.deploy.onnx_anomaly import onnx_method
    from medanomaly.deploy.onnx_model import session
    from medanomaly.deploy.quantise import MAX_MAP_AUROC_DROP, QDQ_RECORD, guard_verdict, quantise_graph

    gs = guard_set(model.run_dir)
    feeds = _calibration_feeds(model, gs.val, limit)
    if not feeds:
        raise InputError("the run's validation split holds no slice to calibrate and guard int8 on", model.run_dir)
    quantise_graph(folder / "model.onnx", folder / "model.int8.onnx", feeds, _float_nodes(model, folder / "model.onnx"))
    sigma = float(info.thresholds["sigma"])
    methods = {name: onnx_method(session(folder / graph), info, folder)
               for name, graph in (("fp32", "model.onnx"), ("int8", "model.int8.onnx"))}  # fmt: skip
    ref, got = (map_metrics(methods[k], gs, sigma) for k in ("fp32", "int8"))
    threshold = int8_thresholds(methods["fp32"], methods["int8"], gs, info.thresholds)
    drops = {f"{k}_drop": None if ref[k] is None or got[k] is None else round(ref[k] - got[k], 6)
             for k in ("pixel_auroc", "image_auroc")}  # fmt: skip
    result = {"metric": "synthetic-lesion pixel AUROC (+ image AUROC in 2D)", "fp32": ref, "int8": got, **drops,
              "validation_slices": int(len(gs.val["images"])), "validation_synthetic": True,
              "quantised": QUANTISED[_method_name(model)],
              "threshold": threshold, "int8_thresholds": threshold["int8"],
              **QDQ_RECORD, "calibration_items": len(feeds)}  # fmt: skip
    return guard_verdict(result, auroc_problem(ref, got, MAX_MAP_AUROC_DROP), force, model.run_dir)
