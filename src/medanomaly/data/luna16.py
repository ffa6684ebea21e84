"""LUNA16 (LUng Nodule Analysis 2016): the layout, its annotations and its 10-fold split.

The challenge data (888 LIDC-IDRI CTs, slices <= 2.5 mm; https://luna16.grand-challenge.org, which
states its licence terms; not shipped here) unpacks to::

    <root>/subset0/<seriesuid>.mhd + <seriesuid>.raw   ... subset9/
    <root>/annotations.csv           seriesuid,coordX,coordY,coordZ,diameter_mm   (1,186 nodules >= 3 mm)
    <root>/candidates.csv            seriesuid,coordX,coordY,coordZ,class         (1 = nodule, 0 = not)
    <root>/annotations_excluded.csv  (optional; the same columns as annotations.csv: findings that
                                      are neither hits nor false positives)

Coordinates are world coordinates in mm, the MetaImage's physical space (``Offset`` +
``TransformMatrix``), which is LPS as ITK reads it: :meth:`medanomaly.types.Volume.physical_to_index`
maps them to voxels directly. **Folds** are the subsets: fold ``k`` = ``subset<k>``; the challenge
evaluates by 10-fold cross-validation (train on nine subsets, test on the tenth).

:func:`write_scan` and :func:`write_csv` write the same layout (tests build a small fixture of real
CTs with inserted real shapes in it; a converter can use them too).

Example:
    >>> data = Luna16("/data/LUNA16")                     # doctest: +SKIP
    >>> split = data.split(test_fold=0)                    # doctest: +SKIP
    >>> len(split["test"]), data.annotations[split["test"][0]][0].diameter_mm  # doctest: +SKIP
    (89, 5.65)
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from medanomaly.errors import InputError
from medanomaly.io.tables import read_csv
from medanomaly.jsonio import write_text_atomic

N_FOLDS = 10
ANNOTATION_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")
CANDIDATE_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "class")
_SUBSET = re.compile(r"^subset(\d+)$")

__all__ = ["ANNOTATION_COLUMNS", "CANDIDATE_COLUMNS", "Luna16", "Luna16Candidate", "Luna16Nodule", "N_FOLDS", "csv_numbers",
           "csv_rows", "read_annotations", "read_candidates", "write_csv", "write_scan"]


@dataclass(frozen=True)
class Luna16Nodule:
    """One reference nodule (or excluded finding): series UID, world centre (x, y, z) mm, diameter mm."""

    seriesuid: str
    center_mm: tuple[float, float, float]
    diameter_mm: float

    @property
    def radius_mm(self) -> float:
        return self.diameter_mm / 2.0


@dataclass(frozen=True)
class Luna16Candidate:
    """One candidate location: series UID, world centre (x, y, z) mm, label (1 = nodule)."""

    seriesuid: str
    center_mm: tuple[float, float, float]
    label: int


# ---------------------------------------------------------------------------------------- CSV
def csv_rows(path: Path, columns: Sequence[str], kind: str = "LUNA16 CSV") -> Iterable[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV whose header holds ``columns``; InputError otherwise (``kind`` names the file in
    the message)."""
    if not path.is_file():
        raise InputError("file not found", path)
    with read_csv(path, kind) as reader:
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"not a {kind}: column(s) {', '.join(missing)} missing", path)
        for line, row in enumerate(reader, start=2):
            yield line, row


def csv_numbers(row: dict[str, str], names: Sequence[str], path: Path, line: int) -> list[float]:
    """The ``names`` columns of ``row`` as finite floats; InputError naming the line otherwise (``nan`` and ``inf``
    parse as floats but are no coordinate, diameter or probability).

    Example:
        >>> csv_numbers({"x": "1.5", "p": "0.9"}, ("x", "p"), Path("a.csv"), 2)
        [1.5, 0.9]
    """
    try:
        values = [float(row[n]) for n in names]
    except (TypeError, ValueError):
        raise InputError(f"line {line}: {', '.join(names)} must be numbers", path) from None
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"line {line}: {', '.join(names)} must be finite numbers", path)
    return values


