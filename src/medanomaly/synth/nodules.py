"""Simulated lung nodules inserted into the parenchyma of a real CT (a virtual clinical trial).

A nodule is described by a :class:`NoduleSpec` (type, shape, size, HU, orientation, seed). The
deterministic :func:`render_nodule` turns it into an occupancy map on the CT's own voxel grid, and
:func:`insert_nodule` blends it into the scan; :func:`sample_nodule_spec` draws random parameters
(the "sample, then apply, then record" habit), so every simulated lesion is reproducible from its
spec alone.

Physics, kept simple and explicit:

* **Shape**: an implicit radial function ``r(u) = R * g(u)`` on the unit sphere, after an
  anisotropic scaling (ellipsoids, axis ratios 0.6-1) and a random rotation. ``g`` adds smooth
  lobes (lobulated) or narrow spikes (spiculated) as powers of ``max(0, u.v_k)``.
* **Partial volume**: each voxel's occupancy is the fraction of ``supersample`` sub-points (more
  along the slice axis: a 5 mm slice averages over 5 mm) inside the shape, then a Gaussian
  in-plane point-spread (sigma ``psf_mm``) models the reconstruction blur.
* **Attenuation**: solid nodules -100..+100 HU; ground glass -750..-300 HU; part-solid = ground
  glass with a solid core (30-70 % of the radius). A mild texture (Gaussian, 15-40 HU) is added.
* **Noise matched to the background**: the original voxel noise is scaled down by ``1 - f`` inside
  the lesion, so noise of the local background's standard deviation (robust MAD of a high-pass of
  the surrounding parenchyma) is added back with weight ``sqrt(1 - (1 - f)^2)``; texture
  statistics inside and outside the lesion therefore match.
* **Truth**: ``mask`` = voxels with occupancy >= 0.5; ``volume_ml`` = summed occupancy x voxel
  volume (the continuous volume, independent of the voxel threshold); the centre in LPS mm.

Example:
    >>> import numpy as np
    >>> from medanomaly.types import Volume
    >>> ct = Volume(np.full((12, 64, 64), -850, np.int16), spacing=(0.7, 0.7, 2.5))
    >>> spec = NoduleSpec(center_mm=(22.0, 22.0, 15.0), diameter_mm=8.0, kind="solid", hu=40.0)
    >>> out, mask, truth = insert_nodule(ct, spec)
    >>> 0.2 < truth.volume_ml * 1000 / (4 / 3 * np.pi * 4**3) < 1.5
    True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from medanomaly.types import Volume

NoduleKind = Literal["solid", "part_solid", "ground_glass"]
NoduleShape = Literal["sphere", "ellipsoid", "lobulated", "spiculated"]

KINDS: tuple[str, ...] = ("solid", "part_solid", "ground_glass")
SHAPES: tuple[str, ...] = ("sphere", "ellipsoid", "lobulated", "spiculated")

__all__ = [
    "KINDS",
    "SHAPES",
    "InsertedNodule",
    "NoduleSpec",
    "background_noise_hu",
    "insert_nodule",
    "insert_nodules",
    "nodule_reach_mm",
    "render_nodule",
    "sample_nodule_spec",
]


@dataclass(frozen=True)
class NoduleSpec:
    """Everything that defines one simulated nodule (all physical units).

    Attributes:
        center_mm: centre in LPS mm (x, y, z).
        diameter_mm: equivalent diameter of the base shape before lobes/spikes, mm.
        kind: "solid", "part_solid" or "ground_glass".
        shape: "sphere", "ellipsoid", "lobulated" or "spiculated".
        hu: attenuation of the nodule body (ground-glass part for part-solid), HU.
        core_hu: attenuation of the solid core of a part-solid nodule, HU.
        core_fraction: core radius / nodule radius for part-solid nodules.
        axes: relative semi-axis lengths (x, y, z) before rotation (1, 1, 1 for a sphere).
        rotation: 3x3 rotation matrix as nested tuples (row-major).
        lobes: ((vx, vy, vz, amplitude, power), ...) bumps on the radial function.
        texture_hu: standard deviation of the lesion's own texture, HU.
        seed: seed of the texture/noise draws.
    """

    center_mm: tuple[float, float, float]
    diameter_mm: float
    kind: str = "solid"
    shape: str = "sphere"
    hu: float = 30.0
    core_hu: float = 30.0
    core_fraction: float = 0.0
    axes: tuple[float, float, float] = (1.0, 1.0, 1.0)
    rotation: tuple[tuple[float, ...], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    lobes: tuple[tuple[float, float, float, float, float], ...] = ()
    texture_hu: float = 20.0
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class InsertedNodule:
    """Ground truth of one inserted nodule.

    Attributes:
        spec: the parameters it was rendered from.
        center_mm: occupancy-weighted centre, LPS mm.
        volume_ml: continuous volume (summed occupancy x voxel volume), mL.
        mask_volume_ml: volume of the >= 0.5 occupancy mask, mL.
        n_voxels: voxels in the mask.
        bbox_index: ((z0, y0, x0), (z1, y1, x1)) half-open index box of the mask.
    """

    spec: NoduleSpec
    center_mm: tuple[float, float, float]
    volume_ml: float
    mask_volume_ml: float
    n_voxels: int
    bbox_index: tuple[tuple[int, int, int], tuple[int, int, int]] = field(default=((0, 0, 0), (0, 0, 0)))

    @property
    def radius_mm(self) -> float:
        """Radius of the sphere of the same continuous volume, mm."""
        return float((3.0 * self.volume_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0))

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.spec.kind,
            "shape": self.spec.shape,
            "diameter_mm": self.spec.diameter_mm,
            "center_mm": [round(c, 3) for c in self.center_mm],
            "volume_ml": self.volume_ml,
            "mask_volume_ml": self.mask_volume_ml,
            "n_voxels": self.n_voxels,
            "spec": self.spec.to_json(),
            "synthetic": True,
        }


# ------------------------------------------------------------------------------------- sampling
def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def sample_nodule_spec(
    rng: np.random.Generator,
    center_mm: tuple[float, float, float],
    diameter_range_mm: tuple[float, float] = (3.0, 30.0),
    kinds: tuple[str, ...] = KINDS,
    shapes: tuple[str, ...] = SHAPES,
    kind_p: tuple[float, ...] | None = (0.6, 0.2, 0.2),
) -> NoduleSpec:
    """Draw random nodule parameters at ``center_mm``.

    Diameters are log-uniform in ``diameter_range_mm`` (small nodules are commoner). HU:
    solid U(-100, 100); ground glass U(-750, -300); part-solid core U(-100, 100).
    """
    p = None if kind_p is None or len(kind_p) != len(kinds) else np.asarray(kind_p) / sum(kind_p)
    kind = str(rng.choice(list(kinds), p=p))
    shape = str(rng.choice(list(shapes)))
    lo, hi = diameter_range_mm
    diameter = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    solid_hu = float(rng.uniform(-100.0, 100.0))
    ggo_hu = float(rng.uniform(-750.0, -300.0))
    axes = (1.0, 1.0, 1.0)
    if shape != "sphere":
        axes = tuple(float(a) for a in rng.uniform(0.6, 1.0, size=3))
        axes = tuple(a / float(np.prod(axes)) ** (1 / 3) for a in axes)  # keep the volume
    lobes: list[tuple[float, float, float, float, float]] = []
    if shape == "lobulated":
        for _ in range(int(rng.integers(3, 7))):
            v = _unit(rng)
            lobes.append((*map(float, v), float(rng.uniform(0.15, 0.35)), float(rng.uniform(2.0, 6.0))))
    elif shape == "spiculated":
        for _ in range(int(rng.integers(4, 11))):
            v = _unit(rng)
            lobes.append((*map(float, v), float(rng.uniform(0.4, 1.0)), float(rng.uniform(80.0, 300.0))))
    return NoduleSpec(
        center_mm=tuple(float(c) for c in center_mm),  # type: ignore[arg-type]
        diameter_mm=diameter,
        kind=kind,
        shape=shape,
        hu=solid_hu if kind == "solid" else ggo_hu,
        core_hu=solid_hu,
        core_fraction=float(rng.uniform(0.3, 0.7)) if kind == "part_solid" else 0.0,
        axes=axes,  # type: ignore[arg-type]
        rotation=tuple(tuple(float(x) for x in row) for row in _random_rotation(rng)),
        lobes=tuple(lobes),
        texture_hu=float(rng.uniform(15.0, 40.0)),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


# ------------------------------------------------------------------------------------ rendering
def _radial_gain(u: np.ndarray, lobes: tuple[tuple[float, ...], ...]) -> np.ndarray:
    """g(u) for unit vectors u (N, 3): 1 + sum_k a_k * max(0, u.v_k)^p_k."""
    gain = np.ones(len(u), dtype=u.dtype)
    for vx, vy, vz, amp, power in lobes:
        dot = np.clip(u @ np.array([vx, vy, vz], dtype=u.dtype), 0.0, None)
        gain += amp * dot**power
    return gain


def nodule_reach_mm(spec: NoduleSpec) -> float:
    """Radius (mm) of a sphere sure to contain the shape."""
    if spec.lobes:
        probe = np.random.default_rng(0).normal(size=(4000, 3))
        probe = np.concatenate([probe / np.linalg.norm(probe, axis=1, keepdims=True),
                                np.array([lobe[:3] for lobe in spec.lobes])])
        max_gain = float(_radial_gain(probe, spec.lobes).max()) * 1.05
    else:
        max_gain = 1.0
    return 0.5 * spec.diameter_mm * max(spec.axes) * max_gain + 1.0


def render_nodule(
    grid: Volume,
    spec: NoduleSpec,
    supersample: tuple[int, int, int] | None = None,
    psf_mm: float = 0.5,
) -> tuple[tuple[slice, slice, slice], np.ndarray, np.ndarray]:
    """Occupancy (0..1) and solid-core occupancy of ``spec`` on ``grid``'s voxels, in a local box.

    Args:
        grid: the volume whose grid (spacing, origin, direction) the nodule is rendered on.
        spec: the nodule.
        supersample: sub-points per voxel along (x, y, z); default about one per 0.5 mm.
        psf_mm: in-plane Gaussian point-spread sigma (mm) applied to the occupancy.

    Returns:
        (box, occupancy, core_occupancy): ``box`` is a (z, y, x) slice tuple into the grid; both
        maps have the box's shape. Occupancy is the partial-volume fraction of each voxel.
    """
    from scipy import ndimage

    spacing = np.asarray(grid.spacing)
    if supersample is None:
        step = max(0.5, spec.diameter_mm / 25.0)  # sub-point spacing, mm: finer for small nodules
        supersample = tuple(int(np.clip(np.ceil(s / step), 1, 12)) for s in spacing)  # type: ignore[assignment]
    reach = nodule_reach_mm(spec) + 3 * psf_mm
    centre_idx = grid.physical_to_index(spec.center_mm)  # (x, y, z)
    half = np.ceil(reach / spacing) + 1
    lo = np.maximum(np.floor(centre_idx - half).astype(int), 0)
    hi = np.minimum(np.ceil(centre_idx + half).astype(int) + 1, np.array(grid.size_xyz))
    if np.any(hi <= lo):
        empty = (slice(0, 0),) * 3
        return empty, np.zeros((0, 0, 0), np.float32), np.zeros((0, 0, 0), np.float32)
    # Sub-voxel sample offsets in index units, centred in each voxel.
    offs = [(np.arange(n) + 0.5) / n - 0.5 for n in supersample]
    ix = (np.arange(lo[0], hi[0])[:, None] + offs[0][None, :]).ravel()
    iy = (np.arange(lo[1], hi[1])[:, None] + offs[1][None, :]).ravel()
    iz = (np.arange(lo[2], hi[2])[:, None] + offs[2][None, :]).ravel()
    zz, yy, xx = np.meshgrid(iz, iy, ix, indexing="ij")
    idx = np.stack([xx.ravel(), yy.ravel(), zz.ravel()], axis=1)
    pts = (grid.index_to_physical(idx) - np.asarray(spec.center_mm)).astype(np.float32)  # mm, LPS
    rot = np.asarray(spec.rotation, dtype=np.float32)
    local = (pts @ rot) / np.asarray(spec.axes, dtype=np.float32)  # nodule frame, unscaled
    dist = np.linalg.norm(local, axis=1)
    unit = local / np.maximum(dist, 1e-9)[:, None]
    radius = 0.5 * spec.diameter_mm * _radial_gain(unit, spec.lobes)
    inside = (dist <= radius).astype(np.float32)
    core = (dist <= spec.core_fraction * 0.5 * spec.diameter_mm).astype(np.float32)
    nz, ny, nx = hi[2] - lo[2], hi[1] - lo[1], hi[0] - lo[0]
    sx, sy, sz = supersample
    shape6 = (nz, sz, ny, sy, nx, sx)
    occ = inside.reshape(shape6).mean(axis=(1, 3, 5))
    core_occ = core.reshape(shape6).mean(axis=(1, 3, 5))
    if psf_mm > 0:
        sigma = (0.0, psf_mm / spacing[1], psf_mm / spacing[0])
        occ = ndimage.gaussian_filter(occ, sigma)
        core_occ = ndimage.gaussian_filter(core_occ, sigma)
    box = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
    return box, occ.astype(np.float32), core_occ.astype(np.float32)


def background_noise_hu(ct: Volume, box: tuple[slice, slice, slice], lung: np.ndarray | None = None) -> float:
    """Robust noise standard deviation (HU) of the parenchyma around ``box``.

    The high-pass residual (image minus its 3x3 in-plane median) is measured by MAD inside
    ``lung`` (when given) in a box twice as large; floor 5 HU.
    """
    from scipy import ndimage

    grown = []
    for sl, n in zip(box, ct.shape, strict=True):
        width = max(sl.stop - sl.start, 4)
        grown.append(slice(max(sl.start - width // 2, 0), min(sl.stop + width // 2, n)))
    region = np.asarray(ct.array[tuple(grown)], dtype=np.float32)
    resid = region - ndimage.median_filter(region, size=(1, 3, 3))
    if lung is not None:
        keep = np.asarray(lung[tuple(grown)]) > 0
        values = resid[keep] if keep.sum() > 50 else resid.ravel()
    else:
        values = resid.ravel()
    mad = float(np.median(np.abs(values - np.median(values))))
    return max(1.4826 * mad, 5.0)


def insert_nodule(
    ct: Volume,
    spec: NoduleSpec,
    lung: Volume | None = None,
    psf_mm: float = 0.5,
) -> tuple[Volume, Volume, InsertedNodule]:
    """Insert one nodule into a CT: returns (new CT in HU, uint8 truth mask, truth record).

    The CT keeps its dtype and geometry; the mask is 1 where occupancy >= 0.5.
    """
    box, occ, core_occ = render_nodule(ct, spec, psf_mm=psf_mm)
    out = np.array(ct.array, copy=True)
    mask = np.zeros(ct.shape, np.uint8)
    if occ.size == 0 or occ.max() < 0.5:
        truth = InsertedNodule(spec, spec.center_mm, 0.0, 0.0, 0)
        return ct.with_array(out), ct.with_array(mask), truth
    rng = np.random.default_rng(spec.seed)
    sigma_bg = background_noise_hu(ct, box, None if lung is None else lung.array)
    background = np.asarray(ct.array[box], dtype=np.float32)
    from scipy import ndimage

    spacing = np.asarray(ct.spacing)
    texture = ndimage.gaussian_filter(rng.normal(size=occ.shape), (0.0, 1.0 / spacing[1], 1.0 / spacing[0]))
    texture = texture / max(float(texture.std()), 1e-6) * spec.texture_hu
    noise = rng.normal(size=occ.shape) * sigma_bg
    lesion_hu = spec.hu + (spec.core_hu - spec.hu) * np.clip(core_occ / np.maximum(occ, 1e-6), 0, 1) + texture
    f = np.clip(occ, 0.0, 1.0)
    blended = background + f * (lesion_hu - background) + np.sqrt(1.0 - (1.0 - f) ** 2) * noise
    info = np.iinfo(out.dtype) if np.issubdtype(out.dtype, np.integer) else None
    if info is not None:
        blended = np.clip(np.rint(blended), info.min, info.max)
    out[box] = blended.astype(out.dtype)
    local_mask = (occ >= 0.5).astype(np.uint8)
    mask[box] = local_mask
    zyx = np.argwhere(occ > 0)
    weights = occ[occ > 0]
    centre_zyx = (zyx * weights[:, None]).sum(axis=0) / weights.sum() + np.array([s.start for s in box])
    centre = tuple(float(c) for c in ct.index_to_physical(centre_zyx[::-1]))
    nz = np.argwhere(local_mask)
    offset = np.array([s.start for s in box])
    bbox = (tuple(int(v) for v in nz.min(0) + offset), tuple(int(v) for v in nz.max(0) + offset + 1))
    truth = InsertedNodule(
        spec=spec,
        center_mm=centre,  # type: ignore[arg-type]
        volume_ml=float(occ.sum() * ct.voxel_volume_mm3 / 1000.0),
        mask_volume_ml=float(local_mask.sum() * ct.voxel_volume_mm3 / 1000.0),
        n_voxels=int(local_mask.sum()),
        bbox_index=bbox,  # type: ignore[arg-type]
    )
    return ct.with_array(out, synthetic=True), ct.with_array(mask), truth


def insert_nodules(
    ct: Volume,
    specs: list[NoduleSpec],
    lung: Volume | None = None,
    psf_mm: float = 0.5,
) -> tuple[Volume, Volume, list[InsertedNodule]]:
    """Insert several nodules; the mask labels them 1..n in order (0 = background).

    Nodules that render to an empty mask (too small for the grid) are dropped from the truth.
    """
    mask = np.zeros(ct.shape, np.uint8)
    truths: list[InsertedNodule] = []
    current = ct
    for spec in specs:
        current, one, truth = insert_nodule(current, spec, lung=lung, psf_mm=psf_mm)
        if truth.n_voxels == 0:
            continue
        truths.append(truth)
        mask[(one.array > 0) & (mask == 0)] = len(truths)
    return current.with_array(current.array, synthetic=True), ct.with_array(mask), truths
