"""Training augmentation through MONAI: rotation, scaling, cropping, flips, intensity, elastic.

Random = sample parameters, then call the deterministic operation, and record what was applied.
:meth:`Augmenter.sample` draws a plain-dict record from a NumPy generator (angles in degrees,
zoom factor, crop box in voxels, flipped axes, intensity scale/shift, noise and elastic seeds);
:meth:`Augmenter.apply_batch` replays records exactly: flips, rotation, zoom and the random
resized crop compose into one affine matrix per image, applied to the whole batch at once by
MONAI's ``AffineTransform``; the elastic deformation is a seeded smooth displacement field applied
by MONAI's ``Warp``. Batched warping is why this is not a chain of MONAI's per-image ``Rand*``
array transforms: those cost ~8 ms per 128x128 image on a CPU, more than the network step itself.
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
    prob: float = Field(0.5, ge=0.0, le=1.0)

    @property
    def active(self) -> bool:
        return bool(self.rotate_deg or self.scale or self.crop or self.flip or self.intensity
                    or self.noise_std or self.elastic) and self.prob > 0


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
            if "noise" in r:
                std, seed = r["noise"]
                gen = torch.Generator().manual_seed(int(seed))
                out[i] = out[i] + std * torch.randn(out[i].shape, generator=gen)
        return out

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
