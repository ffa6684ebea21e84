"""Issue 18, item 4: ``detect`` and ``predict`` prove the output folder can be written before any work.

The run folder and image given here do not exist: the answer must be about the output folder,
which shows it is checked first (before the run is loaded or the image read). The output lies under
a regular file, so it can never be created, even when the tests run as root.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from medanomaly.engine.outputs import prepare_output_dir
from medanomaly.errors import InputError


def _cli(*args: str) -> subprocess.CompletedProcess:
    code = "from medanomaly.cli.app import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def impossible_out(tmp_path: Path) -> Path:
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    return blocker / "sub"


def test_prepare_output_dir_refuses_a_path_under_a_file_in_one_line(impossible_out: Path):
    with pytest.raises(InputError, match="cannot write the output folder") as info:
        prepare_output_dir(impossible_out)
    assert info.value.path == impossible_out and "\n" not in str(info.value)


def test_prepare_output_dir_creates_a_writable_folder_and_leaves_no_probe(tmp_path: Path):
    out = prepare_output_dir(tmp_path / "a" / "b")
    assert out.is_dir() and list(out.iterdir()) == []


@pytest.mark.parametrize("verb", ["detect", "predict"])
def test_an_unwritable_output_is_refused_before_the_work(verb: str, impossible_out: Path, tmp_path: Path):
    result = _cli(verb, str(tmp_path / "no_run"), str(tmp_path / "no_image.nrrd"), "--out", str(impossible_out))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert str(impossible_out) in lines[0] and "cannot write the output folder" in lines[0]


def test_an_output_folder_name_that_is_not_utf8_is_refused_before_the_work(tmp_path: Path):
    """Maps, masks and pictures are written by ITK, which cannot take a name holding byte 0xFF: predict and explain
    failed after the work, naming a hidden staging folder inside."""
    import os

    out = tmp_path / os.fsdecode(b"out\xff")
    with pytest.raises(InputError, match="output folder name is not UTF-8 text") as info:
        prepare_output_dir(out)
    assert info.value.path == out and not out.exists()
    lung_run = str(Path(__file__).resolve().parents[1] / "fixtures" / "lung_detector")
    for verb, run in (("predict", str(tmp_path / "no_run")), ("explain", lung_run)):  # explain checks its options first
        result = _cli(verb, run, str(tmp_path / "no_image.nrrd"), "--out", str(out))
        assert result.returncode == 2 and "output folder name is not UTF-8 text" in result.stderr, result.stderr
