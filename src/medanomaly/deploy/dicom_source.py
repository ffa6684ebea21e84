"""The source DICOM series of a volume: headers in file order, matched to the volume's slices.

DICOM SEG, SR and Parametric Map objects reference the images they were derived from, frame by
frame. A :class:`~medanomaly.types.Volume` read from a DICOM series is sorted along the slice
normal, so slice ``k`` of the volume (and of every mask or map on its grid) belongs to the file
whose ImagePositionPatient lies at index ``(0, 0, k)``. :func:`load_source_series` reads the
headers only (no pixel data), finds that index for each file and refuses files that do not sit
on the volume grid, so a SEG frame can never land on the wrong slice.

Example:
    >>> from medanomaly.io import read                                  # doctest: +SKIP
    >>> vol = read("ct_folder")                                          # doctest: +SKIP
    >>> src = load_source_series(sorted(Path("ct_folder").iterdir()), vol)  # doctest: +SKIP
    >>> src.frames(mask.array).shape                                     # doctest: +SKIP
    (61, 512, 512)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medanomaly.errors import InputError
from medanomaly.io.dicom import modality_code
from medanomaly.io.dicom_pixels import ds_floats
from medanomaly.io.dicom_reference import reference_header
from medanomaly.types import Volume

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset

__all__ = ["SourceSeries", "check_output_geometry", "derived_instance", "image_reference", "load_source_series",
           "series_headers", "software_version", "MANUFACTURER", "MODEL_NAME"]

#: Written into Manufacturer / ManufacturerModelName of every object we create.
MANUFACTURER = "medanomaly"
MODEL_NAME = "medanomaly"
#: Largest distance (in voxels) of a file's position from the volume grid that still matches.
_INDEX_TOL = 0.05


def software_version() -> str:
    """The medanomaly version string written into SoftwareVersions."""
    from medanomaly import __version__

    return str(__version__)


def derived_instance(source: SourceSeries, run_id: str, kind: str, sop_class: str, modality: str, series_number: int,
                     description: str) -> Any:  # fmt: skip
    """A new instance filed in ``source``'s study and frame of reference (an RT Structure Set, a Spatial Registration):
    its patient and study elements copied from the source (already cleaned: ``io.dicom_reference``), the SOP, series,
    frame of reference and equipment elements; UIDs deterministic in (run, source series, ``kind``), so a rerun
    rewrites the same instance. The caller adds its module's own elements."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    from medanomaly.deploy.codes import deterministic_uid
    from medanomaly.io.dicom_reference import TYPE2_COPIED

    ds = Dataset()
    ds.file_meta = FileMetaDataset()  # its SOP Class and Instance UIDs are the data set's, filled in when saved
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    first = source.datasets[0]
    if first.get("SpecificCharacterSet"):
        ds.SpecificCharacterSet = first.SpecificCharacterSet
    for keyword in ("StudyInstanceUID", *TYPE2_COPIED):
        setattr(ds, keyword, first.get(keyword, ""))
    ds.SOPClassUID, ds.Modality = sop_class, modality
    ds.SOPInstanceUID = deterministic_uid(run_id, source.series_uid, kind)
    ds.SeriesInstanceUID = deterministic_uid(run_id, source.series_uid, f"{kind}-series")
    ds.SeriesNumber, ds.InstanceNumber = series_number, 1
    ds.SeriesDescription = description[:64]
    ds.FrameOfReferenceUID = source.frame_of_reference_uid  # the Frame of Reference module (PS3.3 A.19.3)
    ds.PositionReferenceIndicator = str(first.get("PositionReferenceIndicator", "") or "")
    ds.Manufacturer, ds.ManufacturerModelName = MANUFACTURER, MODEL_NAME
    ds.SoftwareVersions, ds.DeviceSerialNumber = software_version(), "0"
    return ds


def image_reference(ds: Any) -> Any:
    """A reference to the image ``ds`` (its SOP Class and Instance UIDs), as an RT Structure Set's contours and a
    Spatial Registration's items list their images."""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    return item


@dataclass(frozen=True)
class SourceSeries:
    """Headers of a single-frame DICOM series and the volume slice each one holds.

    Attributes:
        datasets: pydicom datasets without pixel data, one per slice, in volume slice order.
        slice_index: ``slice_index[i]`` is the volume z index of ``datasets[i]`` (0..n-1).
        series_uid / study_uid / frame_of_reference_uid: of the source series.
        modality: of the source series ("CT", "MR", ...).
    """

    datasets: tuple[Dataset, ...]
    slice_index: tuple[int, ...]
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str
    modality: str

    def frames(self, array: np.ndarray) -> np.ndarray:
        """Slices of a (z, y, x) array on the volume grid, in ``datasets`` order (frame i -> file i)."""
        array = np.asarray(array)
        return array[list(self.slice_index)]


