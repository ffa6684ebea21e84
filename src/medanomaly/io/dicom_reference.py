"""A source DICOM header as the reference of an object we derive from it (SEG, SR, Parametric Map, Secondary Capture).

highdicom copies the patient and study attributes of the reference into the new object. Source headers are read
without pixel data and prepared on the in-memory copy only (the files are never touched): the Type 2 attributes it
copies are filled in empty where the source lacks them, and values it cannot write are cleaned (:func:`clean_copied_values`).

Example:
    >>> from pydicom.dataset import Dataset
    >>> ds = Dataset(); ds.PatientBirthDate = "xx"; ds.PatientName = "Müller^Zoë"
    >>> clean_copied_values(ds); (ds.PatientBirthDate, ds.SpecificCharacterSet)
    ('', 'ISO_IR 192')
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset

__all__ = ["PERSON_NAME_WARNING", "TYPE2_COPIED", "quiet_person_name", "clean_copied_values", "reference_header", "series_reference"]

#: Type 2 attributes (present, may be empty) that derived objects copy from the source: filled in empty on our
#: in-memory header copies when a source file lacks them.
TYPE2_COPIED = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber",
)  # fmt: skip
#: Dates and times copied from the source: a value that is not a DICOM date or time is emptied (they are Type 2;
#: highdicom raised a ValueError traceback for a birth date of ``xx`` or a study date of 20261399).
_DATES_COPIED = ("PatientBirthDate", "StudyDate")
_TIMES_COPIED = ("StudyTime",)
#: highdicom warns, quoting the copied PatientName, when it has one component ("ANONYMOUS", "DOE"): not ours to fix,
#: and the name is PHI, so every writer of a derived object silences this warning.
PERSON_NAME_WARNING = r"The string .* is unlikely to represent the intended person name"


@contextmanager
def quiet_person_name() -> Iterator[None]:
    """Inside the block, highdicom's warning that quotes a copied one-component PatientName (PHI) is not shown: every
    writer of a derived object (SEG, SR, Parametric Map, Secondary Capture) builds it in this block."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=PERSON_NAME_WARNING, category=UserWarning)
        yield


#: Files of a folder read, at most, to find one header of a series (a reference needs one).
MAX_FILES_SEARCHED = 10_000


def clean_copied_values(ds: Dataset) -> None:
    """Make the values a derived object copies from ``ds`` writable, in place: missing Type 2 attributes become empty,
    an invalid date or time becomes empty, and a character set pydicom does not know (``ISO_IR 999``: highdicom's
    enum raised), or none for non-ASCII text, becomes UTF-8 (``ISO_IR 192``), which encodes the already decoded text."""
    from pydicom.charset import python_encoding
    from pydicom.valuerep import DA, TM

    for keyword in TYPE2_COPIED:
        if keyword not in ds:
            setattr(ds, keyword, "")
    for keywords, kind in ((_DATES_COPIED, DA), (_TIMES_COPIED, TM)):
        for keyword in keywords:
            value = str(ds.get(keyword, "") or "")
            try:
                if value:
                    kind(value)
            except (ValueError, TypeError, OverflowError):
                setattr(ds, keyword, "")
    charset = ds.get("SpecificCharacterSet")
    terms = [str(t).strip() for t in ([charset] if isinstance(charset, str) else list(charset or []))]
    unknown = any(t and t not in python_encoding for t in terms)
    undeclared = not any(terms) and not all(str(ds.get(k, "")).isascii() for k in TYPE2_COPIED)  # a non-conformant
    if unknown or undeclared:  # source: copied as is, its text made our outputs fail dciodvfy's value checks
        ds.SpecificCharacterSet = "ISO_IR 192"


def reference_header(path: Path) -> Dataset:
    """The header of one DICOM file (no pixel data), prepared as a reference (:func:`clean_copied_values`).

    Raises:
        InputError: the file is not DICOM or cannot be parsed (:func:`medanomaly.io.dicom.read_dataset`).
    """
    from medanomaly.io.dicom import read_dataset

    ds = read_dataset(Path(path), stop_before_pixels=True)
    clean_copied_values(ds)
    return ds


def series_reference(image: Path, series_uid: str | None) -> Dataset | None:
    """The reference header of the series a volume was read from: ``image`` itself when it is a DICOM file, else the
    first file of the folder (sorted, at most :data:`MAX_FILES_SEARCHED` read) holding ``series_uid``; None when
    ``image`` is not DICOM or no header of the series is found."""
    from medanomaly.errors import InputError
    from medanomaly.io import detect_format

    fmt = detect_format(image)
    if fmt == "dicom":
        return reference_header(image)
    if fmt != "dicom-folder":
        return None
    from medanomaly.io.dicom_series import list_files

    for path in list_files(image)[:MAX_FILES_SEARCHED]:
        try:
            ds = reference_header(path)
        except InputError:
            continue  # not DICOM, unreadable: the reader skipped it too
        if "Rows" in ds and (not series_uid or str(ds.get("SeriesInstanceUID", "")) == series_uid):
            return ds
    return None
