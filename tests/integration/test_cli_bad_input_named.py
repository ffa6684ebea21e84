"""Bad input through the real console entry point: one line on stderr naming the file, exit 2, no
library warning noise, for errors raised deep in a check (NaN voxels) and for a broken DICOM."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medanomaly.errors import InputError, about_file
from medanomaly.types import Volume


def test_about_file_names_the_input_only_when_the_error_has_no_file():
    with pytest.raises(InputError) as exc_info, about_file("scan.nii.gz"):
        raise InputError("image has 1 NaN/infinite voxels")
    assert str(exc_info.value) == "scan.nii.gz: image has 1 NaN/infinite voxels"
    with pytest.raises(InputError) as exc_info, about_file("scan.nii.gz"):
        raise InputError("truncated", "other.dcm")
    assert str(exc_info.value) == "other.dcm: truncated"


def _cli(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medanomaly.cli.app", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)  # fmt: skip


def test_detect_and_explain_name_the_file_of_a_nan_volume_and_a_broken_dicom(tmp_path, fixture_lung_run):
    """One line naming the file, exit 2, and no empty output folder left behind (a refused `detect` had left an
    empty runs/detect-<name>-<time>, one per try)."""
    import nibabel as nib

    run = fixture_lung_run  # tests/integration/conftest.py: the committed fixture detector
    hu = np.full((10, 64, 64), -800, np.float32)
    hu[5, 30, 30] = np.nan
    nib.save(nib.Nifti1Image(hu.transpose(2, 1, 0), np.diag([1.0, 1.0, 5.0, 1.0])), tmp_path / "nan.nii.gz")
    broken = b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x04\x00abcd" * 3  # odd UID value, no pixel data
    (tmp_path / "broken.dcm").write_bytes(broken)
    for verb, image in (("detect", "nan.nii.gz"), ("explain", "nan.nii.gz"), ("detect", "broken.dcm")):
        res = _cli(verb, run, image, "-o", tmp_path / f"out-{verb}-{image}", cwd=tmp_path)
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {image}: "), res.stderr
        assert not (tmp_path / f"out-{verb}-{image}").exists()  # the folder it made for the outputs is gone
    (tmp_path / "mine").mkdir()
    for verb, out in (("detect", None), ("explain", None), ("detect", tmp_path / "mine")):  # default runs/<verb>-...
        res = _cli(verb, run, "broken.dcm", *(["-o", out] if out else []), cwd=tmp_path)
        assert res.returncode == 2, res.stderr
    assert not (tmp_path / "runs").exists() and (tmp_path / "mine").is_dir()  # a folder that was there stays


def test_values_float32_cannot_hold_are_refused_in_one_line_not_turned_into_infinities(tmp_path, fixture_lung_run):
    """A float64 CT with voxels up to 1e300 (a NIfTI scl_slope can put them there; info shows them) became infinite
    in the float32 every model and step computes in: numpy's overflow warnings on the terminal, then a wrong reason
    ("brain_mask: image is constant") or a result; quantify's SD overflowed to inf. One line now, the same for each."""
    import nibabel as nib

    hu = np.full((10, 64, 64), -800.0)
    hu[5, 30, 30] = 1e300
    nib.save(nib.Nifti1Image(hu.transpose(2, 1, 0), np.diag([1.0, 1.0, 5.0, 1.0])), tmp_path / "huge.nii.gz")
    mask = np.zeros((64, 64, 10), np.uint8)
    mask[28:33, 28:33, 4:7] = 1
    nib.save(nib.Nifti1Image(mask, np.diag([1.0, 1.0, 5.0, 1.0])), tmp_path / "mask.nii.gz")
    commands = (("detect", fixture_lung_run, "huge.nii.gz", "-o", "det"), ("predict", fixture_lung_run, "huge.nii.gz"),
                ("quantify", "huge.nii.gz", "--mask", "mask.nii.gz"), ("segment", "huge.nii.gz", "--roi", "body"),
                ("register", "mask.nii.gz", "huge.nii.gz", "--out", "moved.nii.gz"))
    for command in commands:
        res = _cli(*command, cwd=tmp_path)
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert res.stderr.startswith("error: huge.nii.gz: ") and "1 voxels beyond float32's range (up to 1e+300" in (
            res.stderr), res.stderr


