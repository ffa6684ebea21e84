"""Image files are written all-or-nothing: a write that fails half-way (full disk, Ctrl-C) leaves an earlier file of
that name whole and no partial file or hidden folder behind; detached headers (.nhdr, .mhd) still name their data."""

from __future__ import annotations

import numpy as np
import pytest

from medanomaly.errors import InputError
from medanomaly.io import read, write
from medanomaly.types import Volume


def _volume(value: int = 7) -> Volume:
    return Volume(np.full((3, 8, 9), value, np.int16), spacing=(2.0, 0.5, 0.5), meta={"modality": "CT"})


def _half_write_then_fail(message: str):
    def fake_write(image, name, *args, **kwargs):
        with open(name, "wb") as fh:
            fh.write(b"half a file")
        raise RuntimeError(f'ITK ERROR: ImageFileWriter: {message} "{name}"')

    return fake_write


@pytest.mark.parametrize("name", ["out.nii.gz", "out.nrrd", "out.png"])
def test_a_failed_write_leaves_the_earlier_file_whole(tmp_path, monkeypatch, name):
    import SimpleITK as sitk

    target = tmp_path / name
    volume = _volume() if not name.endswith(".png") else Volume(np.full((1, 8, 9), 7, np.uint8))
    write(volume, target)
    before = target.read_bytes()
    monkeypatch.setattr(sitk, "WriteImage", _half_write_then_fail("No space left on device"))
    with pytest.raises(InputError) as error:
        write(volume.with_array(volume.array + 1), target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no partial file, no hidden folder
    assert ".part" not in str(error.value)  # the message names the file asked for, not the stage


@pytest.mark.parametrize("name", ["out.nhdr", "out.mhd"])
def test_a_detached_header_still_names_its_data(tmp_path, name):
    target = write(_volume(5), tmp_path / name)
    assert np.array_equal(read(target).array, _volume(5).array)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    write(_volume(9), target)  # over the earlier pair
    assert np.array_equal(read(target).array, _volume(9).array) and len(list(tmp_path.iterdir())) == 2


def test_a_figure_that_fails_to_save_keeps_the_earlier_picture_and_is_closed(tmp_path):
    """The overlay, contact-sheet and breast-detection pictures closed their pyplot figure in their own ``finally``;
    the FROC plot did not close it when the write failed (one open figure per failure in a long-lived service)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medanomaly.io.staged import save_figure

    target = tmp_path / "froc.png"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    save_figure(fig, target, dpi=30)
    before = target.read_bytes()
    assert not plt.fignum_exists(fig.number)

    fig, ax = plt.subplots()
    with pytest.raises(ValueError):
        save_figure(fig, target, dpi=30, format="no-such-format")
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["froc.png"]
    assert not plt.fignum_exists(fig.number)


def test_a_writer_that_stops_short_on_a_full_disk_without_an_error_is_a_failure(tmp_path, monkeypatch):
    """ITK's NIfTI writer prints 'NWAD: wrote only 0 of N bytes' on a full disk and returns normally: the cut file
    was moved into place and `preprocess` / `register` reported it written (seen on a 3 MB tmpfs)."""
    import os
    from collections import namedtuple

    import SimpleITK as sitk

    target = tmp_path / "out.nii.gz"
    write(_volume(), target)
    before = target.read_bytes()

    def silently_short(image, name, *args, **kwargs):
        with open(name, "wb") as fh:
            fh.write(b"\x1f\x8b cut")  # and the file system is now full

    statvfs = namedtuple("statvfs", "f_blocks f_bfree f_bavail f_frsize")
    monkeypatch.setattr(sitk, "WriteImage", silently_short)
    monkeypatch.setattr(os, "statvfs", lambda path: statvfs(1000, 3, 0, 4096))
    with pytest.raises(OSError, match="No space left on device"):  # the CLI prints it as one line, exit 2
        write(_volume(8), target)
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz"]


def test_weights_are_written_whole_readable_like_any_file_and_a_full_disk_is_one_oserror(tmp_path):
    """safetensors makes its files 0600 (weights unreadable by a team sharing the run folder, beside 0644 images),
    and its full-disk error was a SafetensorError traceback from `train`, with the cut weights of a failed write."""
    import errno
    import os
    import stat

    from safetensors import SafetensorError
    from safetensors.numpy import save_file

    from medanomaly.io.staged import write_safetensors

    target = tmp_path / "weights.safetensors"
    old = os.umask(0o022)
    try:
        write_safetensors(target, lambda staged: save_file({"w": np.zeros(3, np.float32)}, staged))
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    before = target.read_bytes()

    def full(staged):
        with open(staged, "wb") as fh:
            fh.write(b"cut")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    with pytest.raises(OSError) as error:
        write_safetensors(target, full)
    assert error.value.errno == errno.ENOSPC and error.value.filename == str(target)
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_a_file_system_that_reports_no_size_is_not_taken_for_full(tmp_path, monkeypatch):
    """Some FUSE mounts answer statvfs with zeros: every write there would have been refused as a full disk."""
    import os
    from collections import namedtuple

    statvfs = namedtuple("statvfs", "f_blocks f_bfree f_bavail f_frsize")
    monkeypatch.setattr(os, "statvfs", lambda path: statvfs(0, 0, 0, 0))
    target = tmp_path / "out.nii.gz"
    write(_volume(), target)
    assert read(target).shape == (3, 8, 9)


def test_a_dicom_series_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """Each slice was staged on its own: a full disk at slice 3 of 5 left slices 1-2 in the folder, a shorter series
    that reads back without a word."""
    import errno
    import os

    from pydicom.dataset import FileDataset

    save_as = FileDataset.save_as
    calls = []

    def full_at_the_third(self, filename, *args, **kwargs):
        calls.append(filename)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filename))
        return save_as(self, filename, *args, **kwargs)

    monkeypatch.setattr(FileDataset, "save_as", full_at_the_third)
    with pytest.raises(OSError, match="No space left on device"):
        write(Volume(np.full((5, 8, 9), 7, np.int16), spacing=(2.0, 0.5, 0.5), meta={"modality": "CT"}),
              tmp_path / "series/")  # fmt: skip
    assert [p.name for p in tmp_path.rglob("*")] == ["series"] and not any((tmp_path / "series").iterdir())
    monkeypatch.setattr(FileDataset, "save_as", save_as)
    write(_volume(), tmp_path / "series/")
    assert read(tmp_path / "series").shape == (3, 8, 9)


def test_a_file_cut_short_by_the_file_size_limit_is_a_failure_not_written(tmp_path):
    """Under ``ulimit -f`` ITK's NIfTI writer stopped at the limit without an error (and NRRD's said "corrupt
    compressed data"): ``segment`` reported a cut ``.nii.gz`` as written."""
    import subprocess
    import sys
    import textwrap

    child = textwrap.dedent("""
        import resource, sys
        import numpy as np
        from medanomaly.io import write
        from medanomaly.types import Volume
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, resource.RLIM_INFINITY))
        noise = np.random.default_rng(0).integers(-1000, 1000, (8, 64, 64)).astype(np.int16)  # 64 KB, incompressible
        for name in sys.argv[1:]:
            try:
                write(Volume(noise, meta={"modality": "CT"}), name)
                print(name, "written")
            except OSError as exc:
                print(name, exc.strerror)
    """)
    names = [str(tmp_path / n) for n in ("cut.nii.gz", "cut.nii", "cut.nrrd", "cut.mha")]
    result = subprocess.run([sys.executable, "-c", child, *names], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{n} File too large (the file size limit, ulimit -f)" for n in names]
    assert list(tmp_path.iterdir()) == [] and result.stderr == ""  # nothing cut left, no native remark printed
