"""The anomaly methods, by name in :data:`METHODS`: each learns from normal common-grid slices.

=============  ===============================================================================
name           what
=============  ===============================================================================
normative      classical baseline: per-pixel mean and spread of the normal brains on the common
               grid, in bins of relative brain height; map = |x - mean| / spread (a z-score);
               ``masked=True`` takes the statistics over each pixel's in-mask slices only (chest
               CT: the excluded lesion zone does not count as zeros)
autoencoder    MONAI convolutional autoencoder trained to reconstruct normal slices (L1 + SSIM);
               map = w (1 - local SSIM) + (1 - w) |x - reconstruction|
padim          PaDiM-style per-position Gaussian on the features of the autoencoder's encoder
               (self-supervised on the normal data, no downloaded weights); map = Mahalanobis distance
draem          DRAEM-style: an autoencoder that removes synthetic anomalies and a UNet that segments
               them from the slice beside its reconstruction (:mod:`medanomaly.anomaly.draem`);
               map = the UNet's probability per pixel
atlas          registered voxel-wise atlas (3D, :mod:`medanomaly.anomaly.atlas`): the normal brains
               registered (affine) to the test volume; map = difference to their voxel-wise mean
=============  ===============================================================================

A method has ``fit(train, val, settings)``, ``score(images, masks, rel_z) -> (N, S, S) maps``,
``state() -> {name: array}`` (saved as safetensors) and ``load_state``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from medanomaly.errors import ConfigError
from medanomaly.registry import Registry

__all__ = ["METHODS", "NormativeMethod", "AutoencoderMethod", "PadimMethod", "ssim_map", "residual_map", "pixel_auroc",
           "checked_param", "levels", "batches"]

#: Anomaly methods by name.
METHODS: Registry[Any] = Registry("anomaly method")


def pixel_auroc(maps: np.ndarray, lesions: np.ndarray, brain: np.ndarray) -> float:
    """ROC AUC of map values, lesion vs other brain pixels (NaN when one class is missing)."""
    from medanomaly.evaluate.auroc import binary_auroc

    return binary_auroc(maps[brain], lesions[brain])


def _local_mean(t: np.ndarray, window: int) -> np.ndarray:
    """Mean over each pixel's ``window`` x ``window`` neighbourhood inside the image (pixels past
    the border are not counted), per slice of an (N, H, W) array."""
    from scipy.ndimage import uniform_filter

    size = (1, window, window)
    inside = uniform_filter(np.ones(t.shape[1:], np.float64)[None], size, mode="constant")
    return uniform_filter(t, size, mode="constant") / inside


def ssim_map(x: np.ndarray, y: np.ndarray, window: int = 7) -> np.ndarray:
    """Local SSIM (uniform ``window`` x ``window``, data range 1) of two (N, H, W) arrays, in float64.

    Float64 on purpose: in flat tissue the local variance is the small difference of two large
    means, and in float32 that difference is noise of order 1e-4 in the map (the torch and the
    ONNX Runtime float32 maps of one network differed by 1.85e-4).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    c1, c2 = 0.01**2, 0.03**2
    mx, my = _local_mean(x, window), _local_mean(y, window)
    vx, vy = _local_mean(x * x, window) - mx**2, _local_mean(y * y, window) - my**2
    cxy = _local_mean(x * y, window) - mx * my
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def residual_map(images: np.ndarray, reconstructions: np.ndarray, ssim_weight: float) -> np.ndarray:
    """The autoencoder's anomaly map of (N, H, W) images and their reconstructions (grey values
    0..1): ``w (1 - local SSIM) + (1 - w) |x - x^|``, computed in float64, returned as float32.
    The torch method and the exported package both call this (the ONNX graph is the network only)."""
    x, rec = np.asarray(images, np.float64), np.asarray(reconstructions, np.float64)
    w = float(ssim_weight)
    return (w * (1 - ssim_map(x, rec)) + (1 - w) * np.abs(x - rec)).astype(np.float32)


def finite_map(maps: np.ndarray) -> np.ndarray:
    """``maps`` if every value is finite, else one InputError (:func:`medanomaly.engine.contract.finite_output`):
    weights of 1e30 gave a NaN map, which was then reported as a fault of the image ("resample: image has 302670
    NaN/infinite voxels"). Raised without a file; the verb names the image it was scoring."""
    from medanomaly.engine.contract import finite_output

    return finite_output(maps, "the model's anomaly map")


