"""NIfTI header extensions are bounded before nibabel reads them whole: a small .nii.gz declaring a huge extension of
zeros (a decompression bomb that the voxel limit, checked after the header, did not see: 400 MB of memory for a 400 KB
file), or an extension size under 16 that nibabel reads as "to the end of the file", is one line; real extensions
read as before."""

from __future__ import annotations

import gzip
import struct
import zlib

import nibabel as nib
import numpy as np
import pytest

from medanomaly.errors import InputError
from medanomaly.io import read
from medanomaly.io.nifti_header import MAX_EXTENSION_BYTES


def _with_extension(path, esize: int, content: int, vox_offset: int | None = None, compress: bool = True) -> None:
    """A 4 x 4 x 4 int16 NIfTI-1 whose one extension declares ``esize`` bytes, followed by ``content`` zero bytes."""
    header = bytearray(nib.Nifti1Image(np.arange(64, dtype=np.int16).reshape(4, 4, 4), np.eye(4)).header.binaryblock)
    struct.pack_into("<f", header, 108, float(352 + esize if vox_offset is None else vox_offset))
    parts = [bytes(header), b"\x01\0\0\0", struct.pack("<ii", esize, 6)]
    body = zlib.compressobj(9, zlib.DEFLATED, 31) if compress else None
    with open(path, "wb") as fh:
        for part in parts:
            fh.write(body.compress(part) if body else part)
        zeros, left = bytes(2**20), content
        while left > 0:
            chunk = zeros[: min(left, len(zeros))]
            fh.write(body.compress(chunk) if body else chunk)
            left -= len(chunk)
        voxels = np.arange(64, dtype=np.int16).tobytes()
        fh.write(body.compress(voxels) + body.flush() if body else voxels)


def test_a_huge_declared_extension_is_refused_before_it_is_read(tmp_path) -> None:
    size = MAX_EXTENSION_BYTES + 2**20
    _with_extension(tmp_path / "bomb.nii.gz", size, size - 8)
    assert (tmp_path / "bomb.nii.gz").stat().st_size < 100_000
    with pytest.raises(InputError, match=r"bomb.nii.gz: NIfTI header extensions of more than 16 MiB \(one declares "
                                         r"17 MiB\): refused before reading them"):  # fmt: skip
        read(tmp_path / "bomb.nii.gz")


@pytest.mark.parametrize("esize", [8, 0, -64])
def test_an_extension_size_that_would_read_the_whole_file_is_refused(tmp_path, esize) -> None:
    """nibabel reads ``esize - 8`` bytes: a negative count reads the rest of the file, whatever its size."""
    _with_extension(tmp_path / "odd.nii.gz", esize, 3 * 2**20, vox_offset=352 + 64)
    with pytest.raises(InputError, match=rf"odd.nii.gz: malformed NIfTI header extension \(size {esize}: at least 16"):
        read(tmp_path / "odd.nii.gz")


def test_real_extensions_read_as_before(tmp_path) -> None:
    image = nib.Nifti1Image(np.arange(64, dtype=np.int16).reshape(4, 4, 4), np.eye(4))
    image.header.extensions.append(nib.nifti1.Nifti1Extension(6, b'{"note": "an AFNI-style comment"}'))
    nib.save(image, tmp_path / "ext.nii.gz")
    nib.save(image, tmp_path / "ext.nii")
    nib.save(nib.Nifti1Pair(image.dataobj, np.eye(4), image.header), tmp_path / "pair.img")
    for name in ("ext.nii.gz", "ext.nii", "pair.hdr", "pair.img"):
        np.testing.assert_array_equal(read(tmp_path / name).array, np.arange(64).reshape(4, 4, 4).transpose(2, 1, 0))
    _with_extension(tmp_path / "plain.nii", 32, 24, compress=False)  # one 32-byte extension, written by hand
    stored = np.arange(64).reshape((4, 4, 4), order="F")  # the voxel bytes as NIfTI orders them (x fastest)
    np.testing.assert_array_equal(read(tmp_path / "plain.nii").array, stored.transpose(2, 1, 0))
    assert gzip.decompress((tmp_path / "ext.nii.gz").read_bytes())[348] == 1  # the extension flag was set
