"""Fixtures of the io tests: small real CT series written in the real DICOM format."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from medanomaly.data.sources import real_data
from medanomaly.io import read
from medanomaly.io.dicom_writer import write_dicom_series
from medanomaly.types import Volume


@pytest.fixture(scope="session")
def lung_crop() -> Volume:
    """A 12 x 96 x 80 crop of pyradiomics lung1 (real chest CT, HU) with a non-trivial geometry."""
    lung = read(real_data("pyradiomics/lung1_image.nrrd"))
    z0, y0, x0 = 18, 200, 150
    crop = lung.array[z0 : z0 + 12, y0 : y0 + 96, x0 : x0 + 80]
    origin = lung.index_to_physical((x0, y0, z0))
    return Volume(np.ascontiguousarray(crop), spacing=lung.spacing, origin=origin, meta={"modality": "CT"})


def write_series(vol: Volume, folder: Path, *, shuffle: bool = False, seed: int = 0, **kwargs) -> list[Path]:
    """Write ``vol`` as a DICOM series; with ``shuffle`` the file names do not follow slice order."""
    names = [f"IM{k:04d}.dcm" for k in range(vol.shape[0])]
    if shuffle:
        random.Random(seed).shuffle(names)
    return write_dicom_series(vol, folder, file_names=names, **kwargs)


@pytest.fixture(scope="session")
def ct_series(tmp_path_factory, lung_crop) -> Path:
    """The lung crop as a 12-file CT series, sorted names."""
    folder = tmp_path_factory.mktemp("ct_series")
    write_series(lung_crop, folder)
    return folder


@pytest.fixture(scope="session")
def ct_series_shuffled(tmp_path_factory, lung_crop) -> Path:
    """The same slices with shuffled file names."""
    folder = tmp_path_factory.mktemp("ct_series_shuffled")
    write_series(lung_crop, folder, shuffle=True, seed=3)
    return folder


@pytest.fixture(scope="session")
def series_writer():
    """The ``write_series(vol, folder, shuffle=False, seed=0, **kwargs)`` helper, as a fixture."""
    return write_series


# ----------------------------------------------------------------------------- decompression bombs
def _repeat_deflate(parts: list[bytes | int]) -> bytes:
    """A raw deflate stream of ``parts`` (bytes, or an int = that many zero bytes), built
    without compressing every zero.

    After a full flush a deflate block never refers back, so the blocks of one 16 MiB run of
    zeros can be repeated: building a 1 GiB bomb takes about a second.
    """
    import zlib

    run = 16 << 20
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = None
    out = []
    for part in parts:
        if isinstance(part, bytes):
            out += [comp.compress(part), comp.flush(zlib.Z_FULL_FLUSH)]
            continue
        if part >= run and block is None:
            block = comp.compress(bytes(run)) + comp.flush(zlib.Z_FULL_FLUSH)
            out.append(block)
            part -= run
        out += [block] * (part // run)
        out += [comp.compress(bytes(part % run)), comp.flush(zlib.Z_FULL_FLUSH)]
    out.append(comp.flush())
    return b"".join(out)


def write_deflated_dicom(path: Path, frames: int, rows: int = 1024, cols: int = 1024, padding: int = 0) -> Path:
    """A Deflated Explicit VR Little Endian MR file of ``frames`` x rows x cols uint16 zeros,
    with ``padding`` zero bytes in a private OB element before the pixel data."""
    import struct

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian, MRImageStorage, generate_uid

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, generate_uid(), "MR"
    ds.SeriesInstanceUID = generate_uid()
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if padding:
        ds.add_new(0x00290010, "LO", "MEDANOMALY TEST")
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    parts: list[bytes | int] = [body.getvalue()]
    if padding:
        parts += [b"\x29\x00\x00\x10OB\x00\x00" + struct.pack("<I", padding), padding]
    n_bytes = rows * cols * frames * 2
    parts += [b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<I", n_bytes), n_bytes]  # PixelData
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head = DicomBytesIO()
    head.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    path.write_bytes(head.getvalue() + _repeat_deflate(parts))
    return path


@pytest.fixture(scope="session")
def deflate_bomb(tmp_path_factory) -> Path:
    """A ~1 MB deflated DICOM holding 1 GiB + 1 frame (2 MiB) of pixels: over the default limit."""
    return write_deflated_dicom(tmp_path_factory.mktemp("bomb") / "bomb.dcm", frames=513)


@pytest.fixture(scope="session")
def deflated_dicom_writer():
    """``write_deflated_dicom(path, frames, rows=1024, cols=1024, padding=0)`` as a fixture."""
    return write_deflated_dicom


#: SOP Class UID of RT Structure Set Storage.
RT_STRUCT = "1.2.840.10008.5.1.4.1.1.481.3"


def write_structure_set(path: Path, rois: list[tuple[int, str, list[np.ndarray]]], frame: str = "") -> Path:
    """A minimal RT Structure Set: each ROI (number, name, closed planar contours as (N, 3) LPS mm arrays), drawn in
    Frame of Reference ``frame`` (a new UID when empty)."""
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = RT_STRUCT, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = RT_STRUCT, meta.MediaStorageSOPInstanceUID, "RTSTRUCT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, frame = generate_uid(), generate_uid(), frame or generate_uid()
    ds.StructureSetROISequence, ds.ROIContourSequence = Sequence(), Sequence()
    for number, name, contours in rois:
        roi = Dataset()
        roi.ROINumber, roi.ReferencedFrameOfReferenceUID, roi.ROIName = number, frame, name
        ds.StructureSetROISequence.append(roi)
        item = Dataset()
        item.ReferencedROINumber, item.ContourSequence = number, Sequence()
        for points in contours:
            contour = Dataset()
            contour.ContourGeometricType, contour.NumberOfContourPoints = "CLOSED_PLANAR", len(points)
            contour.ContourData = [f"{v:.4f}" for v in np.asarray(points).ravel()]
            item.ContourSequence.append(contour)
        ds.ROIContourSequence.append(item)
    ds.save_as(path, enforce_file_format=True)
    return path
