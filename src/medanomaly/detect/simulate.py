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

import numpy as np

from medanomaly.synth.sources import SourceScan, exclusion_zone, load_source
from medanomaly.synth.nodules import InsertedNodule, NoduleSpec, nodule_reach_mm, insert_nodules, sample_nodule_spec
from medanomaly.types import Volume

__all__ = ["SimScan", "SourceScan", "exclusion_zone", "load_source", "simulate_scan"]


@dataclass(frozen=True, eq=False)
class SimScan:
    """One simulated scan: the CT with nodules, their label mask (1..n) and truth records."""

    name: str
    source: SourceScan
    side: int
    ct: Volume
    labels: Volume
    truths: list[InsertedNodule] = field(default_factory=list)


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
