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
