"""Bad input of any kind: one InputError naming the file and the reason, never another exception."""

from __future__ import annotations

import numpy as np
import pytest

from medanomaly.data.sources import real_data
from medanomaly.errors import InputError
from medanomaly.io import detect_format, read, write
from medanomaly.types import Volume


def test_io_errors_missing_empty_unknown(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        read(tmp_path / "nope.nii.gz")
    (tmp_path / "empty.dcm").write_bytes(b"")
    with pytest.raises(InputError, match="empty.dcm: empty file"):
        read(tmp_path / "empty.dcm")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match="notes.txt: unsupported file type '.txt'"):
        read(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="cannot write"):
        write(Volume(np.zeros((1, 2, 2))), tmp_path / "x.txt")


def test_io_errors_non_image_without_suffix_and_truncated_dicom(tmp_path):
    (tmp_path / "README").write_text("plain text without a suffix")
    with pytest.raises(InputError, match="README: not a DICOM file"):
        read(tmp_path / "README")
    data = real_data("pydicom/CT_small.dcm").read_bytes()
    for cut in (200, 1500, len(data) - 1000):
        (tmp_path / "cut.dcm").write_bytes(data[:cut])
        with pytest.raises(InputError) as err:
            read(tmp_path / "cut.dcm")
        assert "cut.dcm" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("key", "fmt"),
    [
        ("pydicom/CT_small.dcm", "dicom"),
        ("pyradiomics/lung1_image.nrrd", "nrrd"),
        ("mricron/ch2.nii.gz", "nifti"),
        ("itk/BrainT1Slice.png", "png"),
    ],
)
def test_io_detect_format(key, fmt):
    assert detect_format(real_data(key)) == fmt


def test_io_dicom_folder_write_read(tmp_path):
    vol = Volume(np.full((3, 4, 5), 40, np.int16), spacing=(0.8, 0.8, 3.0), meta={"modality": "CT"})
    write(vol, tmp_path / "series")
    back = read(tmp_path / "series")
    assert back.same_grid(vol) and back.meta["units"] == "HU"
    np.testing.assert_array_equal(back.array, vol.array)


@pytest.mark.parametrize(
    "key",
    [
        "pydicom/CT_small.dcm",
        "pydicom/MR_small_RLE.dcm",
        "pydicom/emri_small_jpeg_ls_lossless.dcm",
        "pydicom/SC_rgb_jpeg_dcmtk.dcm",
        "pydicom/MR_small_jp2klossless.dcm",
        "pyradiomics/breast1_image.nrrd",
        "itk/BrainT1Slice.png",
    ],
)
def test_io_errors_damaged_real_files_only_raise_input_error(tmp_path, key):
    """Truncated or byte-damaged real files: either read, or one InputError (never another
    exception, not even a decoder's Rust panic)."""
    import random

    src = real_data(key)
    data = src.read_bytes()
    rng = random.Random(f"{key}-damage")
    for trial in range(10):
        damaged = bytearray(data)
        if trial % 2 == 0:
            damaged = damaged[: rng.randrange(1, len(data))]
        else:
            start = rng.randrange(len(data) // 4, len(data))  # keep most headers, hit the pixels
            for i in range(start, min(len(data), start + 256)):
                damaged[i] = rng.randrange(256)
        path = tmp_path / f"damaged{trial}{src.suffix}"
        path.write_bytes(bytes(damaged))
        try:
            read(path)
        except InputError as exc:
            assert str(exc).startswith(str(path)) and "\n" not in str(exc)


def test_io_errors_rle_decoder_panic_becomes_input_error(tmp_path):
    """Damaged RLE segments make pylibjpeg-rle panic (a BaseException from Rust): one InputError."""
    import random

    data = real_data("pydicom/MR_small_RLE.dcm").read_bytes()
    rng = random.Random(0)
    for _ in range(3):  # the third damage of this sequence panics in the decoder
        damaged = bytearray(data)
        start = rng.randrange(len(data) // 4, len(data))
        for i in range(start, min(len(data), start + 256)):
            damaged[i] = rng.randrange(256)
    (tmp_path / "rle.dcm").write_bytes(bytes(damaged))
    with pytest.raises(InputError, match="rle.dcm: cannot decode pixel data"):
        read(tmp_path / "rle.dcm")


def test_io_check_writable_matches_write(tmp_path):
    """check_writable accepts exactly what write can write, and names the path when it cannot."""
    from medanomaly.io import check_writable, write
    from medanomaly.types import Volume

    vol = Volume(np.zeros((1, 4, 4), np.int16), meta={"modality": "CT"})  # one slice: PNG too
    for name in ("a.nii.gz", "a.nii", "a.nrrd", "a.mha", "a.png", "series_folder"):
        assert check_writable(tmp_path / name) == tmp_path / name
        write(vol, tmp_path / name)
    for name in ("a.xyz", "a.txt", "a.gz"):
        with pytest.raises(InputError, match=r"a\.\w+: cannot write"):
            check_writable(tmp_path / name)
        with pytest.raises(InputError, match="cannot write"):
            write(vol, tmp_path / name)


def test_nifti_with_a_near_singular_affine_is_refused_in_one_line(tmp_path):
    """Columns almost parallel: the scaled matrix's determinant (1e-7) passed the reader's old test,
    and the Volume then raised a ValueError; the reader now applies the Volume's own test."""
    import nibabel as nib

    affine = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 1e-7, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), affine), tmp_path / "flat.nii.gz")
    with pytest.raises(InputError, match="degenerate NIfTI geometry"):
        read(tmp_path / "flat.nii.gz")


