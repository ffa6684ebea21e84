"""``--frame N`` on a 4D image: one volume of a 4D NIfTI, NRRD or MetaImage (an fMRI or perfusion series, the Medical
Segmentation Decathlon's multi-contrast volumes) read alone and measured, predicted or shown as the 3D image it is; a
4D image without it is refused in one line saying which commands take it; a volume out of range is named."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medanomaly.errors import InputError
from medanomaly.io import read, write
from medanomaly.io.frames import read_frame
from medanomaly.types import Volume

from .conftest import run_main
from .test_service_api import make_classification_run

AFFINE = np.array([[0.0, 0.0, 2.5, -40.0], [-0.8, 0.0, 0.0, 30.0], [0.0, 0.9, 0.0, -12.0], [0.0, 0.0, 0.0, 1.0]])


def _four_d_nifti(path: Path, volumes: int = 3, scaled: bool = False) -> np.ndarray:
    """A 4D NIfTI of ``volumes`` int16 volumes (x, y, z, t) on an oblique sform; returns the stored array."""
    data = np.random.default_rng(1).integers(-500, 500, (9, 8, 7, volumes)).astype(np.int16)
    image = nib.Nifti1Image(data, AFFINE)
    image.set_sform(AFFINE, code=1)
    if scaled:
        image.header.set_slope_inter(0.5, 10.0)
    nib.save(image, path)
    return data


def test_one_volume_of_a_4d_nifti_is_read_as_its_3d_image(tmp_path) -> None:
    data = _four_d_nifti(tmp_path / "series.nii.gz", scaled=True)
    volume = read_frame(tmp_path / "series.nii.gz", 1)
    alone = nib.Nifti1Image(data[..., 1], AFFINE)
    alone.set_sform(AFFINE, code=1)
    alone.header.set_slope_inter(0.5, 10.0)
    nib.save(alone, tmp_path / "alone.nii.gz")
    expected = read(tmp_path / "alone.nii.gz")
    assert volume.same_grid(expected) and volume.array.dtype == expected.array.dtype == np.float32
    np.testing.assert_array_equal(volume.array, expected.array)
    np.testing.assert_array_equal(volume.array, (data[..., 1] * 0.5 + 10.0).transpose(2, 1, 0))
    assert volume.meta["description"].endswith(", volume 1 of 3")


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_one_volume_of_a_4d_nrrd_or_metaimage_is_read(tmp_path, suffix) -> None:
    stack = np.random.default_rng(2).integers(0, 900, (3, 5, 6, 7)).astype(np.int16)  # (t, z, y, x)
    image = sitk.GetImageFromArray(stack, isVector=False)
    image.SetSpacing((0.5, 0.7, 2.0, 1.0))
    image.SetOrigin((1.0, 2.0, 3.0, 0.0))
    sitk.WriteImage(image, str(tmp_path / f"series{suffix}"))
    volume = read_frame(tmp_path / f"series{suffix}", 2)
    np.testing.assert_array_equal(volume.array, stack[2])
    assert volume.spacing == pytest.approx((0.5, 0.7, 2.0)) and volume.origin == pytest.approx((1.0, 2.0, 3.0))
    with pytest.raises(InputError, match=rf"series{suffix}: 4D image \(3 volumes, 0..2\): info, predict, explain, "
                                         "detect, quantify, preprocess and segment take one with --frame N"):  # fmt: skip
        read(tmp_path / f"series{suffix}")
    with pytest.raises(InputError, match=rf"series{suffix}: --frame 3: the 4D image has 3 volumes \(0..2\)"):
        read_frame(tmp_path / f"series{suffix}", 3)


def test_frame_is_refused_for_a_3d_image_and_past_the_last_volume(tmp_path) -> None:
    _four_d_nifti(tmp_path / "series.nii", volumes=2)
    write(Volume(np.zeros((4, 5, 6), np.int16)), tmp_path / "plain.nii.gz")
    with pytest.raises(InputError, match=r"plain.nii.gz: --frame 0: not a cine loop \(its 4 slice\(s\) lie in space"):
        read_frame(tmp_path / "plain.nii.gz", 0)
    with pytest.raises(InputError, match=r"series.nii: --frame 2: the 4D image has 2 volumes \(0..1\)"):
        read_frame(tmp_path / "series.nii", 2)


def test_the_voxel_limit_applies_to_the_one_volume_read_from_a_nifti(tmp_path) -> None:
    """Only the volume's bytes are read (nibabel slices the file): a series over the limit as a whole gives one
    volume under it; the volume itself over the limit is refused before it is read."""
    _four_d_nifti(tmp_path / "series.nii", volumes=4)
    one_volume = 9 * 8 * 7 * 2  # bytes of int16
    assert read(tmp_path / "series.nii", volume=3, max_voxel_bytes=2 * one_volume).shape == (7, 8, 9)
    with pytest.raises(InputError, match="series.nii: .*voxel data"):
        read(tmp_path / "series.nii", volume=3, max_voxel_bytes=one_volume - 1)


def test_quantify_info_segment_and_predict_take_one_volume(tmp_path, monkeypatch, capsys) -> None:
    """quantify measures a mask drawn on the volume's grid (a 3D mask was cut to one slice as if the volume were a
    cine's frame); info shows the volume; predict names its files NAME_frameN, so two volumes do not replace each
    other's results, and records the frame."""
    data = _four_d_nifti(tmp_path / "series.nii.gz", volumes=2)
    marks = np.zeros(data.shape[:3], np.uint8)
    marks[2:5, 3:6, 1:4] = 1  # 27 voxels in every slice's grid
    mask = nib.Nifti1Image(marks, AFFINE)
    mask.set_sform(AFFINE, code=1)
    nib.save(mask, tmp_path / "mask.nii.gz")
    code, out, err = run_main(monkeypatch, capsys, "quantify", str(tmp_path / "series.nii.gz"), "--mask",
                              str(tmp_path / "mask.nii.gz"), "--frame", "1", "--json")  # fmt: skip
    assert code == 0, err
    lesion = json.loads(out)[0]
    assert lesion["n_voxels"] == 27 and lesion["volume_ml"] == pytest.approx(27 * 0.8 * 0.9 * 2.5 / 1000)
    assert lesion["mean_intensity"] == pytest.approx(float(data[..., 1][marks > 0].mean()))
    code, out, _ = run_main(monkeypatch, capsys, "info", str(tmp_path / "series.nii.gz"), "--frame", "1", "--json")
    assert code == 0 and json.loads(out)["shape"] == [7, 8, 9]
    code, _, err = run_main(monkeypatch, capsys, "segment", str(tmp_path / "series.nii.gz"), "--roi", "body", "-o",
                            str(tmp_path / "whole.nii.gz"))  # fmt: skip
    assert code == 2 and not (tmp_path / "whole.nii.gz").exists() and err.strip().endswith("4D image (2 volumes, 0..1): info, predict, explain, detect, quantify, "
                                              "preprocess and segment take one with --frame N, register with "
                                              "--fixed-frame / --moving-frame"), err
    code, out, err = run_main(monkeypatch, capsys, "segment", str(tmp_path / "series.nii.gz"), "--roi", "body",
                              "--frame", "1", "-o", str(tmp_path / "body.nii.gz"))  # fmt: skip
    assert code == 0 and read(tmp_path / "body.nii.gz").shape == (7, 8, 9), err

    run = make_classification_run(tmp_path / "cls")
    images = np.random.default_rng(3).normal(0, 1, (32, 32, 1, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(images, np.diag([0.5, 0.5, 1.0, 1.0])), tmp_path / "two.nii.gz")
    for frame in ("0", "1"):
        code, _, err = run_main(monkeypatch, capsys, "predict", str(run), str(tmp_path / "two.nii.gz"), "--frame",
                                frame, "-o", str(tmp_path / "out"))  # fmt: skip
        assert code == 0, err
    records = [json.loads((tmp_path / "out" / f"two_frame{k}.json").read_text()) for k in (0, 1)]
    assert [r["frame"] for r in records] == [0, 1] and records[0]["probabilities"] != records[1]["probabilities"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["two_frame0.json", "two_frame1.json"]


def test_a_4d_file_in_an_archive_says_to_predict_it_alone(tmp_path, monkeypatch, capsys) -> None:
    """An archive takes no --frame: its 4D NIfTI and NRRD files are skipped with the command that takes one, and the
    rest is predicted."""
    run = make_classification_run(tmp_path / "cls")
    archive = tmp_path / "archive"
    archive.mkdir()
    images = np.random.default_rng(4).normal(0, 1, (32, 32, 1, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(images, np.diag([0.5, 0.5, 1.0, 1.0])), archive / "four.nii.gz")
    stack = sitk.GetImageFromArray(images.transpose(3, 2, 1, 0).copy(), isVector=False)  # (t, z, y, x)
    sitk.WriteImage(stack, str(archive / "four.nrrd"))
    write(Volume(images[..., 0].transpose(2, 1, 0).copy(), spacing=(0.5, 0.5, 1.0)), archive / "plain.nii.gz")
    code, _, err = run_main(monkeypatch, capsys, "predict", str(run), str(archive), "--no-dicom", "-o",
                            str(tmp_path / "out"))  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    assert code == 0, (err, rows)
    problems = {row["where"]: row["reason"] for row in csv.DictReader((tmp_path / "out" / "problems.csv").open())}
    assert [row["status"] for row in rows] == ["done"]
    advice = "4D image (2 volumes, 0..1): predict its file alone with `medanomaly predict RUN FILE --frame N`"
    assert problems == {"four.nii.gz": advice, "four.nrrd": advice}, problems


def test_a_nifti_declaring_no_volumes_says_so(tmp_path) -> None:
    """A fourth dimension of 0 was "truncated or corrupt data: cannot reshape array of size 0", of -3 "negative
    count": the header declares no voxels, and the reason says that, with or without --frame."""
    import struct

    _four_d_nifti(tmp_path / "series.nii", volumes=2)
    raw = bytearray((tmp_path / "series.nii").read_bytes())
    for count in (0, -3):
        struct.pack_into("<h", raw, 48, count)  # dim[4]: the number of volumes
        (tmp_path / "none.nii").write_bytes(bytes(raw))
        for frame in (None, 0):
            with pytest.raises(InputError, match=rf"none.nii: dimensions \[9, 8, 7, {count}\]: a dimension below 1"):
                read_frame(tmp_path / "none.nii", frame)


def test_info_shows_a_4d_file_and_quantify_takes_the_same_volume_of_a_4d_mask(tmp_path, monkeypatch, capsys) -> None:
    """info refused a 4D file with "take one with --frame N" (an inspection tool that would not inspect): it shows
    volume 0 and says how many there are. A 4D mask (one label map per volume) gives quantify the --frame volume."""
    data = _four_d_nifti(tmp_path / "series.nii.gz", volumes=3)
    code, out, err = run_main(monkeypatch, capsys, "info", str(tmp_path / "series.nii.gz"), "--json")
    shown = json.loads(out)
    assert code == 0 and (shown["volumes"], shown["volume"], shown["shape"]) == (3, 0, [7, 8, 9]), err
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_main(monkeypatch, capsys, "info", str(tmp_path / "series.nii.gz"))
    assert code == 0 and "3 (a 4D image: volume 0 shown; --frame N shows another" in out
    marks = np.zeros((*data.shape[:3], 3), np.uint8)
    marks[2:4, 3:5, 1:3, 2] = 1  # 8 voxels, drawn on volume 2 only
    mask = nib.Nifti1Image(marks, AFFINE)
    mask.set_sform(AFFINE, code=1)
    nib.save(mask, tmp_path / "masks.nii.gz")
    counts = []
    for frame in ("1", "2"):
        code, out, err = run_main(monkeypatch, capsys, "quantify", str(tmp_path / "series.nii.gz"), "--mask",
                                  str(tmp_path / "masks.nii.gz"), "--frame", frame, "--json")  # fmt: skip
        counts.append((code, json.loads(out) if code == 0 else err))
    assert counts[0][0] == 2 and counts[0][1].strip().endswith("masks.nii.gz: lesion mask is empty")  # volume 1's
    assert counts[1][0] == 0 and counts[1][1][0]["n_voxels"] == 8