def read_annotations(path: str | Path, excluded: bool = False) -> dict[str, list[Luna16Nodule]]:
    """``annotations.csv`` (or, with ``excluded``, ``annotations_excluded.csv``) -> nodules per series UID.

    A reference nodule's diameter must be positive (one of 0 mm is a nodule no mark can hit); in
    ``annotations_excluded.csv`` LUNA16 writes -1 for a finding of unknown size, so any diameter is taken there.

    Raises:
        InputError: missing file or column, a non-numeric value, a reference diameter of 0 mm or less (the
            message gives the line).
    """
    path = Path(path)
    out: dict[str, list[Luna16Nodule]] = {}
    for line, row in csv_rows(path, ANNOTATION_COLUMNS):
        x, y, z, d = csv_numbers(row, ANNOTATION_COLUMNS[1:], path, line)
        if not excluded and d <= 0:
            raise InputError(f"line {line}: diameter_mm must be positive, got {row['diameter_mm']!r}", path)
        uid = row["seriesuid"].strip()
        out.setdefault(uid, []).append(Luna16Nodule(uid, (x, y, z), d))
    return out


def read_candidates(path: str | Path) -> dict[str, list[Luna16Candidate]]:
    """``candidates.csv`` (or ``candidates_V2.csv``) -> candidates per series UID.

    Raises:
        InputError: missing file or column, a non-numeric value, a class other than 0/1.
    """
    path = Path(path)
    out: dict[str, list[Luna16Candidate]] = {}
    for line, row in csv_rows(path, CANDIDATE_COLUMNS):
        x, y, z, label = csv_numbers(row, CANDIDATE_COLUMNS[1:], path, line)
        if label not in (0.0, 1.0):
            raise InputError(f"line {line}: class must be 0 or 1, got {row['class']!r}", path)
        uid = row["seriesuid"].strip()
        out.setdefault(uid, []).append(Luna16Candidate(uid, (x, y, z), int(label)))
    return out


