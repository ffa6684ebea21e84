"""``--frame N``: one frame of a cine loop (frames in time) measured, predicted or searched as the one image it is;
a cine without it is refused, an image whose slices lie in space refuses the option, a frame out of range is named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from medanomaly.engine import predict_paths
from medanomaly.errors import InputError
from medanomaly.io import read, write
from medanomaly.types import Prediction, Volume

from .conftest import run_main


def _grey_cine(tmp_path: Path) -> Path:
    """The first 4 frames of pydicom's echocardiography cine (FrameIncrementPointer: FrameTime), made grey."""
    from pydicom.data import get_testdata_file
    from pydicom.uid import ExplicitVRLittleEndian

    ds = pydicom.dcmread(get_testdata_file("color3d_jpeg_baseline.dcm"))
    grey = np.ascontiguousarray(ds.pixel_array[:4, :, :, 0], dtype=np.uint8)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.NumberOfFrames = "MONOCHROME2", 1, 4
    del ds.PlanarConfiguration
    ds.PixelData = grey.tobytes()
    ds.save_as(tmp_path / "cine.dcm", enforce_file_format=True)
    return tmp_path / "cine.dcm"


def test_quantify_measures_one_frame_of_a_cine(tmp_path, monkeypatch, capsys) -> None:
    """quantify refused a cine (its z is time) and the refusal said to save a frame as its own file: --frame takes
    it, with a mask drawn on the whole cine (the same frame is taken) or on that frame alone."""
    cine_path = _grey_cine(tmp_path)
    cine = read(cine_path)
    assert cine.meta["frame_axis"] == "time" and cine.shape == (4, 480, 640)
    marks = np.zeros(cine.shape, np.uint8)
    marks[2, 100:140, 200:260] = 1  # 40 x 60 pixels on frame 2
    grid = {"spacing": cine.spacing, "origin": cine.origin, "direction": cine.direction}
    write(Volume(marks, **grid), tmp_path / "cine_mask.nrrd")
    write(Volume(marks[2:3], **grid), tmp_path / "frame_mask.nrrd")
    area = 40 * 60 * cine.spacing[0] * cine.spacing[1]  # mm2
    for mask in ("cine_mask.nrrd", "frame_mask.nrrd"):
        code, out, err = run_main(monkeypatch, capsys, "quantify", str(cine_path), "--mask", str(tmp_path / mask),
                                  "--frame", "2")  # fmt: skip
        assert code == 0 and f"area {area:.1f} mm²" in out, err
    refusals = ((["--frame", "9"], "cine.dcm: --frame 9: the cine has 4 frames (0..3)"),
                ([], "give --frame N to take one frame"))  # fmt: skip
    for options, why in refusals:
        code, _, err = run_main(monkeypatch, capsys, "quantify", str(cine_path), "--mask",
                                str(tmp_path / "cine_mask.nrrd"), *options)  # fmt: skip
        assert code == 2 and why in err, err
    code, _, err = run_main(monkeypatch, capsys, "quantify", str(tmp_path / "cine_mask.nrrd"), "--mask",
                            str(tmp_path / "cine_mask.nrrd"), "--frame", "0")  # fmt: skip
    assert code == 2 and "--frame 0: not a cine loop (its 4 slice(s) lie in space" in err, err


class _FrameModel:
    """A stand-in 2D model: checks it gets one slice (as a model's predict checks its input) and returns that slice's
    mean."""

    def check_input(self, volume: Volume, path: object = None) -> None:
        if volume.shape[0] != 1:
            raise InputError("a 2D model takes one slice", path)

    def predict(self, volume: Volume) -> Prediction:
        self.check_input(volume)
        return Prediction(scores=(float(volume.array.mean()),), class_names=("mean",), label="mean")


def test_predict_takes_the_frame_of_each_cine_and_names_a_file_that_is_not_one(tmp_path) -> None:
    cine_path = _grey_cine(tmp_path)
    write(Volume(np.zeros((3, 8, 8), np.uint8)), tmp_path / "stack.nrrd")
    results = list(predict_paths(_FrameModel(), [cine_path, tmp_path / "stack.nrrd"], frame=1))
    assert results[0][1].scores[0] == pytest.approx(float(read(cine_path).array[1].mean()))
    assert isinstance(results[1][1], InputError) and "not a cine loop" in str(results[1][1])
    assert isinstance(next(iter(predict_paths(_FrameModel(), [cine_path])))[1], InputError)  # no --frame: refused