def check_output_geometry(ds: Dataset, where: Path) -> None:
    """Refuse, in one line naming the file, a source header our SEG / SR / Parametric Map cannot reference: no
    StudyInstanceUID or FrameOfReferenceUID, an ImageOrientationPatient that is not two non-parallel directions, a
    PixelSpacing that is not two positive numbers (the image itself is read with fallbacks; highdicom raised a
    ValueError / TypeError / AttributeError traceback after the model had run)."""
    for keyword in ("StudyInstanceUID", "FrameOfReferenceUID"):
        if not str(ds.get(keyword, "") or "").strip():
            raise InputError(f"source image without {keyword}: DICOM SEG/SR outputs need it", where)
    iop = ds_floats(ds.get("ImageOrientationPatient"), 6)
    row, col = (None, None) if iop is None else (np.asarray(iop[:3]), np.asarray(iop[3:]))
    if row is None or min(np.linalg.norm(row), np.linalg.norm(col)) < 1e-3 or \
            np.linalg.norm(np.cross(row / np.linalg.norm(row), col / np.linalg.norm(col))) < 1e-3:  # fmt: skip
        raise InputError("source image without a valid ImageOrientationPatient (two non-parallel directions): DICOM "
                         "SEG/SR outputs need it", where)  # fmt: skip
    spacing = ds_floats(ds.get("PixelSpacing"), 2)
    if spacing is None or min(spacing) <= 0:
        raise InputError(f"source image PixelSpacing {ds.get('PixelSpacing')!r} is not two positive numbers: DICOM "
                         "SEG/SR outputs need it", where)  # fmt: skip


def _slice_of(ds: Dataset, volume: Volume, where: Path) -> int:
    """Volume z index of one file, from its ImagePositionPatient; InputError when off the grid."""
    ipp = ds.get("ImagePositionPatient")
    if ipp is None or len(ipp) != 3:
        raise InputError("source image without ImagePositionPatient", where)
    index = volume.physical_to_index([float(v) for v in ipp])
    k = int(round(float(index[2])))
    if np.any(np.abs(index[:2]) > _INDEX_TOL) or abs(index[2] - k) > _INDEX_TOL or not 0 <= k < volume.shape[0]:
        raise InputError(f"source image is not on the volume grid (index {np.round(index, 2).tolist()})", where)
    return k


def series_headers(files: Sequence[str | Path], series_uid: str) -> list[Dataset]:
    """The reference headers (no pixels) of the images of series ``series_uid`` among ``files``, one per instance: what
    a result made from that series too (another modality of a fusion call) lists as its evidence. A file whose header
    cannot be read is left out (the reader skipped it too; the evidence is what was used)."""
    out, seen = [], set()
    for path in files:
        try:
            ds = reference_header(Path(path))
        except InputError:
            continue
        uid = str(ds.get("SOPInstanceUID", "") or "")
        if "Rows" in ds and str(ds.get("SeriesInstanceUID", "")) == series_uid and uid not in seen:
            seen.add(uid)
            out.append(ds)
    return out


def load_source_series(files: Sequence[str | Path], volume: Volume) -> SourceSeries:
    """Read the headers of a volume's source DICOM files and match each to a volume slice.

    Args:
        files: the DICOM files of the series the volume was read from (any order); files of
            other series and non-image objects among them are ignored.
        volume: the volume read from those files (its ``meta["series_uid"]`` picks the series).

    Returns:
        A :class:`SourceSeries` with one dataset per volume slice.

    Raises:
        InputError: no image of the series, a multi-frame source, a file off the volume grid,
            or a slice with no file / two files (copies of one instance, the same SOPInstanceUID, count once).
    """
    wanted = volume.meta.get("series_uid")
    chosen: list[tuple[int, Dataset]] = []
    instances: set[tuple[str, int]] = set()
    for path in files:
        ds = reference_header(Path(path))
        if "Rows" not in ds or (wanted and str(ds.get("SeriesInstanceUID", "")) != wanted):
            continue
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise InputError("multi-frame source images: DICOM SEG/SR output needs single-frame slices", path)
        check_output_geometry(ds, Path(path))
        k = _slice_of(ds, volume, Path(path))
        instance = (str(ds.get("SOPInstanceUID", "") or ""), k)
        if instance[0] and instance in instances:  # a copy of an instance on its slice (a study exported twice)
            continue
        instances.add(instance)
        chosen.append((k, ds))
    if not chosen:
        raise InputError(f"no source image of series {wanted or '?'} among {len(files)} file(s)")
    chosen.sort(key=lambda item: item[0])
    index = [k for k, _ in chosen]
    if index != list(range(volume.shape[0])):
        missing = sorted(set(range(volume.shape[0])) - set(index))
        reason = f"slices without a source file: {missing[:5]}" if missing else "two source files for one slice"
        raise InputError(f"source series does not match the volume ({reason})")
    first = chosen[0][1]
    return SourceSeries(
        datasets=tuple(ds for _, ds in chosen),
        slice_index=tuple(index),
        series_uid=str(first.SeriesInstanceUID),
        study_uid=str(first.StudyInstanceUID),
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "")),
        modality=modality_code(first.get("Modality"), "OT"),
    )
