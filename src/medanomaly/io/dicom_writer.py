"""Write a scalar :class:`~medanomaly.types.Volume` as a DICOM series (one file per slice), with pydicom.

Used to export volumes to PACS-style folders and to build real-format test fixtures and
benchmarks (for example a 500-file CT series made from the slices of a real scan). The files
are standard CT / MR Image Storage (or Secondary Capture for other modalities), explicit VR
little endian, with full patient geometry (ImagePositionPatient, ImageOrientationPatient,
PixelSpacing) and the modality LUT for CT (stored = HU + 1024, intercept -1024).

No identity is written: patient name and ID are a placeholder ("ANONYMOUS").

Example:
    >>> import numpy as np, tempfile
    >>> from medanomaly.types import Volume
    >>> vol = Volume(np.full((3, 4, 5), -1000, np.int16), spacing=(0.7, 0.7, 2.5), meta={"modality": "CT"})
    >>> files = write_dicom_series(vol, tempfile.mkdtemp())
    >>> len(files)
    3
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.errors import InputError
from medanomaly.io.staged import write_staged
from medanomaly.types import Volume

_SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
}
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _ds(value: float) -> str:
    """A DS string (at most 16 characters) for a float."""
    text = f"{value:.6g}"
    return text if len(text) <= 16 else f"{value:.4e}"


def _stored(array: np.ndarray, modality: str) -> tuple[np.ndarray, float, float, int]:
    """(stored uint16 pixels, slope, intercept, bits stored) for one volume."""
    if array.dtype.kind in "iub" or np.all(np.mod(array, 1) == 0):
        lo, hi = float(array.min()), float(array.max())
        intercept = -1024.0 if modality == "CT" and lo >= -1024 else min(0.0, np.floor(lo))
        if hi - intercept <= 65535:
            stored = (array.astype(np.int64) - int(intercept)).astype(np.uint16)
            bits = 12 if hi - intercept < 4096 else 16
            return stored, 1.0, intercept, bits
    lo, hi = float(np.min(array)), float(np.max(array))
    slope = (hi - lo) / 65535.0 if hi > lo else 1.0
    stored = np.round((array.astype(np.float64) - lo) / slope).astype(np.uint16)
    return stored, slope, lo, 16


def _new_instance(path: Path, sop_class: str) -> Any:
    """An empty DICOM instance of ``sop_class`` (explicit VR little endian, new SOP Instance UID,
    zeroed preamble) to be saved at ``path``."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    return ds


def _frame_of(volume: Volume) -> str:
    """The volume's own Frame of Reference UID when it came from DICOM (a series derived from an image, such as its
    mask, lies in the image's patient coordinate system: viewers overlay them, ``read_mask`` accepts it), else a new
    one; a recorded value that is not a valid UID is replaced."""
    import re

    from pydicom.uid import generate_uid

    frame = str(volume.meta.get("frame_of_reference_uid", "") or "")
    return frame if len(frame) <= 64 and re.fullmatch(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+", frame) else generate_uid()


def _series_header(volume: Volume, series_uid: str, study_uid: str, description: str) -> dict[str, Any]:
    """The elements every slice of the series shares (keyword -> value): UIDs, anonymous patient,
    modality, orientation, pixel spacing and slice thickness (mm), 16-bit unsigned MONOCHROME2, and
    the IODs' type 2 elements left empty (unknown)."""

    modality = volume.modality
    direction = volume.direction
    sx, sy, sz = volume.spacing
    header = {"SOPClassUID": _SOP_CLASSES.get(modality, _SECONDARY_CAPTURE), "StudyInstanceUID": study_uid,
              "SeriesInstanceUID": series_uid, "FrameOfReferenceUID": _frame_of(volume), "PatientName": "ANONYMOUS",
              "PatientID": "ANONYMOUS", "Modality": modality, "SeriesDescription": description, "SeriesNumber": 1,
              "ImageOrientationPatient": [_ds(v) for v in [*direction[:, 0], *direction[:, 1]]],
              "PixelSpacing": [_ds(sy), _ds(sx)], "SliceThickness": _ds(sz), "Rows": volume.shape[1],
              "Columns": volume.shape[2], "SamplesPerPixel": 1, "PhotometricInterpretation": "MONOCHROME2",
              "BitsAllocated": 16, "PixelRepresentation": 0}  # fmt: skip
    # Type 2 elements (present, empty: unknown) that the IODs require, so dciodvfy finds no missing attribute
    header.update(dict.fromkeys(("PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "ReferringPhysicianName",
                                 "StudyID", "AccessionNumber", "PositionReferenceIndicator", "Manufacturer",
                                 "Laterality", "PatientPosition"), ""))
    header["ImageType"] = ["DERIVED", "SECONDARY", "AXIAL"]
    if modality == "CT":  # a complete CT Image IOD (dciodvfy: no error); MR acquisition elements are not known here
        header.update(RescaleType="HU", KVP="", AcquisitionNumber="")
    return header


def write_dicom_series(
    volume: Volume,
    folder: str | Path,
    *,
    series_uid: str | None = None,
    study_uid: str | None = None,
    file_names: Sequence[str] | None = None,
    description: str = "",
) -> list[Path]:
    """Write a scalar volume as one DICOM file per slice into ``folder``, the whole series or none of it
    (:func:`medanomaly.io.staged.write_staged`).

    Args:
        volume: scalar volume (z, y, x); its modality (``meta["modality"]``) picks the SOP class.
        folder: output folder (created).
        series_uid / study_uid: UIDs to use (new ones by default).
        file_names: one name per slice (default ``slice_0000.dcm``...); any order is fine,
            readers sort by position.
        description: SeriesDescription (technical text only, no identity).

    Returns:
        The written paths, in slice order.
    """
    from pydicom.uid import generate_uid

    if volume.n_components != 1:
        raise InputError("only scalar volumes can be written as a DICOM series", folder)
    n = volume.shape[0]
    if n == 0:
        raise InputError("the volume has no slices to write", folder)
    if file_names is not None and len(file_names) != n:
        raise ValueError(f"need {n} file names, got {len(file_names)}")
    if file_names is not None and any(Path(name).name != name for name in file_names):
        raise ValueError("file names are names inside the folder, not paths")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stored, slope, intercept, bits = _stored(volume.array, volume.modality)
    series = _series_header(volume, series_uid or generate_uid(), study_uid or generate_uid(), description)
    series.update(BitsStored=bits, HighBit=bits - 1, RescaleSlope=_ds(slope), RescaleIntercept=_ds(intercept))
    paths = [folder / (file_names[k] if file_names is not None else f"slice_{k:04d}.dcm") for k in range(n)]

    def write_all(staged: Path) -> None:
        for k, path in enumerate(paths):
            ds = _new_instance(path, series["SOPClassUID"])
            for keyword, value in series.items():
                setattr(ds, keyword, value)
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = [_ds(v) for v in volume.index_to_physical((0.0, 0.0, float(k)))]
            ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
            ds.save_as(staged.parent / path.name, enforce_file_format=True)

    # the whole series or none of it: a full disk at slice 30 of 48 left 29 slices, read back as a shorter series
    write_staged(paths[0], write_all)
    return paths