def test_explain_takes_a_frame_and_refuses_it_where_it_cannot_apply(tmp_path, monkeypatch, capsys,
                                                                     fixture_lung_run) -> None:  # fmt: skip
    cine_path = _grey_cine(tmp_path)
    for options, why in ((["--frame", "9"], "cine.dcm: --frame 9: the cine has 4 frames (0..3)"),
                         (["--frame", "1", "--evaluate"], "--frame explains one frame of one cine: not with"),
                         (["--frame", "1"], "cine.dcm: ")):  # the frame reaches the model's own check (a CT model)
        code, _, err = run_main(monkeypatch, capsys, "explain", str(fixture_lung_run), str(cine_path),
                                "-o", str(tmp_path / "explained"), *options)  # fmt: skip
        assert code == 2 and err.startswith("error: ") and why in err and "a cine loop" not in err, err


def test_a_cine_given_to_a_2d_model_says_how_to_take_a_frame(tmp_path, monkeypatch, capsys) -> None:
    """It was "a 3D image of shape (4, 480, 640) cannot feed a 2D model" (or "got a 3D volume (4 slices)")."""
    from .test_breast_detect_cli import _assembled_run

    run = _assembled_run(tmp_path)
    code, _, err = run_main(monkeypatch, capsys, "predict", str(run), str(_grey_cine(tmp_path)))
    assert code == 2 and err.strip().endswith("cine.dcm: a cine loop of 4 frames in time, where the model takes one "
                                              "2D image: give --frame N to take frame N"), err


def test_a_cine_in_an_archive_says_to_predict_its_file_alone(tmp_path, monkeypatch, capsys) -> None:
    """The archive's reason said "give --frame N", which an archive refuses: it names the command that takes it."""
    import csv

    from .test_breast_detect_cli import _assembled_run

    run = _assembled_run(tmp_path)
    (tmp_path / "archive").mkdir()
    _grey_cine(tmp_path / "archive")
    code, _, _ = run_main(monkeypatch, capsys, "predict", str(run), str(tmp_path / "archive"), "--no-dicom", "-o",
                          str(tmp_path / "out"))  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    assert code == 1 and [row["status"] for row in rows] == ["error"]
    assert rows[0]["reason"].endswith("predict its file alone with `medanomaly predict RUN FILE --frame N`"), rows


def test_frame_is_refused_for_an_archive_and_a_fusion(tmp_path, monkeypatch, capsys, fixture_lung_run) -> None:
    """An archive's series are not one cine: --frame was ignored there without a word."""
    (tmp_path / "archive").mkdir()
    code, _, err = run_main(monkeypatch, capsys, "predict", str(fixture_lung_run), str(tmp_path / "archive"),
                            "--frame", "1", "-o", str(tmp_path / "out"))  # fmt: skip
    assert code == 2 and "--frame takes one frame of a cine or 4D file, not of every series of an archive" in err, err
    assert not (tmp_path / "out").exists()
    code, _, err = run_main(monkeypatch, capsys, "predict", str(fixture_lung_run), "T1=a.nrrd", "PD=b.nrrd",
                            "--frame", "1")  # fmt: skip
    assert code == 2 and "not of a fusion's modalities" in err, err  # it was ignored there


def test_fusion_refuses_a_cine_as_a_modality(tmp_path) -> None:
    """A 2D fusion network took a cine's middle frame without a word (its rule for a 3D image)."""
    from medanomaly.fusion.data import PairedSample, sample_to_array

    cine = read(_grey_cine(tmp_path))
    with pytest.raises(InputError, match="T1: a cine loop of 4 frames in time, where fusion takes co-registered"):
        sample_to_array(PairedSample("case", {"T1": cine, "PD": None}, -1), ("T1", "PD"), (16, 16))


def test_info_says_a_cine_is_frames_in_time(tmp_path, monkeypatch, capsys) -> None:
    """info showed a cine's z spacing as "1 mm" and nothing else: its frames are time, and --frame takes one."""
    import json

    cine_path = _grey_cine(tmp_path)
    code, out, _ = run_main(monkeypatch, capsys, "info", str(cine_path), "--json")
    assert code == 0 and json.loads(out)["frame_axis"] == "time"
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_main(monkeypatch, capsys, "info", str(cine_path))
    assert code == 0 and "a cine loop: frames in time, z is not mm; --frame N takes one" in out
