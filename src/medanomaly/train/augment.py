"""Training augmentation through MONAI: rotation, scaling, cropping, flips, intensity, elastic.

Random = sample parameters, then call the deterministic operation, and record what was applied.
:meth:`Augmenter.sample` draws a plain-dict record from a NumPy generator (angles in degrees,
zoom factor, crop box in voxels, flipped axes, intensity scale/shift, noise and elastic seeds);
:meth:`Augmenter.apply` replays a record exactly with MONAI's deterministic transforms
(``Rotate``, ``Zoom``, ``SpatialCrop`` + ``Resize``, ``Flip``); the elastic deformation is MONAI's
``Rand2DElastic``/``Rand3DElastic`` driven by the recorded seed, so it replays too. A record is
JSON-able: a run can log exactly what each image went through.

Example:
    >>> import numpy as np, torch
    >>> aug = Augmenter(AugmentSpec(rotate_deg=10, flip=True), spatial_dims=2)
    >>> rec = aug.sample(np.random.default_rng(0), (32, 32))
    >>> x = torch.rand(1, 32, 32)
    >>> bool(torch.equal(aug.apply(x, rec), aug.apply(x, rec)))
    True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class AugmentSpec:
    """How strongly to augment (0 / False = off). Each operation fires with probability ``prob``.

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

    rotate_deg: float = 0.0
    scale: float = 0.0
    crop: float = 0.0
    flip: bool = False
    intensity: float = 0.0
    noise_std: float = 0.0
    elastic: bool = False
    prob: float = 0.5

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
    def apply(self, x, record: dict[str, Any]):
        """Apply a recorded augmentation (deterministic) to a tensor (C, *spatial); returns a tensor."""
        import torch
        from monai.transforms import Flip, Resize, Rotate, SpatialCrop, Zoom

        size = tuple(x.shape[1:])
        out = torch.as_tensor(x)
        if "rotate_deg" in record:
            angle = [np.deg2rad(a) for a in record["rotate_deg"]]
            out = Rotate(angle=angle[0] if self.spatial_dims == 2 else angle, keep_size=True,
                         padding_mode="zeros")(out)
        if "zoom" in record:
            out = Zoom(zoom=record["zoom"], keep_size=True, padding_mode="constant")(out)
        if "crop" in record:
            start, end = record["crop"]
            out = SpatialCrop(roi_start=start, roi_end=end)(out)
            out = Resize(spatial_size=size, mode="bilinear" if self.spatial_dims == 2 else "trilinear")(out)
        for axis in record.get("flip_axes", []):
            out = Flip(spatial_axis=axis)(out)
        if "elastic_seed" in record:
            out = self._elastic(out, record["elastic_seed"], size)
        if "intensity" in record:
            factor, shift = record["intensity"]
            out = out * factor + shift
        if "noise" in record:
            std, seed = record["noise"]
            gen = torch.Generator().manual_seed(int(seed))
            out = out + std * torch.randn(out.shape, generator=gen, dtype=torch.float32)
        if hasattr(out, "as_tensor"):  # MONAI MetaTensor -> plain tensor
            out = out.as_tensor()
        return out.float()

    def _elastic(self, x, seed: int, size: tuple[int, ...]):
        from monai.transforms import Rand2DElastic, Rand3DElastic

        if self.spatial_dims == 2:
            t = Rand2DElastic(spacing=max(min(size) // 4, 2), magnitude_range=(1.0, 2.0), prob=1.0,
                              padding_mode="zeros")
        else:
            t = Rand3DElastic(sigma_range=(4.0, 6.0), magnitude_range=(20.0, 40.0), prob=1.0,
                              padding_mode="zeros")
        t.set_random_state(seed=seed)
        return t(x)

    def __call__(self, x, rng: np.random.Generator):
        """Sample and apply; returns (augmented tensor, record)."""
        record = self.sample(rng, tuple(x.shape[1:]))
        return self.apply(x, record), record

    def __repr__(self) -> str:
        return f"Augmenter({asdict(self.spec)}, spatial_dims={self.spatial_dims})"
