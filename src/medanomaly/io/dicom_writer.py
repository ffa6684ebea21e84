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

import numpy as np

from medanomaly.errors import InputError
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


def write_dicom_series(
    volume: Volume,
    folder: str | Path,
    *,
    series_uid: str | None = None,
    study_uid: str | None = None,
    file_names: Sequence[str] | None = None,
    description: str = "",
) -> list[Path]:
    """Write a scalar volume as one DICOM file per slice into ``folder``.

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
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    if volume.n_components != 1:
        raise InputError("only scalar volumes can be written as a DICOM series", folder)
    n = volume.shape[0]
    if file_names is not None and len(file_names) != n:
        raise ValueError(f"need {n} file names, got {len(file_names)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    modality = volume.modality
    sop_class = _SOP_CLASSES.get(modality, _SECONDARY_CAPTURE)
    stored, slope, intercept, bits = _stored(volume.array, modality)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = generate_uid()
    direction = volume.direction
    iop = [*direction[:, 0], *direction[:, 1]]
    sx, sy, sz = volume.spacing
    rows, cols = volume.shape[1:3]
    paths = []
    for k in range(n):
        position = volume.index_to_physical((0.0, 0.0, float(k)))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        name = file_names[k] if file_names is not None else f"slice_{k:04d}.dcm"
        path = folder / name
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientName = "ANONYMOUS"
        ds.PatientID = "ANONYMOUS"
        ds.Modality = modality
        ds.SeriesDescription = description
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.ImageOrientationPatient = [_ds(v) for v in iop]
        ds.PixelSpacing = [_ds(sy), _ds(sx)]
        ds.SliceThickness = _ds(sz)
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = bits
        ds.HighBit = bits - 1
        ds.PixelRepresentation = 0
        ds.RescaleSlope = _ds(slope)
        ds.RescaleIntercept = _ds(intercept)
        if modality == "CT":
            ds.RescaleType = "HU"
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
