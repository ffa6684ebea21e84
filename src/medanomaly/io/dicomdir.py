"""A DICOMDIR (DICOM media directory) read through the image series it references.

A DICOMDIR holds no pixels: it indexes the files of a CD/DVD/USB export by patient, study,
series and image records. pydicom's :class:`pydicom.fileset.FileSet` follows those records to
the referenced files; we then read them like a folder
(:func:`medanomaly.io.dicom_series.read_dicom_files`: sort, check gaps, stack).

* one series referenced: that series is read;
* several: an :class:`~medanomaly.errors.InputError` lists them by UID (modality, file count,
  taken from the directory records, so no image file is opened), and
  ``read(dicomdir, series_uid=...)`` reads the chosen one;
* referenced files that are missing, or that point outside the DICOMDIR's folder, are refused
  by name (never followed).

Example:
    >>> from medanomaly.data.sources import real_data
    >>> from medanomaly.io import read
    >>> read(real_data("pydicom/DICOMDIR"))  # doctest: +SKIP
    Traceback (most recent call last):
    InputError: .../DICOMDIR: DICOMDIR indexes 13 series, choose one (--series UID): ...
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from medanomaly.errors import InputError
from medanomaly.types import Volume

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset

log = logging.getLogger(__name__)


def dicomdir_series(path: Path, ds: Dataset) -> dict[str, tuple[str, list[Path]]]:
    """The series a DICOMDIR references: ``{series UID: (modality, [existing files])}``.

    Raises:
        InputError: records that pydicom cannot follow, a referenced file outside the DICOMDIR's
            folder, or none of the referenced files found (some missing: a warning).
    """
    from pydicom.fileset import FileSet

    from medanomaly.io.dicom import modality_code
    from medanomaly.io.dicom_pixels import _short

    root = path.resolve().parent
    ds.filename = str(path)  # FileSet resolves ReferencedFileID relative to the DICOMDIR
    try:
        with warnings.catch_warnings():  # pydicom warns once per missing file: we report a count
            warnings.simplefilter("ignore")
            instances = FileSet(ds).find()
    except Exception as exc:  # noqa: BLE001 - malformed records raise ValueError/KeyError/...
        raise InputError(f"DICOMDIR whose records cannot be followed ({_short(exc, path)})", path) from None
    series: dict[str, tuple[str, list[Path]]] = {}
    for instance in instances:
        if "ReferencedFileID" not in instance:
            continue
        file = Path(instance.path)
        if not file.resolve().is_relative_to(root):
            raise InputError(f"DICOMDIR references a file outside its folder ({instance.ReferencedFileID})", path)
        if file.is_file():
            uid = _record_value(instance, "SeriesInstanceUID") or "unknown"
            series.setdefault(uid, (modality_code(_record_value(instance, "Modality")), []))[1].append(file)
    referenced = [r.ReferencedFileID for r in ds.get("DirectoryRecordSequence") or [] if "ReferencedFileID" in r]
    found = sum(len(files) for _, files in series.values())
    if len(referenced) > found:
        first = referenced[0]
        example = first if isinstance(first, str) else "/".join(first)
        if not series:
            raise InputError(f"DICOMDIR references {len(referenced)} file(s), none found (e.g. {example})", path)
        log.warning("%s: %d of %d referenced file(s) missing", path, len(referenced) - found, len(referenced))
    return series


def _record_value(instance: object, keyword: str) -> str:
    """A keyword's value from an instance's directory records (image up to patient), or ''."""
    return str(instance[keyword].value or "").strip() if keyword in instance else ""  # type: ignore[index, operator]


def read_dicomdir(
    path: str | Path, ds: Dataset, *, series_uid: str | None = None, max_voxel_bytes: int | None = None
) -> Volume:
    """Read the (chosen) series a DICOMDIR references.

    Args:
        path: the DICOMDIR file.
        ds: its parsed dataset (:func:`medanomaly.io.dicom.read_dataset`).
        series_uid: which series to read when it references several.
        max_voxel_bytes: limit on the series' voxel data (see :mod:`medanomaly.io.limits`).

    Raises:
        InputError: no referenced images, several series and none chosen, an unknown
            ``series_uid``, or any error of reading the series (gaps, sizes, limits).
    """
    from medanomaly.io.dicom_series import SeriesSummary, read_dicom_files

    path = Path(path)
    series = dicomdir_series(path, ds)
    if not series:
        raise InputError("DICOMDIR that references no image files", path)
    summaries = sorted(
        (SeriesSummary(uid, modality, len(files)) for uid, (modality, files) in series.items()),
        key=lambda s: (-s.n_files, s.series_uid),
    )
    listing = "; ".join(str(s) for s in summaries)
    if series_uid is None and len(series) > 1:
        raise InputError(f"DICOMDIR indexes {len(series)} series, choose one (--series UID): {listing}", path)
    uid = series_uid if series_uid is not None else summaries[0].series_uid
    if uid not in series:
        raise InputError(f"series {uid} not in DICOMDIR; found: {listing}", path)
    vol = read_dicom_files(series[uid][1], path, series_uid=series_uid, max_voxel_bytes=max_voxel_bytes)
    return vol.with_meta(n_series=len(series))


__all__ = ["dicomdir_series", "read_dicomdir"]
