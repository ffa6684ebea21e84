"""Simulated training and held-out scans: nodules inserted into one lung of a real chest CT.

Split by **lung halves**: training scans get nodules only in one lung (default the right lung,
label 1) and training patches are drawn only around that lung; held-out scans get nodules only in
the other lung, and held-out detection is searched and scored only there. The real lesion of a
source scan, grown by ``exclude_margin_mm`` (default 20 mm), is excluded from both: no simulated
nodule is placed within reach of it, no training patch touches it, and held-out findings inside it
are ignored (neither true nor false positive).

Example:
    >>> import numpy as np
    >>> from medanomaly.types import Volume
    >>> lung = np.zeros((6, 40, 40), np.uint8); lung[:, 5:35, 5:35] = 1
    >>> ct = Volume(np.where(lung > 0, -850, 40).astype(np.int16), spacing=(1.0, 1.0, 2.0))
    >>> scan = simulate_scan(SourceScan("toy", ct, ct.with_array(lung)), side=1, n_nodules=1,
    ...                      rng=np.random.default_rng(0), diameter_range_mm=(4.0, 6.0))
    >>> len(scan.truths)
    1
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medanomaly.synth.nodules import InsertedNodule, NoduleSpec, nodule_reach_mm, insert_nodules, sample_nodule_spec
from medanomaly.types import Volume

__all__ = ["SimScan", "SourceScan", "exclusion_zone", "load_source", "simulate_scan"]


@dataclass(frozen=True, eq=False)
class SourceScan:
    """A real chest CT used as background: image (HU), lung mask (1 right, 2 left), exclusion zone.

    Attributes:
        name: short technical name (no PHI), e.g. "lung1".
        ct: the CT in HU.
        lung: lung mask on ``ct``'s grid.
        exclude: uint8 mask of regions excluded from simulation and training (real lesions grown
            by the margin), or None.
        lesion: the real lesion mask when known (for reporting), or None.
    """

    name: str
    ct: Volume
    lung: Volume
    exclude: Volume | None = None
    lesion: Volume | None = None


@dataclass(frozen=True, eq=False)
class SimScan:
    """One simulated scan: the CT with nodules, their label mask (1..n) and truth records."""

    name: str
    source: SourceScan
    side: int
    ct: Volume
    labels: Volume
    truths: list[InsertedNodule] = field(default_factory=list)


def exclusion_zone(lesion: Volume, margin_mm: float) -> Volume:
    """``lesion`` grown by ``margin_mm`` (Euclidean, physical spacing): uint8 mask."""
    from scipy import ndimage

    binary = np.asarray(lesion.array) > 0
    if not binary.any():
        return lesion.with_array(np.zeros(lesion.shape, np.uint8))
    sx, sy, sz = lesion.spacing
    # Work in the lesion's bounding box grown by the margin (a full-volume EDT is 10x slower).
    idx = np.argwhere(binary)
    pad = np.ceil(margin_mm / np.array([sz, sy, sx])).astype(int) + 1
    lo = np.maximum(idx.min(0) - pad, 0)
    hi = np.minimum(idx.max(0) + pad + 1, binary.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    dist = ndimage.distance_transform_edt(~binary[box], sampling=(sz, sy, sx))
    out = np.zeros(binary.shape, np.uint8)
    out[box] = dist <= margin_mm
    return lesion.with_array(out)


def load_source(
    name: str,
    image: str | Path,
    lesion_mask: str | Path | None = None,
    exclude_margin_mm: float = 20.0,
) -> SourceScan:
    """Read a chest CT (and its real lesion mask, if any) and build a :class:`SourceScan`.

    Raises:
        InputError: the image is not a chest CT with lungs, or the mask is missing / off-grid.
    """
    from medanomaly.detect.grid import lung_region
    from medanomaly.errors import InputError
    from medanomaly.io import read

    if lesion_mask is not None and not Path(lesion_mask).exists():
        raise InputError("lesion mask not found", lesion_mask)
    ct = read(image)
    lung = lung_region(ct, image)
    lesion = exclude = None
    if lesion_mask is not None:
        lesion = read(lesion_mask)
        if not lesion.same_grid(ct, tol=1e-3):
            raise InputError("lesion mask is not on the image grid", lesion_mask)
        lesion = lesion.with_array((np.asarray(lesion.array) > 0).astype(np.uint8))
        exclude = exclusion_zone(lesion, exclude_margin_mm)
    return SourceScan(name=name, ct=ct, lung=lung, exclude=exclude, lesion=lesion)


def _placement_distances(source: SourceScan, side: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(distance to the lung boundary, distance to the exclusion zone) in mm, per voxel."""
    from scipy import ndimage

    sx, sy, sz = source.ct.spacing
    inside = np.asarray(source.lung.array) == side
    to_wall = ndimage.distance_transform_edt(inside, sampling=(sz, sy, sx))
    to_excl = None
    if source.exclude is not None and np.asarray(source.exclude.array).any():
        to_excl = ndimage.distance_transform_edt(np.asarray(source.exclude.array) == 0, sampling=(sz, sy, sx))
    return to_wall, to_excl


def simulate_scan(
    source: SourceScan,
    side: int,
    n_nodules: int,
    rng: np.random.Generator,
    diameter_range_mm: tuple[float, float] = (3.0, 30.0),
    name: str | None = None,
    distances: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> SimScan:
    """Insert ``n_nodules`` random nodules into lung ``side`` (1 right, 2 left) of ``source``.

    Centres lie inside that lung, at least 0.4 x the nodule's reach from the lung boundary, the
    nodule's full reach + 2 mm away from the exclusion zone, and clear of one another.
    """
    to_wall, to_excl = distances if distances is not None else _placement_distances(source, side)
    candidates = np.argwhere(np.asarray(source.lung.array) == side)
    if len(candidates) == 0:
        raise ValueError(f"{source.name}: lung label {side} is empty")
    specs: list[NoduleSpec] = []
    placed: list[tuple[np.ndarray, float]] = []
    for _ in range(n_nodules):
        template = sample_nodule_spec(rng, (0.0, 0.0, 0.0), diameter_range_mm)
        reach = nodule_reach_mm(template)
        for _attempt in range(200):
            zyx = candidates[rng.integers(len(candidates))]
            if to_wall[tuple(zyx)] < 0.4 * reach:
                continue
            if to_excl is not None and to_excl[tuple(zyx)] < reach + 2.0:
                continue
            centre = source.ct.index_to_physical(zyx[::-1].astype(float))
            if any(np.linalg.norm(centre - c) < reach + r + 3.0 for c, r in placed):
                continue
            placed.append((centre, reach))
            specs.append(NoduleSpec(**{**template.__dict__, "center_mm": tuple(float(c) for c in centre)}))
            break
    ct, labels, truths = insert_nodules(source.ct, specs, lung=source.lung)
    return SimScan(
        name=name or f"{source.name}-sim", source=source, side=side, ct=ct, labels=labels, truths=truths
    )