def test_predict_gives_one_bad_file_the_error_line_and_a_batch_its_skipped_lines(tmp_path, fixture_lung_run):
    (tmp_path / "bad.png").write_text("not an image")
    (tmp_path / "bad2.png").write_text("not an image either")
    one = _cli("predict", fixture_lung_run, "bad.png", cwd=tmp_path)
    assert one.returncode == 2 and one.stderr.strip().splitlines() == [
        "error: bad.png: not a readable png image (corrupt or truncated)"], one.stderr
    both = _cli("predict", fixture_lung_run, "bad.png", "bad2.png", cwd=tmp_path)
    lines = both.stderr.strip().splitlines()
    assert both.returncode == 2 and [line.split(":")[:2] for line in lines] == [["skipped", " bad.png"],
                                                                                ["skipped", " bad2.png"]], both.stderr


@pytest.mark.parametrize("argv", [
    ["segment", "{image}", "--out", "{blocker}/mask.nii.gz"],
    ["token", "new", "--tokens", "{blocker}/tokens.json"],
    ["fusion-benchmark", "{config}", "--out", "{blocker}"],
])  # fmt: skip
def test_an_output_under_a_regular_file_is_one_line_naming_it(tmp_path, monkeypatch, capsys, argv):
    """Any verb writing under a regular file (or to a read-only or full place) ended in a FileExistsError traceback;
    the console entry point now says it in one line naming the path, exit 2, as it did for a missing file."""
    from medanomaly.cli.app import main
    from medanomaly.data.sources import pyradiomics_case

    blocker = tmp_path / "afile"
    blocker.write_text("x")
    config = Path(__file__).resolve().parents[2] / "configs" / "fusion_brain_sim.yaml"
    values = {"image": str(pyradiomics_case("lung1")[0]), "blocker": str(blocker), "config": str(config)}
    monkeypatch.setattr(sys, "argv", ["medanomaly", *(a.format(**values) for a in argv)])
    with pytest.raises(SystemExit) as code:
        main()
    err = capsys.readouterr().err.strip()
    assert code.value.code == 2 and err in (f"error: {blocker}: is a file, where a folder is needed",
                                            f"error: {blocker}: cannot write the output folder (File exists)")


def test_a_hostile_file_name_cannot_split_the_line_or_drive_the_console(tmp_path, fixture_lung_run):
    """A file name from an archive may hold a line break (a forged second line), a terminal escape or a bidi
    control; the error line shows them escaped, still one line."""
    names = ["bad\nerror: forged.png", "red\x1b[31m.png", "gnp.\u202etxt.png"]
    for name in names:
        (tmp_path / name).write_text("not an image")
    one = _cli("predict", fixture_lung_run, names[0], cwd=tmp_path)
    assert one.returncode == 2 and one.stderr.splitlines() == [
        "error: bad\\nerror: forged.png: not a readable png image (corrupt or truncated)"], one.stderr
    batch = _cli("predict", fixture_lung_run, *names, cwd=tmp_path)
    lines = batch.stderr.splitlines()
    assert len(lines) == 3 and all(line.startswith("skipped: ") for line in lines), batch.stderr
    assert "\x1b" not in batch.stderr and "\u202e" not in batch.stderr and "red\\x1b[31m.png" in batch.stderr
    info = _cli("info", names[1], cwd=tmp_path)
    assert info.returncode == 2 and len(info.stderr.splitlines()) == 1 and "\x1b" not in info.stderr


def test_a_skipped_file_warning_is_one_line_whatever_its_name(capsys):
    import logging

    from medanomaly.cli.info import log_warnings_to_stderr

    log_warnings_to_stderr()
    logging.getLogger("medanomaly.io.dicom_series").warning("skipped %s: %s", "evil\nwarning: forged\x1b[2J.dcm",
                                                            "truncated DICOM")  # fmt: skip
    assert capsys.readouterr().err.splitlines() == ["warning: skipped evil\\nwarning: forged\\x1b[2J.dcm: truncated DICOM"]