def _fits(what: str, shapes: list[tuple[int, ...]], expected: list[tuple[int, ...]]) -> None:
    """ValueError naming ``what`` unless the loaded arrays' ``shapes`` are the ``expected`` ones."""
    if [tuple(s) for s in shapes] != expected:
        raise ValueError(f"{what} of shapes {' / '.join(map(str, map(tuple, shapes)))} do not fit the recorded "
                         f"parameters and grid ({' / '.join(map(str, expected))})")


def checked_param(method: str, name: str, value: Any, low: float, high: float, *, whole: bool = False,
                  above_low: bool = False) -> Any:
    """``value`` of ``method``'s parameter ``name`` if it is a finite number in ``low``..``high`` (``above_low``:
    strictly above ``low``; ``whole``: an integer), else one ConfigError line (a hand-written config's typo or
    a hostile model.json: ``z_bins: 0`` was an IndexError, ``z_bins: 1e8`` a 381 GiB allocation)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < 1e300 and math.isfinite(value)
    ok = ok and (low < value if above_low else low <= value) and value <= high and (not whole or value == int(value))
    if not ok:
        kind = "a whole number" if whole else "a number"
        bound = f"above {low:g} and up to {high:g}" if above_low else f"in {low:g}..{high:g}"
        raise ConfigError(f"{method} {name} must be {kind} {bound}, got {value!r}")
    return int(value) if whole else float(value)


@METHODS.register("normative")
class NormativeMethod:
    """Per-pixel mean and spread in ``z_bins`` bins of relative brain height (see module doc)."""

    def __init__(self, z_bins: int = 6, floor: float = 0.05, masked: bool = False) -> None:
        self.z_bins = checked_param("normative", "z_bins", z_bins, 1, 256, whole=True)
        self.floor = checked_param("normative", "floor", floor, 0.0, 1.0, above_low=True)  # spread floor, rank units
        self.masked = bool(masked)
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    def _bins(self, rel_z: np.ndarray) -> np.ndarray:
        return np.clip((np.asarray(rel_z) * self.z_bins).astype(int), 0, self.z_bins - 1)

    def fit(self, train: dict[str, np.ndarray], val: dict[str, np.ndarray], settings: dict[str, Any]) -> dict[str, Any]:
        bins = self._bins(train["rel_z"])
        size = train["images"].shape[1:]
        self.mean = np.zeros((self.z_bins, *size), np.float32)
        self.std = np.ones((self.z_bins, *size), np.float32)
        for b in range(self.z_bins):
            sel = bins == b
            if sel.sum() >= 2 and self.masked:
                m = train["masks"][sel]
                n = np.maximum(m.sum(0), 1)
                self.mean[b] = (train["images"][sel] * m).sum(0) / n
                var = ((train["images"][sel] - self.mean[b]) ** 2 * m).sum(0) / n
                self.std[b] = np.where(m.sum(0) >= 2, np.sqrt(var), 1.0)
            elif sel.sum() >= 2:
                self.mean[b] = train["images"][sel].mean(0)
                self.std[b] = train["images"][sel].std(0)
        return {"slices": int(len(bins))}

    def score(self, images: np.ndarray, masks: np.ndarray, rel_z: np.ndarray) -> np.ndarray:
        b = self._bins(rel_z)
        spread = np.sqrt(self.std[b] ** 2 + self.floor**2)
        return (np.abs(images - self.mean[b]) / spread * masks).astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "std": self.std}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.mean, self.std = np.asarray(state["mean"]), np.asarray(state["std"])

    def check_state(self, size: int) -> None:
        """ValueError unless the loaded statistics are ``z_bins`` maps of the ``size`` x ``size`` grid (a model.json
        whose ``z_bins`` or ``size`` was edited indexed past them at the first slice)."""
        _fits("normative mean and std", [self.mean.shape, self.std.shape], [(self.z_bins, size, size)] * 2)

    def network(self) -> Any:
        return None


def levels(method: str, name: str, channels: Any) -> tuple[int, ...]:
    """A network's channels per level, 1 to 6 levels of 1..4096 (ConfigError naming ``method`` ``name`` otherwise)."""
    got = tuple(channels) if isinstance(channels, list | tuple) else ()
    if not 1 <= len(got) <= 6:
        raise ConfigError(f"{method} {name} must list 1 to 6 levels, got {channels!r}")
    return tuple(checked_param(method, name, c, 1, 4096, whole=True) for c in got)


