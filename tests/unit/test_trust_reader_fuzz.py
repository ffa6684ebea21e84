"""Issue 18, item 8: property tests for the readers on random, well-formed files.

Hypothesis writes DICOM files (random element trees: every common VR, nested sequences, private
blocks; a random image pixel module: size, frames, samples, bit depth, sign, float pixel data, odd
geometry and rescale values), NIfTI files (random dims, dtypes, voxel sizes, q/sform codes,
scaling) and NRRD headers (random type, sizes, spacings or space directions, endianness, raw or
gzip, data of the right or wrong length). Each goes through ``medanomaly.io.read`` and the ``info``
summary. Properties: the only failure is one :class:`~medanomaly.errors.MedanomalyError` line
naming the file; a volume read back has positive finite spacing and a finite geometry; NaN voxels
planted in float data are still NaN (never silently 0). The de-identifier's own fuzzing lives in
``tests/unit/privacy/test_privacy_fuzz.py`` (planted-string properties); this file fuzzes reading.
"""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medanomaly.errors import MedanomalyError

FUZZ = settings(max_examples=80, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip


def _read_or_refuse(path: Path):
    """``read`` and ``describe`` (the ``info`` summary): a Volume, or None after one clean refusal."""
    from medanomaly.cli.info import describe
    from medanomaly.io import read

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            vol = read(path)
            summary = describe(path)
        except MedanomalyError as exc:
            text = str(exc)
            assert text and "\n" not in text and path.name in text, text
            return None
    assert all(np.isfinite(s) and s > 0 for s in vol.spacing), vol.spacing
    assert np.all(np.isfinite(vol.origin)) and np.all(np.isfinite(vol.direction))
    assert summary["shape"] == list(vol.shape)
    return vol


def _nan_count(array: np.ndarray) -> int:
    return int(np.isnan(array).sum()) if np.asarray(array).dtype.kind == "f" else 0


def _check_file(folder: Path, name: str, raw: bytes, planted: int) -> None:
    """Write ``raw`` as ``folder/name``: it reads (every planted NaN kept, never turned into 0) or is
    refused in one line."""
    path = folder / name
    path.write_bytes(raw)
    vol = _read_or_refuse(path)
    if vol is not None and planted:
        assert _nan_count(vol.array) == planted


# ------------------------------------------------------------------------------------- DICOM
_LEAVES = (
    (0x00080060, "CS", "CT"), (0x00081030, "LO", "study"), (0x00180050, "DS", "1.25"), (0x00200011, "IS", "3"),
    (0x00080020, "DA", "20200101"), (0x00080030, "TM", "101010"), (0x00181020, "LO", "v1"),
    (0x00280301, "CS", "NO"), (0x00081090, "LO", "model"), (0x00200052, "UI", "1.2.3.4"),
    (0x00181310, "US", [0, 64, 64, 0]), (0x00540081, "US", 4),
    (0x00186011, "FD", 1.5),  # SequenceOfUltrasoundRegions with another VR than SQ (files do this)
)  # fmt: skip


@st.composite
def _elements(draw, depth: int = 0):
    from pydicom.dataelem import DataElement
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    leaves = draw(st.lists(st.sampled_from(_LEAVES), max_size=5, unique_by=lambda e: e[0]))
    out = [DataElement(t, vr, v) for t, vr, v in leaves]
    if draw(st.booleans()):  # a private block: creator + data of several VRs
        group = 2 * draw(st.integers(0x0005, 0x7FDF // 2)) + 1
        out.append(DataElement((group << 16) | 0x0010, "LO", "FUZZ CREATOR"))
        for i, (vr, value) in enumerate(draw(st.lists(st.sampled_from(
                [("LO", "x"), ("OB", b"\x01\x02"), ("UN", b"\x00\x01\x02\x03"), ("SL", -7), ("FD", 2.5),
                 ("UT", "free text")]), max_size=4))):  # fmt: skip
            out.append(DataElement((group << 16) | (0x1000 + i), vr, value))
    if depth < 2 and draw(st.booleans()):
        items = []
        for _ in range(draw(st.integers(0, 2))):
            item = Dataset()
            for elem in draw(_elements(depth + 1)):
                item[elem.tag] = elem
            items.append(item)
        tag = draw(st.sampled_from((0x00082112, 0x00081140, 0x00400275, 0x00089215)))
        out.append(DataElement(tag, "SQ", Sequence(items)))
    return out


@st.composite
def dicom_files(draw):
    """(bytes of a DICOM file, NaN voxels planted)."""
    from io import BytesIO

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

    ds = Dataset()
    for elem in draw(_elements()):
        ds[elem.tag] = elem
    rows, cols, frames = draw(st.integers(1, 12)), draw(st.integers(1, 12)), draw(st.integers(1, 3))
    samples = draw(st.sampled_from((1, 1, 3)))
    kind = draw(st.sampled_from(("int", "int", "float32", "float64")))
    bits = 32 if kind == "float32" else 64 if kind == "float64" else draw(st.sampled_from((1, 8, 16, 32)))
    signed = kind == "int" and bits > 1 and draw(st.booleans())
    ds.SamplesPerPixel, ds.Rows, ds.Columns = samples, rows, cols
    ds.PhotometricInterpretation = "RGB" if samples == 3 else draw(st.sampled_from(("MONOCHROME2", "MONOCHROME1")))
    if samples == 3:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = int(signed)
    if draw(st.booleans()):
        ds.PixelSpacing = [draw(st.sampled_from(("0.7", "1", "0", "-2", "1e-9"))) for _ in range(2)]
    if draw(st.booleans()):
        ds.ImageOrientationPatient = draw(st.sampled_from(([1, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0], [1, 0, 0, 1, 0, 0])))
        ds.ImagePositionPatient = [draw(st.floats(-500, 500)) for _ in range(3)]
    if kind == "int" and draw(st.booleans()):
        ds.RescaleSlope, ds.RescaleIntercept = draw(st.sampled_from(("1", "0.5", "0", "1e30"))), "-1024"
    n = rows * cols * frames * samples
    planted = 0
    if kind == "int":
        if bits == 1:
            data = np.packbits(np.random.default_rng(n).integers(0, 2, n).astype(np.uint8), bitorder="little").tobytes()
        else:
            dtype = np.dtype(f"{'i' if signed else 'u'}{bits // 8}").newbyteorder("<")
            data = np.random.default_rng(n).integers(0, 100, n).astype(dtype).tobytes()
    else:
        values = np.random.default_rng(n).normal(0, 100, n).astype(np.float32 if bits == 32 else np.float64)
        planted = draw(st.integers(0, min(n, 3)))
        values[:planted] = np.nan
        data = values.astype(values.dtype.newbyteorder("<")).tobytes()
    data = data[: max(0, len(data) - draw(st.sampled_from((0, 0, 0, 1, 7))))]  # sometimes short
    if kind != "int":  # a NaN whose bytes were cut (and padded with 0 below) is no longer planted
        planted = min(planted, len(data) // values.itemsize)
    data += b"\x00" * (len(data) % 2)
    keyword = {"int": "PixelData", "float32": "FloatPixelData", "float64": "DoubleFloatPixelData"}[kind]
    setattr(ds, keyword, data)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = draw(st.sampled_from((ExplicitVRLittleEndian, ImplicitVRLittleEndian)))
    buf = BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue(), planted


@FUZZ
@given(dicom_files())
def test_random_dicom_files_read_or_refuse_in_one_line(tmp_path_factory, case):
    _check_file(tmp_path_factory.mktemp("dcm"), "fuzz.dcm", *case)


# ------------------------------------------------------------------------------------- NIfTI
_ODD = (0.5, 1.0, 3.0, -1.0, 0.0, 1e-12, float("nan"), float("inf"))


@st.composite
def nifti_files(draw):
    """(bytes of a NIfTI-1 file whose header fields are set raw, NaN voxels planted)."""
    import nibabel as nib

    ndim = draw(st.integers(2, 4))
    shape = tuple(draw(st.integers(1, 6)) for _ in range(ndim))
    dtype = np.dtype(draw(st.sampled_from(("uint8", "int16", "int32", "uint16", "float32", "float64"))))
    data = np.random.default_rng(len(shape)).integers(0, 50, shape).astype(dtype)
    planted = 0
    if dtype.kind == "f":
        planted = draw(st.integers(0, min(data.size, 3)))
        data.reshape(-1)[:planted] = np.nan
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr["vox_offset"] = 352
    hdr["pixdim"][1:4] = [draw(st.sampled_from(_ODD)) for _ in range(3)]
    hdr["pixdim"][0] = draw(st.sampled_from((1.0, -1.0, 0.0)))
    hdr["qform_code"], hdr["sform_code"] = draw(st.integers(0, 5)), draw(st.integers(0, 5))
    for key in ("quatern_b", "quatern_c", "quatern_d"):
        hdr[key] = draw(st.sampled_from((0.0, 0.5, 1.0, 2.0)))
    for row in ("srow_x", "srow_y", "srow_z"):
        hdr[row] = [draw(st.sampled_from(_ODD)) for _ in range(3)] + [draw(st.floats(-300, 300))]
    if draw(st.booleans()):
        hdr["scl_slope"] = draw(st.sampled_from((1.0, 2.0, 0.0)))
        hdr["scl_inter"] = draw(st.sampled_from((0.0, -1024.0)))
    raw = hdr.binaryblock + b"\x00" * 4 + data.astype(dtype.newbyteorder("<")).tobytes(order="F")
    return raw, planted


@FUZZ
@given(nifti_files(), st.booleans())
def test_random_nifti_files_read_or_refuse_in_one_line(tmp_path_factory, case, gz):
    raw, planted = case
    _check_file(tmp_path_factory.mktemp("nii"), "fuzz.nii.gz" if gz else "fuzz.nii",
                gzip.compress(raw) if gz else raw, planted)  # fmt: skip


# -------------------------------------------------------------------------------------- NRRD
_NRRD_TYPES = {"uchar": "u1", "short": "i2", "ushort": "u2", "int": "i4", "float": "f4", "double": "f8"}


@st.composite
def nrrd_files(draw):
    """(bytes of a NRRD file, NaN voxels planted)."""
    ndim = draw(st.integers(2, 4))
    sizes = [draw(st.integers(1, 6)) for _ in range(ndim)]
    type_name = draw(st.sampled_from(sorted(_NRRD_TYPES)))
    endian = draw(st.sampled_from(("little", "big")))
    dtype = np.dtype(_NRRD_TYPES[type_name]).newbyteorder("<" if endian == "little" else ">")
    n = int(np.prod(sizes))
    values = np.random.default_rng(n).integers(0, 60, n).astype(dtype)
    planted = 0
    if dtype.kind == "f":
        planted = draw(st.integers(0, min(n, 3)))
        values[:planted] = np.nan
    lines = ["NRRD0004", f"type: {type_name}", f"dimension: {ndim}", f"sizes: {' '.join(map(str, sizes))}",
             f"endian: {endian}"]  # fmt: skip
    encoding = draw(st.sampled_from(("raw", "gzip")))
    lines.append(f"encoding: {encoding}")
    spacing = [draw(st.sampled_from(("1", "0.5", "0", "-1", "nan", "2.5"))) for _ in range(ndim)]
    if ndim == 3 and draw(st.booleans()):
        lines.append("space: left-posterior-superior")
        lines.append("space directions: " + " ".join(
            f"({','.join(spacing[i] if j == i else '0' for j in range(3))})" for i in range(3)))  # fmt: skip
        lines.append(f"space origin: ({draw(st.floats(-100, 100))},0,0)")
    elif draw(st.booleans()):
        lines.append(f"spacings: {' '.join(spacing)}")
    data = values.tobytes()
    data = data[: max(0, len(data) - draw(st.sampled_from((0, 0, 0, 1, 5))))]  # sometimes short
    body = gzip.compress(data) if encoding == "gzip" else data
    return ("\n".join(lines) + "\n\n").encode() + body, planted


@FUZZ
@given(nrrd_files())
def test_random_nrrd_files_read_or_refuse_in_one_line(tmp_path_factory, case):
    _check_file(tmp_path_factory.mktemp("nrrd"), "fuzz.nrrd", *case)


def test_the_reader_property_can_fail(tmp_path, monkeypatch):
    """Negative control: a reader that turned NaN into 0 would be caught by the NaN property."""
    import medanomaly.io.itk as itk

    real = itk.read_itk

    def zeroing(path, **kw):
        vol = real(path, **kw)
        return vol.with_array(np.nan_to_num(np.asarray(vol.array), nan=0.0))

    monkeypatch.setattr(itk, "read_itk", zeroing)
    values = np.array([np.nan, 1.0, 2.0, 3.0], "<f4")
    path = tmp_path / "nan.nrrd"
    path.write_bytes(b"NRRD0004\ntype: float\ndimension: 2\nsizes: 2 2\nendian: little\nencoding: raw\n\n"
                     + values.tobytes())  # fmt: skip
    vol = _read_or_refuse(path)
    assert vol is not None and _nan_count(vol.array) == 0  # the property above would flag this file
