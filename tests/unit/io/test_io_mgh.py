"""FreeSurfer MGH / MGZ (``T1.mgz``, ``brain.mgz``, ``aseg.mgz``): read with nibabel on the geometry FreeSurfer gives
them (it was "unsupported file type '.mgz'"), a 4D one volume at a time, a damaged one in one line, and listed by an
archive."""

from __future__ import annotations

import gzip
import struct

import nibabel as nib
import numpy as np
import pytest

from medanomaly.errors import InputError
from medanomaly.io import read
from medanomaly.io.frames import read_frame

#: An oblique vox2ras (RAS mm): 0.9 x 1.1 x 2.5 mm voxels, turned about z.
AFFINE = np.array([[0.0, -1.1, 0.0, 40.0], [0.9, 0.0, 0.0, -30.0], [0.0, 0.0, 2.5, 12.0], [0.0, 0.0, 0.0, 1.0]])


def test_an_mgz_reads_as_the_same_nifti_would(tmp_path) -> None:
    data = np.random.default_rng(0).normal(size=(6, 7, 8)).astype(np.float32)
    nib.save(nib.MGHImage(data, AFFINE), tmp_path / "brain.mgz")
    nib.save(nib.Nifti1Image(data, AFFINE), tmp_path / "brain.nii.gz")
    mgh, nifti = read(tmp_path / "brain.mgz"), read(tmp_path / "brain.nii.gz")
    assert mgh.same_grid(nifti) and mgh.spacing == pytest.approx((0.9, 1.1, 2.5))
    np.testing.assert_array_equal(mgh.array, nifti.array)
    assert mgh.meta == {"source_format": "mgh", "description": "FreeSurfer MGH geometry from its vox2ras matrix"}
    labels = np.zeros((6, 7, 8), np.uint8)
    labels[2:4, 3:5, 1:6] = 17  # aseg's left hippocampus
    nib.save(nib.MGHImage(labels, AFFINE), tmp_path / "aseg.mgz")
    aseg = read(tmp_path / "aseg.mgz")
    assert aseg.array.dtype == np.uint8 and int((aseg.array == 17).sum()) == 20


def test_a_4d_mgh_is_read_one_frame_at_a_time(tmp_path) -> None:
    data = np.random.default_rng(1).normal(size=(4, 5, 6, 3)).astype(np.float32)
    nib.save(nib.MGHImage(data, AFFINE), tmp_path / "series.mgh")
    with pytest.raises(InputError, match=r"series.mgh: 4D image \(3 volumes, 0..2\): info, predict"):
        read(tmp_path / "series.mgh")
    volume = read_frame(tmp_path / "series.mgh", 2)
    np.testing.assert_array_equal(volume.array, data[..., 2].transpose(2, 1, 0))
    assert volume.meta["description"].endswith("volume 2 of 3")


def test_a_damaged_mgh_is_one_line_and_its_size_is_checked_first(tmp_path) -> None:
    nib.save(nib.MGHImage(np.zeros((8, 8, 8), np.float32), AFFINE), tmp_path / "good.mgh")
    raw = (tmp_path / "good.mgh").read_bytes()
    (tmp_path / "cut.mgz").write_bytes(gzip.compress(raw[: len(raw) // 2]))
    huge = bytearray(raw)
    struct.pack_into(">iiii", huge, 4, 100_000, 100_000, 1000, 1)  # width, height, depth, frames: 36 TiB of float32
    (tmp_path / "huge.mgz").write_bytes(gzip.compress(bytes(huge[:300])))
    odd = bytearray(raw)
    struct.pack_into(">i", odd, 20, 99)  # the data type code
    (tmp_path / "odd.mgh").write_bytes(bytes(odd))
    for name, why in (("cut.mgz", "not a readable mgh image (truncated or corrupt data"),
                      ("huge.mgz", "TiB of voxel data exceeds the limit"),
                      ("odd.mgh", "not a readable mgh image (unknown data type code 99)")):  # fmt: skip
        with pytest.raises(InputError) as err:
            read(tmp_path / name)
        assert str(err.value).startswith(f"{tmp_path / name}: ") and why in str(err.value) and "\n" not in str(err.value)


def test_an_archive_lists_an_mgz_as_a_series(tmp_path) -> None:
    from medanomaly.deploy.archive import walk_archive

    nib.save(nib.MGHImage(np.zeros((4, 5, 6), np.int16), AFFINE), tmp_path / "T1.mgz")
    index = walk_archive(tmp_path)
    assert not index.problems and [(s.kind, s.rows, s.columns, s.n_frames) for s in index.series] == [("volume", 5, 4, 6)]