def batches(n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    return [order[i : i + size] for i in range(0, n, size)]


@METHODS.register("autoencoder")
class AutoencoderMethod:
    """Autoencoder with an L1 + SSIM residual map; the epoch is chosen on synthetic anomalies."""

    #: The method's name in :data:`METHODS` and its network's in :data:`~medanomaly.registry.MODELS`.
    name, model_name = "autoencoder", "anomaly_autoencoder"

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64), ssim_weight: float = 0.5,
                 num_res_units: int = 1) -> None:  # fmt: skip
        self.net = self._create_net(channels, ssim_weight, num_res_units)

    def _create_net(self, channels: tuple[int, ...], ssim_weight: float, num_res_units: int, **extra: Any) -> Any:
        """Check the parameters every reconstruction method shares (one ConfigError naming the method), keep
        ``ssim_weight`` and build :attr:`model_name` with them and ``extra`` (already checked)."""
        from medanomaly.registry import MODELS

        self.ssim_weight = checked_param(self.name, "ssim_weight", ssim_weight, 0.0, 1.0)
        units = checked_param(self.name, "num_res_units", num_res_units, 0, 8, whole=True)
        return MODELS.create(self.model_name, channels=levels(self.name, "channels", channels),
                             num_res_units=units, **extra)  # fmt: skip

    def check_grid(self, size: int) -> None:
        """Refuse, before any slice is made, a network that cannot map ``size`` x ``size`` slices to slices of that
        size (more levels than the side allows, or a side its strides do not divide: the output comes out of
        another size), run on a shape-only ``meta`` copy (:func:`medanomaly.models.limits.meta_output_shape`)."""
        import copy

        from medanomaly.models.limits import meta_output_shape, shape_text

        shape, net = (2, 1, size, size), self._reconstruction_net()
        out = meta_output_shape(copy.deepcopy(net).to("meta"), self.model_name, shape, "data.size")
        if out is not None and out != shape:
            raise ConfigError(f"{self.name} channels {list(net.channels)} map a {shape_text(shape)} "
                              f"slice (data.size) to {shape_text(out)}: use a data.size that 2^levels divides")

    def _reconstruction_net(self) -> Any:
        return self.net

    def check_state(self, size: int) -> None:
        """The loaded network takes the recorded grid (:meth:`check_grid`; its weights were loaded strictly)."""
        self.check_grid(size)

    def _net_output(self, images: np.ndarray) -> np.ndarray:
        """The network's one-channel output (N, S, S) for ``images`` (N, S, S), in batches of 64 (the
        autoencoder's reconstructions; the ONNX runners override this alone)."""
        import torch

        self.net.eval()
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(images[:, None], np.float32))
            return torch.cat([self.net(x[i : i + 64]) for i in range(0, len(x), 64)])[:, 0].numpy()

    def _map(self, images: np.ndarray) -> np.ndarray:
        """The anomaly map (N, S, S) of float32 ``images``, before the brain mask: the L1 + SSIM residual."""
        return residual_map(images, self._net_output(images), self.ssim_weight)

    def score(self, images: np.ndarray, masks: np.ndarray, rel_z: np.ndarray) -> np.ndarray:
        return self._map(np.asarray(images, np.float32)) * np.asarray(masks, np.float32)

    def _losses(self) -> dict[str, Any]:
        from monai.losses import SSIMLoss

        return {"ssim": SSIMLoss(spatial_dims=2, data_range=1.0)}

    def _step(self, x: np.ndarray, masks: np.ndarray, rng: np.random.Generator, losses: dict[str, Any]) -> Any:
        """The loss of one batch of normal slices ``x`` (B, S, S): L1 + weighted SSIM of their reconstruction."""
        import torch

        clean = torch.from_numpy(x[:, None])
        rec = self.net(clean)
        return (rec - clean).abs().mean() + self.ssim_weight * losses["ssim"](rec.clamp(0, 1), clean)

    def fit(self, train: dict[str, np.ndarray], val: dict[str, np.ndarray], settings: dict[str, Any]) -> dict[str, Any]:
        """Train on normal slices (one :meth:`_step` per batch); every ``eval_every`` epochs score the
        synthetic-anomaly validation set and keep the weights with the best pixel AUROC there (label-free
        model selection)."""
        import copy

        import torch

        rng = np.random.default_rng(settings.get("seed", 0))
        torch.manual_seed(int(settings.get("seed", 0)))
        opt = torch.optim.Adam(self.net.parameters(), lr=float(settings.get("lr", 2e-3)))
        losses = self._losses()
        images, masks = train["images"].astype(np.float32), train["masks"]
        epochs, every = int(settings.get("epochs", 20)), int(settings.get("eval_every", 5))
        history, best = [], (-1.0, None, 0)
        for epoch in range(1, epochs + 1):
            self.net.train()
            for idx in batches(len(images), int(settings.get("batch_size", 16)), rng):
                loss = self._step(images[idx], masks[idx], rng, losses)
                opt.zero_grad()
                loss.backward()
                opt.step()
            if epoch % every == 0 or epoch == epochs:
                auc = pixel_auroc(self.score(val["images"], val["masks"], val["rel_z"]), val["lesions"], val["masks"])
                history.append({"epoch": epoch, "loss": round(float(loss.item()), 5),
                                "synthetic_val_pixel_auroc": round(auc, 4)})  # fmt: skip
                if auc > best[0]:
                    best = (auc, copy.deepcopy(self.net.state_dict()), epoch)
        if best[1] is not None:
            self.net.load_state_dict(best[1])
        return {"history": history, "selected_epoch": best[2], "synthetic_val_pixel_auroc": best[0]}

    def state(self) -> dict[str, np.ndarray]:
        return {f"net.{k}": v.detach().numpy() for k, v in self.net.state_dict().items()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        import torch

        self.net.load_state_dict({k[4:]: torch.from_numpy(np.asarray(v)) for k, v in state.items() if k.startswith("net.")})
        self.net.eval()

    def network(self) -> Any:
        return self.net


@METHODS.register("padim")
class PadimMethod(AutoencoderMethod):
    """PaDiM-style: a Gaussian per feature position on the self-supervised encoder's features."""

    name = "padim"

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64), ssim_weight: float = 0.5,
                 num_res_units: int = 1, eps: float = 0.01) -> None:  # fmt: skip
        super().__init__(channels, ssim_weight, num_res_units)
        self.eps = checked_param("padim", "eps", eps, 0.0, 100.0, above_low=True)  # covariance regulariser
        self.mean: np.ndarray | None = None
        self.inv_cov: np.ndarray | None = None

    def _features(self, images: np.ndarray) -> np.ndarray:
        import torch

        self.net.eval()
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(images[:, None], np.float32))
            return torch.cat([self.net.features(x[i : i + 64]) for i in range(0, len(x), 64)]).numpy()

    def fit(self, train: dict[str, np.ndarray], val: dict[str, np.ndarray], settings: dict[str, Any]) -> dict[str, Any]:
        log = super().fit(train, val, settings)  # the encoder, self-supervised on normal slices
        f = self._features(train["images"])  # (N, C, h, w)
        n, c = f.shape[:2]
        flat = f.transpose(2, 3, 0, 1).reshape(-1, n, c)  # (positions, N, C)
        self.mean = flat.mean(1)
        centred = flat - self.mean[:, None]
        cov = np.einsum("pnc,pnd->pcd", centred, centred) / max(n - 1, 1) + self.eps * np.eye(c)[None]
        self.inv_cov = np.linalg.inv(cov).astype(np.float32)
        log["feature_shape"] = list(f.shape[1:])
        return log

    def score(self, images: np.ndarray, masks: np.ndarray, rel_z: np.ndarray) -> np.ndarray:
        if self.inv_cov is None:  # during encoder training: the autoencoder's own map
            return super().score(images, masks, rel_z)
        from skimage.transform import resize

        f = self._features(images)
        n, c, h, w = f.shape
        d = f.transpose(0, 2, 3, 1).reshape(n, h * w, c) - self.mean[None]
        dist = finite_map(np.sqrt(np.maximum(np.einsum("npc,pcd,npd->np", d, self.inv_cov, d), 0)).reshape(n, h, w))
        size = images.shape[1:]
        up = np.stack([resize(m, size, order=1) for m in dist])
        return (up * masks).astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {**super().state(), "mean": self.mean, "inv_cov": self.inv_cov}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        super().load_state(state)
        self.mean, self.inv_cov = np.asarray(state["mean"]), np.asarray(state["inv_cov"])

    def check_state(self, size: int) -> None:
        """ValueError unless the Gaussians are one per feature position of the ``size`` x ``size`` grid (the encoder's
        feature shape, on a shape-only ``meta`` copy)."""
        import copy

        import torch

        super().check_state(size)
        with torch.no_grad():
            _n, c, h, w = copy.deepcopy(self.net).to("meta").features(torch.empty(1, 1, size, size, device="meta")).shape
        _fits("padim mean and inverse covariance", [self.mean.shape, self.inv_cov.shape], [(h * w, c), (h * w, c, c)])


from medanomaly.anomaly import atlas as _atlas  # noqa: E402,F401  (registers "atlas"; imports METHODS above)
from medanomaly.anomaly import draem as _draem  # noqa: E402,F401  (registers "draem")