# ---------------------------------------------------------------------------------------- layout
class Luna16:
    """A LUNA16 folder: scans by series UID, their fold, the annotations and candidates.

    Args:
        root: the folder holding ``subset*/`` and ``annotations.csv``.
        candidates_file: the candidates CSV name (``candidates.csv`` or ``candidates_V2.csv``);
            read on first use.

    Raises:
        InputError: no such folder, no ``subset<k>`` folder with ``.mhd`` files, a series in two
            subsets, or an unreadable ``annotations.csv``.
    """

    def __init__(self, root: str | Path, candidates_file: str = "candidates.csv") -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError("LUNA16 folder not found", self.root)
        self.scans: dict[str, Path] = {}
        self.folds: dict[str, int] = {}
        for sub in sorted(p for p in self.root.iterdir() if p.is_dir() and _SUBSET.match(p.name)):
            fold = int(_SUBSET.match(sub.name).group(1))  # type: ignore[union-attr]
            if fold >= N_FOLDS:
                raise InputError(f"LUNA16 has subsets 0-{N_FOLDS - 1}", sub)
            for mhd in sorted(sub.glob("*.mhd")):
                uid = mhd.stem
                if uid in self.scans:
                    raise InputError(f"series {uid} is in two subsets ({self.scans[uid].parent.name}, {sub.name})",
                                     self.root)
                self.scans[uid] = mhd
                self.folds[uid] = fold
        if not self.scans:
            raise InputError("no subset<k>/<seriesuid>.mhd scan found (is this the LUNA16 folder?)", self.root)
        self.annotations = read_annotations(self.root / "annotations.csv")
        excluded_csv = self.root / "annotations_excluded.csv"
        self.excluded = read_annotations(excluded_csv, excluded=True) if excluded_csv.is_file() else {}
        self._candidates_file = self.root / candidates_file
        self._candidates: dict[str, list[Luna16Candidate]] | None = None

    def __len__(self) -> int:
        return len(self.scans)

    @property
    def candidates(self) -> dict[str, list[Luna16Candidate]]:
        """Candidates per series UID (the CSV is read once, on first use)."""
        if self._candidates is None:
            self._candidates = read_candidates(self._candidates_file)
        return self._candidates

    def nodules(self, uid: str) -> list[Luna16Nodule]:
        """Reference nodules of one scan (none is a valid answer: a scan without nodules)."""
        self._require(uid)
        return list(self.annotations.get(uid, []))

    def read(self, uid: str):
        """The CT of ``uid`` as a :class:`~medanomaly.types.Volume` (HU, LPS geometry, modality CT).

        Raises:
            InputError: unknown UID, the ``.raw`` next to the ``.mhd`` is missing or truncated.
        """
        from medanomaly.io import read

        mhd = self._require(uid)
        raw = self._data_file(mhd)
        if not raw.is_file():
            raise InputError(f"voxel data file {raw.name} is missing", mhd)
        volume = read(mhd)
        return volume.with_meta(modality="CT")

    def split(self, test_fold: int, val_fold: int | None = None) -> dict[str, list[str]]:
        """Series UIDs per split for one cross-validation fold: test = ``subset<test_fold>``,
        val = ``subset<val_fold>`` (default: the next fold present), train = the rest.

        Raises:
            InputError: a fold outside 0-9, no scan in the test fold, or val = test.
        """
        present = sorted(set(self.folds.values()))
        if not 0 <= test_fold < N_FOLDS or test_fold not in present:
            raise InputError(f"test fold {test_fold} has no scan here (present: {present})", self.root)
        if val_fold is None:
            others = [f for f in present if f != test_fold]
            val_fold = next((f for f in others if f > test_fold), others[0] if others else None)
        if val_fold is not None and (val_fold == test_fold or not 0 <= val_fold < N_FOLDS):
            raise InputError(f"validation fold {val_fold} must differ from test fold {test_fold} and be 0-9")
        out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
        for uid, fold in sorted(self.folds.items()):
            out["test" if fold == test_fold else "val" if fold == val_fold else "train"].append(uid)
        return out

    def cross_validation(self) -> list[dict[str, list[str]]]:
        """One :meth:`split` per fold present (each scan is tested exactly once)."""
        return [self.split(f) for f in sorted(set(self.folds.values()))]

    def _require(self, uid: str) -> Path:
        if uid not in self.scans:
            raise InputError(f"series {uid} is not in any subset", self.root)
        return self.scans[uid]

    @staticmethod
    def _data_file(mhd: Path) -> Path:
        """The ``ElementDataFile`` named in a MetaImage header (default ``<stem>.raw``)."""
        for line in mhd.read_text(errors="replace").splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "ElementDataFile":
                return mhd.parent / value.strip()
        return mhd.with_suffix(".raw")


# ---------------------------------------------------------------------------------------- writing
def write_scan(volume, root: str | Path, fold: int, seriesuid: str) -> Path:
    """Write a CT as ``<root>/subset<fold>/<seriesuid>.mhd`` + ``.raw`` (uncompressed, as LUNA16 ships).

    Raises:
        InputError: a fold outside 0-9 or a UID that is not a DICOM-style UID (digits and dots).
    """
    from medanomaly.io.itk import write_itk

    if not 0 <= fold < N_FOLDS:
        raise InputError(f"fold must be 0-{N_FOLDS - 1}, got {fold}")
    if not re.fullmatch(r"[0-9.]{1,64}", seriesuid):
        raise InputError(f"series UID must be digits and dots, got {seriesuid!r}")
    return write_itk(volume, Path(root) / f"subset{fold}" / f"{seriesuid}.mhd", compress=False)


def write_csv(path: str | Path, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> Path:
    """Write a LUNA16-style CSV (header ``columns``) all-or-nothing."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(columns)
    writer.writerows(rows)
    return write_text_atomic(path, text.getvalue())
