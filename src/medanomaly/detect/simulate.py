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
from typing import Any

import numpy as np

from medanomaly.synth.sources import SourceScan, exclusion_zone, load_source
from medanomaly.synth.nodules import NoduleSpec, nodule_reach_mm, insert_nodules, sample_nodule_spec
from medanomaly.types import Volume

__all__ = ["ScanSimulator", "SimScan", "SourceScan", "exclusion_zone", "load_source", "simulate_scan", "truth_radius_mm"]


@dataclass(frozen=True, eq=False)
class SimScan:
    """One simulated scan: the CT with nodules, their label mask (1..n) and truth records."""

    name: str
    source: SourceScan
    side: int
    ct: Volume
    labels: Volume
    truths: list[Any] = field(default_factory=list)  # InsertedNodule (procedural) or InsertedShape (lidc)


def truth_radius_mm(truth: Any) -> float:
    """Hit radius of a simulated nodule, mm: a procedural nodule's own radius, or half the diameter of the
    sphere with an inserted real shape's (continuous) volume."""
    radius = getattr(truth, "radius_mm", None)
    return float(radius) if radius is not None else 0.5 * float(truth.diameter_mm)


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


class ScanSimulator:
    """Simulated scans of one kind of shape, with each source's placement maps computed once.

    Args:
        shapes: ``procedural`` (:func:`simulate_scan`), ``lidc`` (real LIDC-IDRI consensus shapes of
            ``split`` with an equivalent diameter in ``diameter_range_mm``, inserted by
            :func:`medanomaly.synth.insert.insert_shapes` into lung ``side`` only, never in the
            source's exclusion zone) or ``mixed``: training scans alternate, LIDC train shapes in the
            even ones (``index`` 0, 2, ...) and procedural nodules in the odd ones (real shapes are
            at most 38 mm, the procedural ones teach large, solid masses); validation and test
            scans get LIDC shapes of their split only.
        split: the LIDC split the shapes come from (``train``, ``val`` or ``test``).
        diameter_range_mm: nodule diameters (procedural) or equivalent diameters (lidc), mm.
        procedural_range_mm: diameters of the procedural nodules of ``mixed`` training scans, mm (None:
            ``diameter_range_mm``); up to 70 mm teaches masses the size of lung2's tumour.
        non_solid_weight: LIDC shapes of ground glass or part-solid texture (median rating < 4) are drawn
            this many times as often as solid ones (1: uniformly, the library's own mix).

    Raises:
        InputError: the LIDC split has no shape in the diameter range, or a nodule cannot be placed.
    """

    def __init__(self, shapes: str = "procedural", split: str = "train",
                 diameter_range_mm: tuple[float, float] = (3.0, 30.0),
                 procedural_range_mm: tuple[float, float] | None = None, non_solid_weight: float = 1.0) -> None:  # fmt: skip
        self.shapes, self.split, self.diameter_range_mm = shapes, split, tuple(diameter_range_mm)
        self._procedural_range = self.diameter_range_mm
        if shapes == "mixed" and procedural_range_mm is not None:
            self._procedural_range = tuple(procedural_range_mm)
        self._maps: dict[tuple[str, int, str], Any] = {}
        self._pool: np.ndarray | None = None
        self._pool_p: np.ndarray | None = None
        if shapes in ("lidc", "mixed"):
            from medanomaly.data.lidc_shapes import load_library
            from medanomaly.errors import InputError

            self._library = load_library()
            self._pool = self._library.indices(split, *self.diameter_range_mm)
            if len(self._pool) == 0:
                raise InputError(f"no LIDC {split} shape with an equivalent diameter in {list(diameter_range_mm)} mm")
            if non_solid_weight != 1.0:  # uniform draws keep their random stream when the weight is 1
                w = np.where(self._library.rating("texture")[self._pool] < 4, non_solid_weight, 1.0)
                self._pool_p = w / w.sum()

    def kind(self, index: int = 0) -> str:
        """The shapes of scan number ``index``: ``procedural`` or ``lidc`` (``mixed``: see the class)."""
        if self.shapes != "mixed":
            return self.shapes
        return "procedural" if self.split == "train" and index % 2 == 1 else "lidc"

    def scan(self, source: SourceScan, side: int, n_nodules: int, rng: np.random.Generator, name: str,
             index: int = 0) -> SimScan:  # fmt: skip
        """Scan number ``index`` of ``source`` with ``n_nodules`` nodules in lung ``side`` (1 right, 2 left)."""
        key = (source.name, side, self.kind(index))
        if key[2] == "procedural":
            if key not in self._maps:
                self._maps[key] = _placement_distances(source, side)
            return simulate_scan(source, side, n_nodules, rng, self._procedural_range, name=name,
                                 distances=self._maps[key])  # fmt: skip
        from medanomaly.synth.insert import insert_shapes, prepare_background

        if key not in self._maps:
            one_lung = source.lung.with_array((np.asarray(source.lung.array) == side).astype(np.uint8))
            self._maps[key] = prepare_background(source.ct, lung=one_lung, exclude=source.exclude, name=source.name)
        assert self._pool is not None
        picks = rng.choice(self._pool, size=min(n_nodules, len(self._pool)), replace=False, p=self._pool_p)
        shapes = [self._library[int(i)] for i in picks]
        ct, labels, truths = insert_shapes(self._maps[key], shapes, rng)
        return SimScan(name=name, source=source, side=side, ct=ct, labels=labels, truths=truths)
