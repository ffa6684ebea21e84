"""What a batch killed outright leaves of its series-link folders, and what the next batch removes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from medanomaly.deploy.series_links import PREFIX, remove_orphaned_series_links, series_links_folder


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _folder(root: Path, pid: int, name: str, *, link: bool = True) -> Path:
    folder = root / f"{PREFIX}{pid}-{name}"
    folder.mkdir()
    target = root / "archive_file.dcm"
    target.write_bytes(b"the archive's own file")
    if link:
        os.symlink(target, folder / "000000.dcm")
    else:
        (folder / "000000.dcm").write_bytes(b"not a link")
    return folder


def test_folders_of_processes_that_no_longer_run_are_removed_and_nothing_else(tmp_path: Path) -> None:
    """A SIGKILL (the out-of-memory killer, kill -9) mid-read left /tmp/medanomaly-series-* with its links, one per
    killed batch, for ever. The next batch removes those of dead processes; a running process's folder, a folder
    holding a real file and a folder of an unrelated name stay, and the archive's files the links name are kept."""
    dead = _dead_pid()
    orphan = _folder(tmp_path, dead, "abc")
    live = _folder(tmp_path, os.getpid(), "def")
    with_file = _folder(tmp_path, dead, "ghi", link=False)
    unrelated = tmp_path / "medanomaly-series-xyz"
    unrelated.mkdir()
    assert remove_orphaned_series_links(tmp_path) == 1
    assert not orphan.exists() and live.is_dir() and with_file.is_dir() and unrelated.is_dir()
    assert (tmp_path / "archive_file.dcm").read_bytes() == b"the archive's own file"
    assert remove_orphaned_series_links(tmp_path / "no such folder") == 0


def test_a_series_folder_is_named_by_its_process_and_removed_after_the_read() -> None:
    with series_links_folder() as tmp:
        assert Path(tmp).name.startswith(f"{PREFIX}{os.getpid()}-") and Path(tmp).is_dir()
    assert not Path(tmp).exists()


def test_a_batch_removes_what_a_killed_batch_left(small_archive, fake_module, tmp_path: Path, monkeypatch) -> None:
    import tempfile

    from medanomaly.deploy.batch import BatchOptions, run_batch

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    orphan = _folder(tmp_path, _dead_pid(), "killed")
    run_batch(fake_module.FakeDetector(), small_archive.root, tmp_path / "out", BatchOptions(dicom=False),
              progress=False)  # fmt: skip
    assert not orphan.exists()
