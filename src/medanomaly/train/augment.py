"""Training augmentation through MONAI: rotation, scaling, cropping, flips, intensity, elastic; and the MRI and CT
artefacts TorchIO users expect: gamma (contrast), a smooth multiplicative bias field, blur and anisotropy (thick
slices).

Random = sample parameters, then call the deterministic operation, and record what was applied.
:meth:`Augmenter.sample` draws a plain-dict record from a NumPy generator (angles in degrees,
zoom factor, crop box in voxels, flipped axes, intensity scale/shift, noise and elastic seeds);
:meth:`Augmenter.apply_batch` replays records exactly: flips, rotation, zoom and the random
resized crop compose into one affine matrix per image, applied to the whole batch at once by
MONAI's ``AffineTransform``; the elastic deformation is a seeded smooth displacement field applied
by MONAI's ``Warp``. Batched warping is why this is not a chain of MONAI's per-image ``Rand*``
array transforms: those cost ~8 ms per 128x128 image on a CPU, more than the network step itself.
The artefacts follow the intensity step, in this order: gamma ``x ** g`` (x clipped at 0), bias field
``x * exp(p)`` with ``p`` a polynomial of degree 2 over the image in normalised coordinates (coefficients recorded; the
field of RandomBiasField in TorchIO and RandBiasField in MONAI), Gaussian blur (a sigma in voxels per image), and
anisotropy: one axis downsampled by a factor and resampled back (linear), as a scan with slices that much thicker.
A record is JSON-able: a run can log exactly what each image went through.

Example:
    >>> import numpy as np, torch
    >>> aug = Augmenter(AugmentSpec(rotate_deg=10, flip=True), spatial_dims=2)
    >>> rec = aug.sample(np.random.default_rng(0), (32, 32))
    >>> x = torch.rand(1, 32, 32)
    >>> bool(torch.equal(aug.apply(x, rec), aug.apply(x, rec)))
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import ConfigDict, Field

from medanomaly.config import Section


#: The record keys of the MRI / CT artefacts (applied after the intensity step, before the noise).
ARTEFACT_KEYS = frozenset({"gamma", "bias_field", "blur", "anisotropy"})


class AugmentSpec(Section):
    """How strongly to augment (0 / False = off). Each operation fires with probability ``prob``.

    Also the ``train.augment:`` section of a classification config (one source of defaults and limits).

    Attributes:
        rotate_deg: maximum rotation angle, degrees (in-plane for 2D; about each axis for 3D).
        scale: maximum relative zoom, e.g. 0.1 = zoom factor in [0.9, 1.1].
        crop: maximum fraction of each edge cropped away before resizing back (random resized crop).
        flip: random flips along every spatial axis (left-right, up-down, and z for 3D).
        intensity: maximum relative intensity scale and absolute shift (inputs are in [0, 1]).
        noise_std: maximum standard deviation of added Gaussian noise.
        elastic: elastic deformation (MONAI Rand2DElastic / Rand3DElastic).
        gamma: maximum ``|log gamma|``: the contrast curve ``x ** gamma`` with gamma in ``[exp(-g), exp(g)]``.
        bias_field: largest ``|log|`` of the bias field anywhere in the image (a degree-2 polynomial over the image,
            coordinates in [-1, 1], its coefficients scaled so that the sum of their magnitudes is drawn in
            ``[0, bias_field]``): 0.3 multiplies intensities by at most 1.35 and divides them by at most 1.35 (10-30 %
            across the brain is an uncorrected MRI at 1.5-3 T).
        blur: maximum Gaussian blur sigma, voxels.
        anisotropy: maximum factor by which one axis (the slices: z for 3D, a random one for 2D) is made coarser
            and resampled back (TorchIO's RandomAnisotropy): 3 is slices three times thicker.
        prob: probability of each operation.
    """

    model_config = ConfigDict(allow_inf_nan=False)

    rotate_deg: float = Field(0.0, ge=0.0, le=180.0)
    scale: float = Field(0.0, ge=0.0, lt=1.0)
    crop: float = Field(0.0, ge=0.0, lt=1.0)
    flip: bool = False
    intensity: float = Field(0.0, ge=0.0, lt=1.0)
    noise_std: float = Field(0.0, ge=0.0, le=10.0)
    elastic: bool = False
    gamma: float = Field(0.0, ge=0.0, le=2.0)
    bias_field: float = Field(0.0, ge=0.0, le=2.0)
    blur: float = Field(0.0, ge=0.0, le=20.0)
    anisotropy: float = Field(1.0, ge=1.0, le=16.0)
    prob: float = Field(0.5, ge=0.0, le=1.0)

    @property
    def active(self) -> bool:
        return bool(self.rotate_deg or self.scale or self.crop or self.flip or self.intensity or self.noise_std
                    or self.elastic or self.gamma or self.bias_field or self.blur or self.anisotropy > 1) and self.prob > 0


class Augmenter:
    """Sample and apply augmentations to channel-first tensors (C, *spatial) in [0, 1].

    Args:
        spec: what to do; spatial_dims: 2 or 3.
    """

    def __init__(self, spec: AugmentSpec, spatial_dims: int = 2) -> None:
        self.spec = spec
        self.spatial_dims = spatial_dims

    # ------------------------------------------------------------------ sample
    def sample(self, rng: np.random.Generator, size: tuple[int, ...]) -> dict[str, Any]:
        """Draw the parameters of one augmentation (a JSON-able record)."""
        s, d, rec = self.spec, self.spatial_dims, {}

        def fires() -> bool:
            return bool(rng.random() < s.prob)

        if s.rotate_deg and fires():
            n_angles = 1 if d == 2 else 3
            rec["rotate_deg"] = [float(a) for a in rng.uniform(-s.rotate_deg, s.rotate_deg, n_angles)]
        if s.scale and fires():
            rec["zoom"] = float(rng.uniform(1 - s.scale, 1 + s.scale))
        if s.crop and fires():
            frac = rng.uniform(1 - s.crop, 1.0)
            roi = [max(int(round(n * frac)), 1) for n in size]
            start = [int(rng.integers(0, n - r + 1)) for n, r in zip(size, roi, strict=True)]
            rec["crop"] = [start, [a + r for a, r in zip(start, roi, strict=True)]]
        if s.flip:
            axes = [a for a in range(d) if fires()]
            if axes:
                rec["flip_axes"] = axes
        if s.intensity and fires():
            rec["intensity"] = [float(rng.uniform(1 - s.intensity, 1 + s.intensity)),
                                float(rng.uniform(-s.intensity, s.intensity))]
        if s.noise_std and fires():
            rec["noise"] = [float(rng.uniform(0, s.noise_std)), int(rng.integers(2**31 - 1))]
        if s.elastic and fires():
            rec["elastic_seed"] = int(rng.integers(2**31 - 1))
        rec.update(self._sample_artefacts(rng, fires))  # after the rest: earlier specs draw the same records
        return rec

    def _sample_artefacts(self, rng: np.random.Generator, fires: Any) -> dict[str, Any]:
        """Gamma, bias field coefficients, blur sigma and anisotropy (axis, factor) of one record."""
        s, d, rec = self.spec, self.spatial_dims, {}
        if s.gamma and fires():
            rec["gamma"] = float(np.exp(rng.uniform(-s.gamma, s.gamma)))
        if s.bias_field and fires():  # every monomial lies in [-1, 1]: the field's |log| <= the sum of |c|
            shape = rng.uniform(-1.0, 1.0, len(_monomials(d)))
            size = rng.uniform(0.0, s.bias_field) / max(float(np.abs(shape).sum()), 1e-12)
            rec["bias_field"] = [float(c) for c in shape * size]
        if s.blur and fires():
            rec["blur"] = float(rng.uniform(0.0, s.blur))
        if s.anisotropy > 1 and fires():
            axis = 0 if d == 3 else int(rng.integers(d))  # 3D: the slices (z); 2D: either in-plane axis
            rec["anisotropy"] = [axis, float(rng.uniform(1.0, s.anisotropy))]
        return rec

    # ------------------------------------------------------------------ apply
    def theta(self, record: dict[str, Any], size: tuple[int, ...]) -> np.ndarray:
        """The affine matrix (d, d+1) of a record's geometric part, in normalised coordinates
        (PyTorch ``affine_grid`` convention: output position -> input position, x = last axis)."""
        d = self.spatial_dims
        a = np.eye(d)
        t = np.zeros(d)
        for axis in record.get("flip_axes", []):  # array axis -> grid axis d-1-axis
            a[d - 1 - axis, d - 1 - axis] *= -1
        if "rotate_deg" in record:
            a = _rotation(np.deg2rad(record["rotate_deg"]), d) @ a
        if "zoom" in record:
            a = a / record["zoom"]
        if "crop" in record:
            start, end = (np.asarray(v, dtype=np.float64) for v in record["crop"])
            n = np.asarray(size, dtype=np.float64)
            a = np.diag(((end - start) / n)[::-1]) @ a
            t = ((start + end) / n - 1.0)[::-1]
        return np.concatenate([a, t[:, None]], axis=1)

    def apply_batch(self, x, records: list[dict[str, Any]]):
        """Apply one record per image to a batch (B, C, *spatial) at once.

        The geometric part (flip, rotation, zoom, crop) is one affine warp per image, done for the
        whole batch by MONAI's ``AffineTransform`` (bilinear, zero padding); the elastic part is a
        smooth random displacement field (seeded by the record) warped by MONAI's ``Warp``;
        intensity scale/shift and Gaussian noise follow. Per-image cost is a few microseconds of
        Python, so augmentation does not slow the loop down.
        """
        import torch
        from monai.networks.blocks import Warp
        from monai.networks.layers import AffineTransform

        out = torch.as_tensor(x, dtype=torch.float32).clone()  # never modify the caller's tensor
        size = tuple(out.shape[2:])
        geometric = [i for i, r in enumerate(records) if {"flip_axes", "rotate_deg", "zoom", "crop"} & set(r)]
        if geometric:
            theta = torch.from_numpy(np.stack([self.theta(records[i], size) for i in geometric])).float()
            warp = AffineTransform(normalized=True, reverse_indexing=False, align_corners=False,
                                   padding_mode="zeros")
            out[geometric] = warp(out[geometric], theta)
        elastic = [i for i, r in enumerate(records) if "elastic_seed" in r]
        if elastic:
            ddf = torch.stack([self._displacement(records[i]["elastic_seed"], size) for i in elastic])
            out[elastic] = Warp(mode="bilinear", padding_mode="zeros")(out[elastic], ddf)
        scaled = [i for i, r in enumerate(records) if "intensity" in r]
        if scaled:
            fs = torch.tensor([records[i]["intensity"] for i in scaled], dtype=torch.float32)
            shape = (len(scaled),) + (1,) * (out.ndim - 1)
            out[scaled] = out[scaled] * fs[:, 0].view(shape) + fs[:, 1].view(shape)
        for i, r in enumerate(records):
            if ARTEFACT_KEYS & r.keys():  # an image without them is not copied through
                out[i] = self._artefacts(out[i], r)
            if "noise" in r:
                std, seed = r["noise"]
                gen = torch.Generator().manual_seed(int(seed))
                out[i] = out[i] + std * torch.randn(out[i].shape, generator=gen)
        return out

    def _artefacts(self, x, record: dict[str, Any]):
        """A record's gamma, bias field, blur and anisotropy applied to one image (C, *spatial), in that order."""
        import torch

        if "gamma" in record:
            x = x.clamp(min=0.0) ** record["gamma"]
        if "bias_field" in record:
            x = x * torch.exp(_polynomial_field(record["bias_field"], tuple(x.shape[1:])))
        if record.get("blur"):  # edges replicated: zero padding had darkened the image's rim
            from monai.networks.layers import gaussian_1d, separable_filtering

            kernel = gaussian_1d(torch.tensor(record["blur"]), truncated=3.0)
            x = separable_filtering(x[None], [kernel] * (x.ndim - 1), mode="replicate")[0]
        if "anisotropy" in record:
            x = _coarser_along(x, *record["anisotropy"])
        return torch.as_tensor(x, dtype=torch.float32)

    def _displacement(self, seed: int, size: tuple[int, ...]):
        """A smooth displacement field (d, *size) in voxels: coarse Gaussian noise (1/8 of the grid,
        std = 1.5% of the image edge) upsampled with cubic-like smoothness (bilinear/trilinear)."""
        import torch
        import torch.nn.functional as F

        gen = torch.Generator().manual_seed(int(seed))
        d = self.spatial_dims
        coarse = [max(n // 8, 2) for n in size]
        field = torch.randn((1, d, *coarse), generator=gen) * (0.015 * max(size))
        mode = "bilinear" if d == 2 else "trilinear"
        return F.interpolate(field, size=size, mode=mode, align_corners=False)[0]

    def apply(self, x, record: dict[str, Any]):
        """Apply one recorded augmentation (deterministic) to one tensor (C, *spatial)."""
        import torch

        return self.apply_batch(torch.as_tensor(x)[None], [record])[0]

    def __call__(self, x, rng: np.random.Generator):
        """Sample and apply to one image; returns (augmented tensor, record)."""
        record = self.sample(rng, tuple(x.shape[1:]))
        return self.apply(x, record), record

    def batch(self, x, rng: np.random.Generator):
        """Sample one record per image of a batch (B, C, *spatial) and apply; returns (batch, records)."""
        size = tuple(x.shape[2:])
        records = [self.sample(rng, size) for _ in range(len(x))]
        return self.apply_batch(x, records), records

    def __repr__(self) -> str:
        return f"Augmenter({self.spec.model_dump()}, spatial_dims={self.spatial_dims})"


def _monomials(d: int) -> list[tuple[int, ...]]:
    """Exponents of the degree-1 and degree-2 monomials in ``d`` coordinates (the constant is left out: a field's
    overall level is the intensity scale's job)."""
    from itertools import product

    return [e for e in product(range(3), repeat=d) if 0 < sum(e) <= 2]


def _polynomial_field(coefficients: list[float], size: tuple[int, ...]):
    """``sum c_k * monomial_k`` over the grid, coordinates in [-1, 1] per axis: the log of a bias field."""
    import torch

    grids = torch.meshgrid(*[torch.linspace(-1.0, 1.0, n) for n in size], indexing="ij")
    field = torch.zeros(size)
    for c, exponents in zip(coefficients, _monomials(len(size)), strict=True):
        term = torch.ones(size)
        for grid, e in zip(grids, exponents, strict=True):
            term = term * grid**e
        field = field + c * term
    return field


def _coarser_along(x, axis: int, factor: float):
    """``x`` (C, *spatial) with spatial ``axis`` sampled ``factor`` times more coarsely and resampled back (linear):
    the detail a scan with slices ``factor`` times thicker would not hold."""
    import torch.nn.functional as F

    size = list(x.shape[1:])
    coarse = list(size)
    coarse[axis] = max(1, int(round(size[axis] / factor)))
    mode = "bilinear" if len(size) == 2 else "trilinear"
    small = F.interpolate(x[None], size=coarse, mode="area")
    return F.interpolate(small, size=size, mode=mode, align_corners=False)[0]


def _rotation(angles_rad, d: int) -> np.ndarray:
    """Rotation matrix (d, d): in-plane for 2D; about grid axes x, then y, then z for 3D."""

    def rot2(a: float) -> np.ndarray:
        c, s = np.cos(a), np.sin(a)
        return np.array([[c, -s], [s, c]])

    if d == 2:
        return rot2(angles_rad[0])
    r = np.eye(3)
    for axis, a in enumerate(angles_rad):
        m = np.eye(3)
        others = [i for i in range(3) if i != axis]
        m[np.ix_(others, others)] = rot2(a)
        r = m @ r
    return r
