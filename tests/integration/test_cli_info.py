"""``medanomaly info``: JSON keys, shuffled series, bad inputs -> one line, exit code 2, no traceback."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medanomaly.cli.app import app
from medanomaly.data.sources import real_data
from medanomaly.io import read
from medanomaly.io.dicom_writer import write_dicom_series
from medanomaly.types import Volume
from tests.integration.conftest import run_main

runner = CliRunner()
JSON_KEYS = {"modality", "shape", "spacing_mm", "origin_mm", "direction", "min", "max"}


@pytest.fixture(scope="module")
def series_pair(tmp_path_factory) -> tuple[Path, Path]:
    """A real CT crop (lung1) written twice: names in slice order, and shuffled names."""
    lung = read(real_data("pyradiomics/lung1_image.nrrd"))
    crop = Volume(lung.array[10:20, 180:260, 160:240], spacing=lung.spacing,
                  origin=lung.index_to_physical((160, 180, 10)), meta={"modality": "CT"})  # fmt: skip
    root = tmp_path_factory.mktemp("cli_series")
    uid = "1.2.826.0.1.3680043.8.498.1"
    write_dicom_series(crop, root / "sorted", series_uid=uid)
    names = [f"{k:03d}.dcm" for k in range(crop.shape[0])]
    random.Random(7).shuffle(names)
    write_dicom_series(crop, root / "shuffled", series_uid=uid, file_names=names)
    return root / "sorted", root / "shuffled"


def info_json(path: Path, *extra: str) -> dict:
    result = runner.invoke(app, ["info", str(path), "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_cli_info_json_keys_on_real_scans():
    info = info_json(real_data("pyradiomics/lung1_image.nrrd"))
    assert JSON_KEYS <= set(info)
    assert info["shape"] == [48, 512, 512]
    assert info["spacing_mm"] == pytest.approx([0.5703, 0.5703, 5.0], abs=1e-4)
    assert info["min"] == -1024 and info["max"] == 3071
    assert np.allclose(info["direction"], np.eye(3))
    ct = info_json(real_data("pydicom/CT_small.dcm"))
    assert ct["modality"] == "CT" and ct["units"] == "HU" and ct["shape"] == [1, 128, 128]
    assert ct["frame_of_reference_uid"] == "1.3.6.1.4.1.5962.1.4.1.1.20040119072730.12322" and info[
        "frame_of_reference_uid"] is None  # what a DICOM mask or structure set must share; an NRRD has none
    echo = info_json(real_data("pydicom/color3d_jpeg_baseline.dcm"))
    assert echo["n_frames"] == 120 and echo["components"] == 3


def test_cli_info_shuffled_series_same_geometry(series_pair):
    sorted_dir, shuffled_dir = series_pair
    a, b = info_json(sorted_dir), info_json(shuffled_dir)
    assert a["spacing_mm"] == b["spacing_mm"] and a["origin_mm"] == b["origin_mm"]
    assert a["shape"] == b["shape"] == [10, 80, 80]
    assert (a["min"], a["max"]) == (b["min"], b["max"])
    assert a["spacing_mm"][2] == pytest.approx(5.0)


def test_cli_info_says_a_tilted_stack_is_a_sheared_grid(tmp_path):
    """A gantry-tilted series (read as a sheared grid since it is no longer refused) shows its tilt."""
    lung = read(real_data("pyradiomics/lung1_image.nrrd"))
    tilt = np.radians(12.0)
    sheared = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, np.sin(tilt)], [0.0, 0.0, np.cos(tilt)]])
    crop = Volume(lung.array[10:16, 180:220, 160:200], spacing=(*lung.spacing[:2], 5.0 / np.cos(tilt)),
                  direction=sheared, meta={"modality": "CT"})  # fmt: skip
    write_dicom_series(crop, tmp_path / "tilted", series_uid="1.2.826.0.1.3680043.8.498.3")
    assert info_json(tmp_path / "tilted")["shear_deg"] == pytest.approx(12.0, abs=1e-3)
    assert "sheared: axes 12.0 deg from square" in runner.invoke(app, ["info", str(tmp_path / "tilted")]).stdout
    assert info_json(real_data("pyradiomics/lung1_image.nrrd"))["shear_deg"] == 0.0


def test_cli_info_says_a_picture_was_turned_and_a_nifti_unit_converted(tmp_path):
    """A picture turned upright by its EXIF orientation shows a shape the file's header does not: info says why; a
    NIfTI in metres says its unit was converted."""
    import nibabel as nib
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((40, 60), np.uint8)).save(tmp_path / "side.jpg", exif=exif)
    assert info_json(tmp_path / "side.jpg")["exif_orientation"] == 6 and info_json(tmp_path / "side.jpg")["shape"] == [
        1, 60, 40]
    assert "turned upright as its EXIF orientation 6 says" in runner.invoke(app, ["info", str(tmp_path / "side.jpg")]).stdout
    Image.fromarray(np.zeros((40, 60), np.uint8)).save(tmp_path / "print.tif", dpi=(300, 300))
    printed = info_json(tmp_path / "print.tif")
    assert printed["print_resolution_dpi"] == [300.0, 300.0] and printed["spacing_mm"] == [1.0, 1.0, 1.0]
    assert "300.0 x 300.0 dpi" in runner.invoke(app, ["info", str(tmp_path / "print.tif")], terminal_width=200).stdout
    image = nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.diag([0.001, 0.001, 0.002, 1]))
    image.header.set_xyzt_units(xyz="meter")
    nib.save(image, tmp_path / "m.nii.gz")
    described = info_json(tmp_path / "m.nii.gz")
    assert described["nifti_geometry"].endswith("metres to mm") and described["spacing_mm"] == [1.0, 1.0, 2.0]
    assert info_json(real_data("pyradiomics/lung1_image.nrrd"))["exif_orientation"] is None


def test_cli_info_human_output(series_pair):
    result = runner.invoke(app, ["info", str(series_pair[0])])
    assert result.exit_code == 0
    for text in ("modality", "CT", "10 x 80 x 80", "spacing (x, y, z) mm", "HU"):
        assert text in result.stdout


def test_cli_info_series_choice(monkeypatch, capsys):
    folder = real_data("pydicom/dicomdirtests") / "77654033"
    code, out, err = run_main(monkeypatch, capsys, "info", str(folder))
    assert code == 2 and err.count("\n") == 1 and "4 series" in err and "Traceback" not in err
    listing = err.split("(--series UID): ")[1].strip().split("; ")
    cr_uid = next(item.split(" ")[0] for item in listing if "(CR, 1 files" in item)
    info = info_json(folder, "--series", cr_uid)
    assert info["modality"] == "CR" and info["n_series"] == 4 and info["shape"][0] == 1


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, series_pair) -> dict[str, tuple[Path, str]]:
    root = tmp_path_factory.mktemp("bad")
    truncated = root / "truncated.dcm"
    truncated.write_bytes(real_data("pydicom/CT_small.dcm").read_bytes()[:5000])
    text = root / "report.txt"
    text.write_text("not an image")
    empty = root / "empty_folder"
    empty.mkdir()
    gap = root / "gap_series"
    gap.mkdir()
    for f in sorted(series_pair[0].iterdir()):
        if f.name != "slice_0004.dcm":
            (gap / f.name).write_bytes(f.read_bytes())
    mixed = real_data("pydicom/dicomdirtests") / "77654033"
    return {
        "truncated": (truncated, "truncated DICOM"),
        "non-image": (text, "unsupported file type"),
        "empty": (empty, "empty folder"),
        "mixed": (mixed, "series, choose one"),
        "gap": (gap, "inconsistent slice spacing: gap of 10 mm"),
    }


@pytest.mark.parametrize("case", ["truncated", "non-image", "empty", "mixed", "gap"])
def test_cli_info_bad_input_one_line_exit_2(case, bad_inputs, monkeypatch, capsys):
    path, reason = bad_inputs[case]
    code, out, err = run_main(monkeypatch, capsys, "info", str(path))
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert str(path) in err and reason in err and "Traceback" not in err


def test_cli_info_corrupt_file_in_folder_is_reported(tmp_path, series_pair, monkeypatch, capsys):
    for f in series_pair[0].iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "zz_broken.dcm").write_bytes(b"\x01\x02garbage")
    code, out, err = run_main(monkeypatch, capsys, "info", "--json", str(tmp_path))
    assert code == 0
    assert json.loads(out)["skipped_files"] == ["zz_broken.dcm"]
    assert "skipped zz_broken.dcm" in err


def test_cli_info_console_script_no_traceback(tmp_path):
    """The installed entry point itself: bad input gives one line on stderr and exit code 2."""
    bad = tmp_path / "scan.nii.gz"
    bad.write_bytes(b"\x1f\x8b truncated gzip")
    exe = Path(sys.executable).with_name("medanomaly")
    proc = subprocess.run([str(exe), "info", str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "scan.nii.gz: not a readable nifti image" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_info_nifti_direction_has_no_negative_zero():
    """A real NIfTI (ITK examples) whose direction holds -0.0: printed as 0, in JSON and table."""
    path = real_data("itk/KmeansTest_T1UCharRaw.nii.gz")
    info = info_json(path)
    assert info["direction"][1] == [0.0, 0.0, -1.0]
    assert all(str(v) != "-0.0" for row in info["direction"] for v in row)
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 0 and "-0," not in result.stdout and "(0, 0, -1)" in result.stdout
