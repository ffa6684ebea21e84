"""Real LIDC-IDRI nodule shapes inserted into real chest CTs (a virtual clinical trial, SYNTHETIC).

The shape is a radiologists' consensus mask on its own physical grid
(:class:`medanomaly.data.lidc_shapes.NoduleShape`, or anything with the same few attributes:
:class:`ShapeLike`); the background is a real CT (pyradiomics lung1/lung2) with its lung mask from
:func:`medanomaly.preprocess.segment.lung_mask`. The habit is "sample, apply, record":
:func:`sample_insertion` draws an :class:`InsertionSpec` (place, in-plane rotation, mirror, HU),
:func:`apply_insertion` renders it deterministically and returns the new CT, the exact mask and an
:class:`InsertedShape` record.

* **Where**: inside the lung mask eroded by ``pleura_mm`` (the nodule never crosses the pleura or
  the mediastinal border), never on a *large vessel* (lung voxels above ``vessel_hu`` = -300 HU
  that survive an in-plane opening of ``vessel_min_mm`` diameter: vessels thinner than that, and
  noise, are not obstacles), nor in ``exclude`` (the real lesion of the scan grown by a margin), nor
  on ``avoid`` (nodules inserted before). A placement is accepted when every voxel the nodule
  occupies (occupancy > ``footprint_level``) is allowed. Centres are drawn among voxels deep enough
  in the allowed region (a necessary condition computed from the shape), at most ``max_tries``
  times; then :class:`~medanomaly.errors.InputError` says what to relax. Never an endless loop.
* **Partial volume**: the consensus mask is resampled from its physical grid onto the CT grid with
  trilinear interpolation at sub-voxel points (about one per source voxel along each axis; a 5 mm
  CT slice averages its 1-2.5 mm LIDC slices), averaged per CT voxel: the fractional occupancy.
  An in-plane Gaussian point-spread (``psf_mm``) models reconstruction blur, as in
  :mod:`medanomaly.synth.nodules`.
* **Attenuation** by the readers' median texture rating: 1-2 ground glass U(-650, -500) HU; 3
  part-solid (ground glass with a solid core of 30-60 % of the nodule's depth, core U(0, 60) HU);
  4-5 solid U(0, 60) HU. Calcified (median calcification rating 1-5; 6 = absent): the core
  (pattern 3 "solid": the whole nodule) is bright, U(300, 900) HU. Texture U(15, 40) HU and noise
  matched to the local background as :func:`medanomaly.synth.nodules.insert_nodule` does.
* **Truth**: mask = occupancy >= 0.5 (a nodule thinner than a slice, whose occupancy never
  reaches 0.5, keeps the voxels above half its peak occupancy, so it is never empty);
  ``volume_ml`` = summed occupancy x voxel volume (over 150 LIDC shapes in lung1: 0.98-1.03 times
  the shape's own volume, 5th-95th percentile).

Example:
    >>> import numpy as np
    >>> from medanomaly.types import Volume
    >>> ct = Volume(np.full((20, 64, 64), -850, np.int16), spacing=(0.7, 0.7, 2.5))
    >>> lung = ct.with_array(np.ones(ct.shape, np.uint8))
    >>> bg = prepare_background(ct, lung=lung, pleura_mm=2.0)
    >>> shape = SimpleShape.ball(8.0, spacing_xyz=(0.6, 0.6, 1.0))
    >>> spec = sample_insertion(shape, bg, np.random.default_rng(0))
    >>> out, mask, rec = apply_insertion(bg, shape, spec)
    >>> 0.8 < rec.volume_ml / rec.shape_volume_ml < 1.2, rec.kind
    (True, 'solid')
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from medanomaly.errors import InputError
from medanomaly.preprocess.morphology import open_in_plane, physical_disk
from medanomaly.preprocess.resample import crop_zyx
from medanomaly.types import Volume

__all__ = ["Background", "InsertedShape", "InsertionSpec", "ShapeLike", "SimpleShape", "apply_insertion", "crop_background",
           "insert_shape", "insert_shapes", "prepare_background", "render_shape", "sample_appearance",
           "sample_insertion"]


class ShapeLike(Protocol):
    """What insertion needs of a shape (a :class:`~medanomaly.data.lidc_shapes.NoduleShape` has it)."""

    nodule_id: str
    spacing_xyz: tuple[float, float, float]
    ratings: dict[str, float]

    def mask(self, level: float = 0.5) -> np.ndarray: ...


@dataclass(frozen=True, eq=False)
class SimpleShape:
    """A shape given directly as a bool (z, y, x) mask (tests, procedural shapes)."""

    nodule_id: str
    binary: np.ndarray
    spacing_xyz: tuple[float, float, float]
    ratings: dict[str, float] = field(default_factory=lambda: {"texture": 5.0, "calcification": 6.0})

    def mask(self, level: float = 0.5) -> np.ndarray:
        return np.asarray(self.binary, bool)

    @classmethod
    def ball(cls, diameter_mm: float, spacing_xyz: tuple[float, float, float] = (0.5, 0.5, 0.5),
             **ratings: float) -> SimpleShape:
        """A sphere of ``diameter_mm`` on a grid of ``spacing_xyz`` (mm)."""
        r = diameter_mm / 2
        axes = [np.arange(-np.ceil(r / s), np.ceil(r / s) + 1) * s for s in spacing_xyz[::-1]]
        zz, yy, xx = np.meshgrid(*axes, indexing="ij")
        base = {"texture": 5.0, "calcification": 6.0, **ratings}
        return cls(f"ball{diameter_mm:g}", zz**2 + yy**2 + xx**2 <= r**2, tuple(spacing_xyz), base)


@dataclass(frozen=True, eq=False)
class Background:
    """A CT prepared for insertion (built once by :func:`prepare_background`).

    Attributes:
        ct: the CT in HU.
        lung: bool lung mask on ``ct``'s grid.
        allowed: bool voxels a nodule may occupy (eroded lung minus large vessels and exclusions).
        room_mm: distance of each voxel to the nearest voxel that is not allowed, mm.
        candidates: flat indices of the allowed voxels, deepest first (``room_mm`` descending).
        candidate_room_mm: ``room_mm`` of ``candidates`` (descending).
        name: short technical name for messages (no PHI).
        settings: the parameters it was prepared with (for messages and records).
    """

    ct: Volume
    lung: np.ndarray
    allowed: np.ndarray
    room_mm: np.ndarray
    candidates: np.ndarray
    candidate_room_mm: np.ndarray
    name: str = "ct"
    settings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class InsertionSpec:
    """Everything that defines one insertion (sampled by :func:`sample_insertion`).

    Attributes:
        center_index: CT voxel (x, y, z) where the shape's centroid lands (plus ``subvoxel``).
        subvoxel: sub-voxel shift (x, y, z) of the centroid, voxels in [-0.5, 0.5).
        angle_deg: in-plane rotation of the shape, degrees.
        mirror: mirror the shape left-right before rotating.
        kind: "ground_glass", "part_solid" or "solid" (from the texture rating).
        hu: attenuation of the nodule body, HU.
        core_hu / core_fraction: the core (solid part of a part-solid nodule, or calcification):
            HU and the fraction of the nodule's depth it spans (0 = no core, 1 = everything).
        calcified: the core is calcification.
        texture_hu: standard deviation of the lesion's own texture, HU.
        seed: seed of the texture and noise draws.
    """

    center_index: tuple[int, int, int]
    subvoxel: tuple[float, float, float] = (0.0, 0.0, 0.0)
    angle_deg: float = 0.0
    mirror: bool = False
    kind: str = "solid"
    hu: float = 30.0
    core_hu: float = 30.0
    core_fraction: float = 0.0
    calcified: bool = False
    texture_hu: float = 20.0
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class InsertedShape:
    """Ground truth of one inserted real shape (SYNTHETIC insertion of a real outline).

    Attributes:
        nodule_id: the shape's id (LIDC pseudonym-based, no PHI).
        spec: what was applied.
        center_mm: occupancy-weighted centre, LPS mm (x, y, z).
        volume_ml: summed occupancy x voxel volume, mL.
        mask_volume_ml: volume of the >= 0.5 occupancy mask, mL.
        shape_volume_ml: volume of the consensus mask on its own grid, mL.
        n_voxels: voxels in the mask.
        bbox_index: ((z0, y0, x0), (z1, y1, x1)) half-open index box of the mask.
    """

    nodule_id: str
    spec: InsertionSpec
    center_mm: tuple[float, float, float]
    volume_ml: float
    mask_volume_ml: float
    shape_volume_ml: float
    n_voxels: int
    bbox_index: tuple[tuple[int, int, int], tuple[int, int, int]]

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def diameter_mm(self) -> float:
        """Diameter of the sphere of the inserted (continuous) volume, mm."""
        return float((6.0 * self.volume_ml * 1000.0 / np.pi) ** (1.0 / 3.0))

    def to_json(self) -> dict[str, Any]:
        return {"nodule_id": self.nodule_id, "center_mm": [round(c, 3) for c in self.center_mm],
                "volume_ml": self.volume_ml, "mask_volume_ml": self.mask_volume_ml,
                "shape_volume_ml": self.shape_volume_ml, "diameter_mm": self.diameter_mm,
                "n_voxels": self.n_voxels, "bbox_index": [list(b) for b in self.bbox_index],
                "spec": self.spec.to_json(), "synthetic": True}


# ------------------------------------------------------------------------------------- background
def _spacing_zyx(ct: Volume) -> np.ndarray:
    return np.asarray(ct.spacing[::-1], dtype=float)


def _opening_in_plane(mask: np.ndarray, diameter_mm: float, spacing_yx: np.ndarray) -> np.ndarray:
    """Per-slice binary opening with a disk of ``diameter_mm`` (removes thinner structures; the pixels within half
    the diameter, as the lung mask's closing counts them)."""
    if diameter_mm / 2 < min(spacing_yx):  # the disk is its centre pixel alone: nothing is removed
        return mask
    return open_in_plane(mask, physical_disk(diameter_mm / 2, *spacing_yx))


def _grow(mask: np.ndarray, margin_mm: float, spacing_zyx: np.ndarray) -> np.ndarray:
    """``mask`` grown by ``margin_mm`` (Euclidean, mm), computed in its bounding box plus the margin."""
    from scipy import ndimage

    if margin_mm <= 0 or not mask.any():
        return mask
    nz = np.argwhere(mask)
    pad = np.ceil(margin_mm / spacing_zyx).astype(int) + 1
    lo, hi = np.maximum(nz.min(0) - pad, 0), np.minimum(nz.max(0) + pad + 1, mask.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    out = np.zeros_like(mask)
    out[box] = ndimage.distance_transform_edt(~mask[box], sampling=spacing_zyx) <= margin_mm
    return out


def prepare_background(ct: Volume, lung: Volume | None = None, exclude: Volume | None = None,
                       exclude_margin_mm: float = 0.0, pleura_mm: float = 2.0, vessel_hu: float = -300.0,
                       vessel_min_mm: float = 3.0, name: str = "ct") -> Background:
    """Lung mask, large vessels and the allowed region of one CT (see the module docstring).

    Args:
        ct: chest CT in HU.
        lung: lung mask on ``ct``'s grid (any label > 0 is lung); default
            :func:`medanomaly.preprocess.segment.lung_mask` (several seconds on a full CT).
        exclude: mask of regions a nodule must not touch (a real lesion), grown by ``exclude_margin_mm``.
        pleura_mm: erosion of the lung mask, mm (distance kept from pleura and mediastinum).
        vessel_hu: HU above which lung voxels are vessels (or other solid tissue).
        vessel_min_mm: vessels thinner than this (in-plane, mm) are not obstacles.
        name: technical name used in messages.

    Raises:
        InputError: a lung or exclusion mask on another grid, or nothing left to place a nodule in.
    """
    from scipy import ndimage

    if lung is None:
        from medanomaly.preprocess.segment import lung_mask

        lung = lung_mask(ct)
    for what, vol in (("lung", lung), ("exclusion", exclude)):
        if vol is not None and not vol.same_grid(ct):
            raise InputError(f"{name}: the {what} mask is not on the CT's grid")
    spacing = _spacing_zyx(ct)
    lung_arr = np.asarray(lung.array) > 0
    if not lung_arr.any():
        raise InputError(f"{name}: the lung mask is empty; cannot place a nodule")
    # Work inside the lungs' bounding box (one voxel of margin): the EDTs cost a fraction of the full CT.
    nz = np.argwhere(lung_arr)
    lo, hi = np.maximum(nz.min(0) - 1, 0), np.minimum(nz.max(0) + 2, lung_arr.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    lung_box = np.pad(lung_arr[box], 1)
    hu = np.pad(np.asarray(ct.array[box], dtype=np.float32), 1, constant_values=-1000.0)
    vessels = _opening_in_plane((hu > vessel_hu) & lung_box, vessel_min_mm, spacing[1:])
    allowed_box = ndimage.distance_transform_edt(lung_box, sampling=spacing) > pleura_mm
    allowed_box &= ~vessels
    allowed_box = allowed_box[1:-1, 1:-1, 1:-1]
    if exclude is not None and np.asarray(exclude.array).any():
        allowed_box &= ~_grow(np.asarray(exclude.array) > 0, exclude_margin_mm, spacing)[box]
    if not allowed_box.any():
        raise InputError(f"{name}: no lung voxel left after eroding the lung by {pleura_mm} mm and excluding "
                         f"vessels > {vessel_hu:g} HU; the lung is too small or the exclusions too wide")
    allowed = np.zeros(lung_arr.shape, bool)
    allowed[box] = allowed_box
    room = np.zeros(lung_arr.shape, np.float32)
    room[box] = ndimage.distance_transform_edt(np.pad(allowed_box, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    flat = np.flatnonzero(allowed)
    depth = room.ravel()[flat]
    order = np.argsort(-depth, kind="stable")
    settings = {"pleura_mm": pleura_mm, "vessel_hu": vessel_hu, "vessel_min_mm": vessel_min_mm,
                "exclude_margin_mm": exclude_margin_mm}
    return Background(ct, lung_arr, allowed, room, flat[order], depth[order], name, settings)


def crop_background(background: Background, center_index: tuple[int, int, int],
                    half_mm: float) -> tuple[Background, tuple[int, int, int]]:
    """The part of a background within ``half_mm`` of voxel ``center_index`` (x, y, z), so that an
    insertion copies a small array instead of the whole CT; returns it with the (x, y, z) index of
    its first voxel in the original (subtract it from a spec's ``center_index``). The crop carries
    no placement candidates: sample on the full background, apply on the crop."""
    ct = background.ct
    centre = np.asarray(center_index[::-1], int)
    half = np.ceil(half_mm / _spacing_zyx(ct)).astype(int)
    lo = np.maximum(centre - half, 0)
    hi = np.minimum(centre + half + 1, np.asarray(ct.shape))
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    sub = crop_zyx(ct, lo, hi)  # origin kept: the crop's voxels stay at their LPS position
    none = np.zeros(0, np.int64)  # a crop is for applying a sampled spec, not for sampling
    cropped = Background(sub, background.lung[box], background.allowed[box], background.room_mm[box], none,
                         none.astype(np.float32), background.name, dict(background.settings))
    return cropped, tuple(int(v) for v in lo[::-1])


# ------------------------------------------------------------------------------------- rendering
def _core_mask(mask: np.ndarray, spacing_zyx: np.ndarray, fraction: float) -> np.ndarray:
    """The inner ``fraction`` of the mask's depth (distance to its border); 1 = the whole mask."""
    from scipy import ndimage

    if fraction <= 0:
        return np.zeros_like(mask)
    if fraction >= 1:
        return mask.copy()
    depth = ndimage.distance_transform_edt(np.pad(mask, 1), sampling=spacing_zyx)[1:-1, 1:-1, 1:-1]
    return mask & (depth >= (1.0 - fraction) * depth.max())


def render_shape(shape: ShapeLike, spacing_xyz: tuple[float, float, float], spec: InsertionSpec,
                 psf_mm: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Occupancy and core occupancy (0..1) of ``shape`` on a local CT-spaced grid.

    The grid is (2h+1) voxels per axis, its centre voxel holding the shape's centroid shifted by
    ``spec.subvoxel``; rotation and mirror follow ``spec``.

    Returns:
        (occupancy, core occupancy), both (z, y, x) float32 of the same odd shape.
    """
    from scipy import ndimage

    src = np.pad(np.asarray(shape.mask(), bool), 1)  # zeros around: interpolation fades out at the edge
    if not src.any():
        raise InputError(f"shape {shape.nodule_id}: empty mask")
    src_sp = np.asarray(shape.spacing_xyz, float)[::-1]  # (z, y, x)
    dst_sp = np.asarray(spacing_xyz, float)[::-1]
    core = _core_mask(src, src_sp, spec.core_fraction)
    centroid = np.argwhere(src).mean(axis=0)  # source index (z, y, x)
    corners = (np.argwhere(src) - centroid) * src_sp
    reach = np.abs(corners).max(axis=0) + src_sp  # mm, generous for rotation below
    reach[1:] = np.hypot(reach[1], reach[2])
    half = np.ceil((reach + 3 * psf_mm) / dst_sp).astype(int) + 1
    n_sub = np.clip(np.ceil(dst_sp / src_sp), 1, 8).astype(int)
    axes = []
    for k in range(3):
        centres = np.arange(-half[k], half[k] + 1) - spec.subvoxel[2 - k]
        offs = (np.arange(n_sub[k]) + 0.5) / n_sub[k] - 0.5
        axes.append(((centres[:, None] + offs[None]) * dst_sp[k]).ravel())
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    a = np.deg2rad(spec.angle_deg)
    xs = np.cos(a) * xx + np.sin(a) * yy  # inverse rotation
    ys = -np.sin(a) * xx + np.cos(a) * yy
    if spec.mirror:
        xs = -xs
    coords = np.stack([zz / src_sp[0] + centroid[0], ys / src_sp[1] + centroid[1], xs / src_sp[2] + centroid[2]])
    size = 2 * half + 1
    shape6 = (size[0], n_sub[0], size[1], n_sub[1], size[2], n_sub[2])
    out = []
    for m in (src, core):
        if m is core and not core.any():
            out.append(np.zeros_like(out[0]))
            continue
        vals = ndimage.map_coordinates(m.astype(np.float32), coords.reshape(3, -1), order=1, mode="constant")
        occ = vals.reshape(shape6).mean(axis=(1, 3, 5))
        if psf_mm > 0:
            occ = ndimage.gaussian_filter(occ, (0.0, psf_mm / dst_sp[1], psf_mm / dst_sp[2]))
        out.append(np.clip(occ, 0.0, 1.0).astype(np.float32))
    return out[0], out[1]


# ------------------------------------------------------------------------------------- sampling
def sample_appearance(ratings: dict[str, float], rng: np.random.Generator) -> dict[str, Any]:
    """HU parameters from the readers' median texture and calcification ratings (module docstring)."""
    texture = float(ratings.get("texture", 5.0))
    kind = "ground_glass" if texture <= 2 else ("part_solid" if texture < 4 else "solid")
    solid_hu = float(rng.uniform(0.0, 60.0))
    ggo_hu = float(rng.uniform(-650.0, -500.0))
    out: dict[str, Any] = {"kind": kind, "hu": solid_hu if kind == "solid" else ggo_hu, "core_hu": solid_hu,
                           "core_fraction": float(rng.uniform(0.3, 0.6)) if kind == "part_solid" else 0.0,
                           "calcified": False, "texture_hu": float(rng.uniform(15.0, 40.0))}
    calcification = float(ratings.get("calcification", 6.0))
    if calcification < 6:
        whole = int(round(calcification)) == 3  # pattern 3 = solid calcification
        out.update(calcified=True, core_hu=float(rng.uniform(300.0, 900.0)),
                   core_fraction=1.0 if whole else float(rng.uniform(0.3, 0.6)))
        if kind != "solid":
            out["hu"] = solid_hu
    return out


def _local_box(center: np.ndarray, half: np.ndarray, shape: tuple[int, ...]) -> tuple[slice, ...] | None:
    lo, hi = center - half, center + half + 1
    if np.any(lo < 0) or np.any(hi > np.asarray(shape)):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def sample_insertion(shape: ShapeLike, background: Background, rng: np.random.Generator, max_tries: int = 200,
                     avoid: np.ndarray | None = None, footprint_level: float = 0.1,
                     psf_mm: float = 0.5) -> InsertionSpec:
    """Draw where and how to insert ``shape`` (see the module docstring for the placement rules).

    Raises:
        InputError: no allowed placement after ``max_tries`` tries (or none possible at all).
    """
    from scipy import ndimage

    if max_tries < 1:
        raise InputError(f"max_tries must be >= 1, got {max_tries}")
    ct = background.ct
    params = sample_appearance(shape.ratings, rng)
    spec = InsertionSpec((0, 0, 0), tuple(float(v) for v in rng.uniform(-0.5, 0.5, 3)),
                         float(rng.uniform(0.0, 360.0)), bool(rng.integers(2)), seed=int(rng.integers(2**31 - 1)),
                         **params)
    occ, _ = render_shape(shape, ct.spacing, spec, psf_mm)
    foot = occ > footprint_level
    half = (np.asarray(occ.shape) - 1) // 2
    spacing = _spacing_zyx(ct)
    depth = float(ndimage.distance_transform_edt(np.pad(foot, 1), sampling=spacing)[tuple(half + 1)])
    blocked = None if avoid is None else np.asarray(avoid, bool)
    # necessary condition: the centre is at least as deep in the allowed region as in the footprint
    n_pool = int(np.searchsorted(-background.candidate_room_mm, -(depth - float(spacing.max())), side="right"))
    size_mm = float(np.cbrt(foot.sum() * np.prod(spacing) * 6 / np.pi))
    what = f"{background.name}: could not place nodule {shape.nodule_id} ({size_mm:.1f} mm)"
    hint = (f"lung too small or exclusions too wide (pleura {background.settings.get('pleura_mm')} mm, "
            f"vessels > {background.settings.get('vessel_hu')} HU)")
    if n_pool == 0:
        raise InputError(f"{what}: no lung region is deep enough; {hint}")
    for _ in range(max_tries):
        centre = np.array(np.unravel_index(background.candidates[rng.integers(n_pool)], ct.shape))
        box = _local_box(centre, half, ct.shape)
        if box is None or not background.allowed[box][foot].all():
            continue
        if blocked is not None and blocked[box][foot].any():
            continue
        return replace(spec, center_index=tuple(int(v) for v in centre[::-1]))
    raise InputError(f"{what} after {max_tries} tries; {hint}")


# ------------------------------------------------------------------------------------- applying
def _blend(background_hu: np.ndarray, occ: np.ndarray, core_occ: np.ndarray, spec: InsertionSpec,
           spacing_zyx: np.ndarray, sigma_bg: float) -> np.ndarray:
    """Nodule HU blended by occupancy, with texture and background-matched noise (as synth.nodules)."""
    from scipy import ndimage

    rng = np.random.default_rng(spec.seed)
    texture = ndimage.gaussian_filter(rng.normal(size=occ.shape), (0.0, 1.0 / spacing_zyx[1], 1.0 / spacing_zyx[2]))
    texture = texture / max(float(texture.std()), 1e-6) * spec.texture_hu
    noise = rng.normal(size=occ.shape) * sigma_bg
    lesion = spec.hu + (spec.core_hu - spec.hu) * np.clip(core_occ / np.maximum(occ, 1e-6), 0, 1) + texture
    f = np.clip(occ, 0.0, 1.0)
    return background_hu + f * (lesion - background_hu) + np.sqrt(1.0 - (1.0 - f) ** 2) * noise


def apply_insertion(background: Background, shape: ShapeLike, spec: InsertionSpec,
                    psf_mm: float = 0.5) -> tuple[Volume, Volume, InsertedShape]:
    """Insert ``shape`` as ``spec`` says: (CT with the nodule, uint8 mask, record). Deterministic.

    Raises:
        InputError: the nodule would leave the CT.
    """
    from medanomaly.synth.nodules import background_noise_hu

    ct = background.ct
    occ, core_occ = render_shape(shape, ct.spacing, spec, psf_mm)
    half = (np.asarray(occ.shape) - 1) // 2
    box = _local_box(np.asarray(spec.center_index[::-1]), half, ct.shape)
    if box is None:
        raise InputError(f"{background.name}: nodule {shape.nodule_id} at voxel {spec.center_index} leaves the CT")
    spacing = _spacing_zyx(ct)
    sigma_bg = background_noise_hu(ct, box, background.lung)
    out = np.array(ct.array, copy=True)
    blended = _blend(np.asarray(ct.array[box], np.float32), occ, core_occ, spec, spacing, sigma_bg)
    if np.issubdtype(out.dtype, np.integer):
        info = np.iinfo(out.dtype)
        blended = np.clip(np.rint(blended), info.min, info.max)
    out[box] = blended.astype(out.dtype)
    local = occ >= (0.5 if occ.max() >= 0.5 else 0.5 * float(occ.max()))  # thinner than a slice: its core
    mask = np.zeros(ct.shape, np.uint8)
    mask[box] = local
    offset = np.array([s.start for s in box])
    zyx = np.argwhere(occ > 0)
    w = occ[occ > 0]
    centre_zyx = (zyx * w[:, None]).sum(axis=0) / w.sum() + offset
    nz = np.argwhere(local)
    bbox = ((tuple(int(v) for v in nz.min(0) + offset), tuple(int(v) for v in nz.max(0) + offset + 1))
            if len(nz) else ((0, 0, 0), (0, 0, 0)))
    shape_ml = float(np.asarray(shape.mask()).sum() * np.prod(shape.spacing_xyz) / 1000.0)
    record = InsertedShape(shape.nodule_id, spec, tuple(float(c) for c in ct.index_to_physical(centre_zyx[::-1])),
                           float(occ.sum() * ct.voxel_volume_mm3 / 1000.0),
                           float(local.sum() * ct.voxel_volume_mm3 / 1000.0), shape_ml, int(local.sum()), bbox)
    return ct.with_array(out, synthetic=True), ct.with_array(mask), record


def insert_shape(background: Background, shape: ShapeLike, rng: np.random.Generator,
                 **kwargs: Any) -> tuple[Volume, Volume, InsertedShape]:
    """Sample then apply one insertion (``kwargs`` go to :func:`sample_insertion`)."""
    psf = kwargs.get("psf_mm", 0.5)
    return apply_insertion(background, shape, sample_insertion(shape, background, rng, **kwargs), psf_mm=psf)


def insert_shapes(background: Background, shapes: list[ShapeLike], rng: np.random.Generator,
                  gap_mm: float = 5.0, **kwargs: Any) -> tuple[Volume, Volume, list[InsertedShape]]:
    """Insert several shapes, never closer than ``gap_mm`` to each other; mask labels 1..n.

    Raises:
        InputError: a shape cannot be placed (the message names it).
    """
    labels = np.zeros(background.ct.shape, np.uint8)
    avoid = np.zeros(background.ct.shape, bool)  # the inserted nodules grown by gap_mm
    records: list[InsertedShape] = []
    current = background
    spacing = _spacing_zyx(background.ct)
    for shape in shapes:
        ct, mask, rec = insert_shape(current, shape, rng, avoid=avoid if records else None, **kwargs)
        records.append(rec)
        inside = np.asarray(mask.array) > 0
        labels[inside & (labels == 0)] = len(records)
        avoid |= _grow(inside, gap_mm, spacing)  # in the nodule's box: a full-CT distance map took ~1.5 s each
        current = replace(current, ct=ct)
    return current.ct, background.ct.with_array(labels), records
