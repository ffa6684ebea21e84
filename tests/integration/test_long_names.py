"""Input and output names as long as a file system takes (255 bytes): checked before the work, never a failure after
it, and in a batch the file whose outputs cannot be named is skipped while the rest are predicted."""

from __future__ import annotations

import shutil
from pathlib import Path

from medanomaly.data.sources import real_data

from .conftest import run_main


def test_predict_skips_an_input_whose_outputs_cannot_be_named_and_predicts_the_rest(tmp_path, monkeypatch, capsys,
                                                                                     tiny_anomaly_run):  # fmt: skip
    """A 248-character input name was predicted, then NAME_anomaly_map.nii.gz (267 bytes) could not be written:
    the command stopped there with "File name too long" and the files after it were never run."""
    run = tiny_anomaly_run(tmp_path, "normative")
    brain = real_data("pyradiomics/brain2_image.nrrd")
    long_name = tmp_path / ("a" * 248 + ".nrrd")
    shutil.copy(brain, long_name)
    shutil.copy(brain, tmp_path / "short.nrrd")
    code, _, err = run_main(monkeypatch, capsys, "predict", str(run), str(long_name), str(tmp_path / "short.nrrd"),
                            "--out", str(tmp_path / "out"))  # fmt: skip
    assert code == 0 and err.startswith("skipped: ") and "name is too long for its outputs (267 bytes" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["short.findings.json", "short.json",
                                                                     "short_anomaly_map.nii.gz"]  # fmt: skip


def test_an_output_name_too_long_is_refused_before_the_work_and_a_long_name_that_fits_is_written(
        tmp_path, monkeypatch, capsys):  # fmt: skip
    """preprocess OUT of 252 bytes: its .steps.json (256 bytes) failed after the pipeline, the image written without
    its log; segment OUT of 248 bytes, which the file system takes, failed in the staging folder's name (the name
    plus 15 bytes) after the work. The first is refused before reading the input, the second written; a default
    output folder keeps the first 100 characters of a long input name (it was itself too long)."""
    monkeypatch.chdir(tmp_path)
    lung = shutil.copy(real_data("pyradiomics/lung1_image.nrrd"), tmp_path / "lung.nrrd")
    config = Path(__file__).resolve().parents[2] / "configs" / "preprocess_lung.yaml"
    out = "b" * 245 + ".nii.gz"
    code, _, err = run_main(monkeypatch, capsys, "preprocess", str(lung), out, "-c", str(config))
    assert code == 2 and err.strip().endswith("the output's file name is too long (256 bytes; the folder takes 255)")
    assert not list(tmp_path.glob("b*"))
    out = "c" * 241 + ".nii.gz"
    code, stdout, err = run_main(monkeypatch, capsys, "segment", str(lung), out)
    assert code == 0 and (tmp_path / out).is_file() and "lung mask" in stdout, err
    long_input = shutil.copy(lung, tmp_path / ("d" * 248 + ".nrrd"))
    code, stdout, err = run_main(monkeypatch, capsys, "segment", str(long_input))
    assert code == 0, err
    (folder,) = (tmp_path / "runs").iterdir()
    assert folder.name.startswith("segment-" + "d" * 100 + "-") and (folder / ("d" * 100 + ".nii.gz")).is_file()


def test_a_write_under_a_name_its_folder_cannot_take_is_one_line_naming_it(tmp_path) -> None:
    import numpy as np
    import pytest

    from medanomaly.errors import InputError
    from medanomaly.io import write
    from medanomaly.types import Volume

    with pytest.raises(InputError, match=r"the output's file name is too long \(262 bytes; the folder takes 255\)"):
        write(Volume(np.zeros((2, 4, 4), np.uint8)), tmp_path / ("e" * 255 + ".nii.gz"))
    assert not list(tmp_path.iterdir())  # no hidden staging folder left