def test_a_full_disk_a_library_reports_without_a_file_name_is_one_line(tmp_path, monkeypatch, capsys):
    """The last resort for a write into a full disk that no medanomaly code named: it was a traceback."""
    import errno

    import medanomaly.io as mio
    from medanomaly.cli.app import main

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    mio.write(Volume(np.zeros((2, 3, 4), np.int16)), tmp_path / "x.nii.gz")  # info reads its header first
    monkeypatch.setattr(mio, "read", disk_full)
    monkeypatch.setattr(sys, "argv", ["medanomaly", "info", str(tmp_path / "x.nii.gz")])
    with pytest.raises(SystemExit) as code:
        main()
    assert code.value.code == 2
    assert capsys.readouterr().err.strip() == "error: No space left on device (the disk of an output folder is full)"


def test_info_shows_a_name_that_is_not_utf8_under_a_strict_console(tmp_path):
    """``info`` of a NIfTI named with byte 0xFF (nibabel reads it) under a strict console encoding (en_US.UTF-8
    makes standard output strict): Rich's table of the name was a UnicodeEncodeError traceback; the byte now shows
    as an escape."""
    import os

    from medanomaly.io import write
    from medanomaly.types import Volume

    image = tmp_path / os.fsdecode(b"ct\xff.nii.gz")
    write(Volume(np.zeros((2, 8, 8), np.float32)), tmp_path / "ct.nii.gz").rename(image)
    result = subprocess.run([sys.executable, "-m", "medanomaly.cli.app", "info", image], capture_output=True,
                            timeout=120, env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"})  # fmt: skip
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr
    assert b"ct\\udcff.nii.gz" in result.stdout


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_standard_output_that_cannot_take_the_results_is_named_as_such(tmp_path):
    """``info > /dev/full`` (as a full disk under ``> out.txt``) said "the disk of an output folder is full" though
    no output folder was involved. A reader gone from the pipe (``| head -1``) stays click's way: exit 1, no word."""
    import subprocess
    import sys

    from medanomaly.data.sources import real_data

    image = str(real_data("pyradiomics/lung1_image.nrrd"))
    command = [sys.executable, "-m", "medanomaly.cli.app", "info", image, "--json"]
    with open("/dev/full", "w") as full:
        res = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
    assert res.returncode == 2 and res.stderr.splitlines() == [
        "error: standard output: No space left on device (the results could not be printed)"], res.stderr
    reader, writer = os.pipe()
    os.close(reader)  # the reader is gone before the first line
    proc = subprocess.run(command, stdout=writer, stderr=subprocess.PIPE, text=True, timeout=300)
    os.close(writer)
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr


def _nifti_with_pixdim(path: Path, pixdim: tuple[float, float, float], shape: tuple[int, ...], sform: bool) -> Path:
    """A NIfTI-1 written byte by byte from its header (nibabel refuses to make one with a zero pixel size)."""
    import nibabel as nib

    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header["pixdim"][1:4] = pixdim
    header["vox_offset"] = 352
    if sform:
        header.set_sform(np.diag([0.7, 0.7, 2.5, 1.0]), code=1)
    path.write_bytes(header.binaryblock + bytes(4) + data.tobytes(order="F"))
    return path


def test_a_nifti_whose_pixel_size_is_zero_is_read_with_1_mm_said_to_be_assumed(tmp_path):
    """pixdim[1] = 0 and no sform: nibabel took the spacing as 1 mm and printed a line of its own on stderr, and
    nothing said the mm were a guess. Now the stderr is quiet and the image is marked as a DICOM without
    PixelSpacing is (``spacing_assumed``: info says so, naming the axis, x here; findings carry
    it). An sform gives the geometry whatever the
    pixel sizes, and a one-slice image's slice thickness changes no measurement."""
    from medanomaly.io import read

    zero = _nifti_with_pixdim(tmp_path / "zero.nii", (0.0, 0.8, 2.0), (6, 5, 4), sform=False)
    result = _cli("info", zero.name, cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "(not in the file along x: 1 mm assumed there)" in " ".join(result.stdout.split()), result.stdout
    assert read(zero).meta.get("spacing_assumed") is True
    stated = read(_nifti_with_pixdim(tmp_path / "sform.nii", (0.0, 0.0, 0.0), (6, 5, 4), True))
    assert np.allclose(stated.spacing, (0.7, 0.7, 2.5)) and "spacing_assumed" not in stated.meta
    flat = read(_nifti_with_pixdim(tmp_path / "flat.nii", (0.6, 0.6, 0.0), (6, 5, 1), False))
    assert np.allclose(flat.spacing[:2], (0.6, 0.6)) and "spacing_assumed" not in flat.meta