def test_a_nifti_whose_qform_quaternion_is_no_rotation_says_so(tmp_path):
    """quatern_b = quatern_c = 0.9 (b^2 + c^2 over 1): nibabel's "w2 should be positive, but is -6.2e-01" was all."""
    import nibabel as nib

    image = nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), None)
    image.header.set_qform(np.diag([0.8, 0.8, 2.0, 1.0]), 1)
    image.header["quatern_b"], image.header["quatern_c"] = 0.9, 0.9
    nib.save(image, tmp_path / "quaternion.nii")
    with pytest.raises(InputError, match=r"quaternion.nii: not a readable nifti image \(its qform quaternion is not a "
                                         r"rotation: quatern_b\^2 \+ quatern_c\^2 \+ quatern_d\^2 is over 1\)$"):
        read(tmp_path / "quaternion.nii")


def test_a_series_asked_of_a_single_image_file_is_refused(tmp_path):
    """`info IMAGE.nrrd --series UID` read the NRRD and ignored the series asked for."""
    path = write(Volume(np.zeros((2, 4, 4), np.int16), (1.0, 1.0, 1.0)), tmp_path / "v.nrrd")
    assert read(path).shape == (2, 4, 4)
    with pytest.raises(InputError, match="a series .* is chosen in a DICOM folder or file, not in a nrrd image"):
        read(path, series_uid="1.2.3")


def test_a_file_name_that_is_not_utf8_is_one_error_not_an_aborted_process(tmp_path):
    """A name holding byte 0xFF (a Latin-1 system's file) reaches Python as a lone surrogate; SimpleITK's C++ string
    conversion aborted the whole process on it ('terminate called after throwing std::logic_error'), so this is
    run in a child process: before the fix it died by SIGABRT."""
    import os
    import subprocess
    import sys

    from medanomaly.io import read, write

    good = tmp_path / "good.png"
    write(Volume(np.arange(64, dtype=np.uint8).reshape(1, 8, 8)), good)
    bad = tmp_path / os.fsdecode(b"scan\xff.png")
    bad.write_bytes(good.read_bytes())
    code = ("import sys\nfrom medanomaly.io import read\nfrom medanomaly.errors import InputError\n"
            "try:\n    read(sys.argv[1])\nexcept InputError as e:\n    print(ascii(str(e)))\n")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code, bad], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "file name is not UTF-8 text, which ITK cannot open" in result.stdout
    with pytest.raises(InputError, match="not UTF-8 text") as err:  # the writer, before any file is made
        write(read(good), tmp_path / os.fsdecode(b"out\xff.nii.gz"))
    assert err.value.path == tmp_path / os.fsdecode(b"out\xff.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["good.png", bad.name])


def test_a_device_or_a_named_pipe_is_not_read_as_an_empty_file(tmp_path):
    """``scan.nii`` linked to /dev/zero and a named pipe ``pipe.nrrd`` were each refused as an 'empty file' (their
    size is 0): the reason now says what they are."""
    import os

    (tmp_path / "scan.nii").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "pipe.nrrd")
    for name in ("scan.nii", "pipe.nrrd"):
        with pytest.raises(InputError, match="not a regular file") as err:
            read(tmp_path / name)
        assert err.value.path == tmp_path / name
    (tmp_path / "empty.nii").write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        read(tmp_path / "empty.nii")


def test_a_header_whose_voxel_size_or_position_no_scanner_gives_is_one_line(tmp_path):
    """A NIfTI, NRRD or DICOM header of 1e-30 or 1e30 mm voxels, or a position 1e30 mm away, was read as it said:
    `segment` then stopped in a traceback ("Maximum allowed dimension exceeded": a 10 mm disc of 1e31 pixels) and
    `predict` said "negative image dimension in the header" for an overflowed size. Refused when read, naming the
    file; an NRRD in micrometres (800 um voxels) is converted first and read."""
    import copy

    import nibabel as nib
    import nrrd
    import pydicom

    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.float32), np.diag([1e-30, 1e-30, 1e-30, 1.0])), tmp_path / "a.nii.gz")
    nrrd.write(str(tmp_path / "b.nrrd"), np.zeros((8, 8, 4), np.int16), {"space": "left-posterior-superior",
               "space directions": np.diag([1e30, 1e30, 1e30]), "space origin": np.zeros(3)})  # fmt: skip
    ds = pydicom.dcmread(real_data("pydicom/CT_small.dcm"))
    far = copy.deepcopy(ds)
    far.ImagePositionPatient = ["1e30", "0", "0"]
    far.save_as(tmp_path / "c.dcm")
    ds.PixelSpacing = ["1e-30", "1e-30"]
    ds.save_as(tmp_path / "d.dcm")
    for name, reason in (("a.nii.gz", "is not a voxel size"), ("b.nrrd", "is not a voxel size"),
                         ("c.dcm", "is not a position in a scanner"), ("d.dcm", "is not a voxel size")):  # fmt: skip
        with pytest.raises(InputError, match=rf"{name}: .*{reason}"):
            read(tmp_path / name)
    nrrd.write(str(tmp_path / "um.nrrd"), np.zeros((8, 8, 4), np.int16), {"space": "left-posterior-superior",
               "space directions": np.diag([800.0, 900.0, 2000.0]), "space origin": np.zeros(3),
               "space units": ["um", "um", "um"]})  # fmt: skip
    np.testing.assert_allclose(read(tmp_path / "um.nrrd").spacing, (0.8, 0.9, 2.0), rtol=1e-6)
