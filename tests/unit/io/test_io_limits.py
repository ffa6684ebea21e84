"""Resource limits: every reader refuses, from the header and before allocating, more voxel data
than the limit (option, environment variable, 1 GiB default), and the refusal costs little memory."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from medanomaly.data.sources import real_data
from medanomaly.errors import InputError
from medanomaly.io import read
from medanomaly.io.limits import (
    DEFAULT_MAX_VOXEL_BYTES,
    ENV_VAR,
    BoundedInflater,
    check_voxel_bytes,
    format_bytes,
    max_voxel_bytes,
)


def test_io_limits_resolution_option_env_default(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert max_voxel_bytes() == DEFAULT_MAX_VOXEL_BYTES == 1 << 30
    monkeypatch.setenv(ENV_VAR, "4G")
    assert max_voxel_bytes() == 4 << 30
    monkeypatch.setenv(ENV_VAR, "1500000")
    assert max_voxel_bytes() == 1_500_000
    assert max_voxel_bytes(1234) == 1234  # the option wins over the environment
    for bad in ("lots", "-5", "0", "nan"):
        monkeypatch.setenv(ENV_VAR, bad)
        with pytest.raises(InputError, match=ENV_VAR):
            max_voxel_bytes()
    with pytest.raises(InputError, match="positive number of bytes"):
        max_voxel_bytes(0)
    assert format_bytes(1536 << 20) == "1.5 GiB"


def test_io_limits_check_voxel_bytes_message_is_one_line():
    assert check_voxel_bytes((10, 10), 2, "a.dcm", limit=200) == 200
    with pytest.raises(InputError) as err:
        check_voxel_bytes((1000, 1000, 1000), 4, "big.nrrd", limit=1 << 30)
    text = str(err.value)
    assert text.startswith("big.nrrd: image of 1000 x 1000 x 1000 x 4 byte(s) = 3.725 GiB") and "\n" not in text
    assert ENV_VAR in text


def test_io_limits_bounded_inflater_stops_early():
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = comp.compress(bytes(64 << 20)) + comp.flush()  # 64 MiB of zeros in ~64 KB
    assert BoundedInflater(io.BytesIO(data), "x", limit=128 << 20).drain() == 64 << 20
    inflater = BoundedInflater(io.BytesIO(data), "x", limit=1 << 20)  # 1 MiB + 16 MiB allowance
    assert len(inflater.read(100)) >= 100
    with pytest.raises(InputError, match="deflated data expand to more than"):
        inflater.drain()
    assert inflater.total <= (17 << 20) + (1 << 20)  # stopped within a chunk of the ceiling
    with pytest.raises(InputError, match="corrupt deflated data"):
        BoundedInflater(io.BytesIO(b"\xff" * 100), "x").drain()


@pytest.mark.parametrize(
    "key",
    ["pydicom/CT_small.dcm", "pydicom/image_dfl.dcm", "pyradiomics/breast1_image.nrrd", "mricron/ch2.nii.gz",
     "itk/BrainT1Slice.png"],
)  # fmt: skip
def test_io_limits_option_and_env_refuse_every_format(monkeypatch, key):
    path = real_data(key)
    vol = read(path)
    need = vol.array.size * vol.array.itemsize
    with pytest.raises(InputError, match="exceeds the limit of 1000 B") as err:
        read(path, max_voxel_bytes=1000)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)
    monkeypatch.setenv(ENV_VAR, "1000")
    with pytest.raises(InputError, match="exceeds the limit"):
        read(path)
    monkeypatch.setenv(ENV_VAR, str(4 * need))
    assert read(path).shape == vol.shape


def test_io_limits_series_folder(ct_series):
    """12 slices of 96 x 80 int16 = 184 KiB: the series is refused as a whole, by folder."""
    assert read(ct_series, max_voxel_bytes=200_000).shape == (12, 96, 80)
    with pytest.raises(InputError, match=r"ct_series\d*: series") as err:
        read(ct_series, max_voxel_bytes=100_000)
    assert "exceeds the limit" in str(err.value)


def test_io_limits_npz(tmp_path):
    path = tmp_path / "m.npz"
    np.savez_compressed(path, train_images=np.zeros((50, 28, 28), np.uint8), train_labels=np.zeros((50, 1)))
    assert read(path).shape == (50, 28, 28)
    with pytest.raises(InputError, match="m.npz: train split data"):
        read(path, max_voxel_bytes=10_000)


def _nrrd_header(sizes: tuple[int, ...], type_: str = "float", encoding: str = "gzip") -> bytes:
    return (
        "NRRD0004\n# claims far more than it holds\n"
        f"type: {type_}\ndimension: {len(sizes)}\nspace: left-posterior-superior\n"
        f"sizes: {' '.join(map(str, sizes))}\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n"
        f"endian: little\nencoding: {encoding}\nspace origin: (0,0,0)\n\n"
    ).encode()


def _nifti_gz(path: Path, shape: tuple[int, ...], dtype: type = np.int16) -> Path:
    """A .nii.gz whose header declares ``shape`` but which holds only 1 MiB of data."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header.set_data_shape(shape)
    header.set_sform(np.eye(4), code=1)
    raw = header.binaryblock + b"\x00" * 4  # 348-byte header + 4-byte extension flag
    path.write_bytes(gzip.compress(raw + bytes(1 << 20), compresslevel=1))
    return path


def _rss_of_reading(paths: list[Path]) -> dict:
    """Read each path in a fresh interpreter; its peak RSS (MB) and the errors, as a dict.

    The peak is VmHWM of /proc/self/status: the high-water mark of this process's own address
    space. (``ru_maxrss`` is not: Linux carries it over fork + exec, so a child of a big pytest
    worker would report the worker's size.)"""
    script = (
        "import json, re, sys\n"
        "from medanomaly.errors import InputError\n"
        "from medanomaly.io import read\n"
        "out = {'errors': []}\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n"
        "        read(p); out['errors'].append(None)\n"
        "    except InputError as exc:\n"
        "        out['errors'].append(str(exc))\n"
        "hwm = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read())\n"
        "out['maxrss_mb'] = int(hwm.group(1)) / 1024\n"
        "print(json.dumps(out))\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != ENV_VAR}
    done = subprocess.run([sys.executable, "-c", script, *map(str, paths)], capture_output=True, text=True, env=env,
                          timeout=300, check=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_io_limits_bombs_refused_with_little_memory(tmp_path, deflate_bomb):
    """A 1 MB deflated DICOM with 1 GiB (+ 2 MiB) of pixels, a 1.2 KB NRRD header claiming
    1000^3 floats, a gzip NRRD and a gzip NIfTI claiming gigabytes: all refused by the default
    limit, in one process whose peak RSS stays under 800 MB (it was 5.3 GB for the DICOM bomb)."""
    assert deflate_bomb.stat().st_size < 1_200_000
    header_only = tmp_path / "claims.nrrd"
    header_only.write_bytes(_nrrd_header((1000, 1000, 1000)) + gzip.compress(bytes(1000)))
    assert header_only.stat().st_size < 1300
    gz_nrrd = tmp_path / "bomb.nrrd"
    gz_nrrd.write_bytes(_nrrd_header((1600, 1600, 1000), "uchar") + gzip.compress(bytes(4 << 20), compresslevel=1))
    nifti = _nifti_gz(tmp_path / "bomb.nii.gz", (2000, 2000, 500))
    paths = [deflate_bomb, header_only, gz_nrrd, nifti]
    result = _rss_of_reading(paths)
    for path, error in zip(paths, result["errors"], strict=True):
        assert error is not None and error.startswith(str(path)) and "exceeds the limit of 1 GiB" in error, error
    assert result["maxrss_mb"] < 800, result


def test_io_limits_deflated_dicom_inflated_size_and_small_files(tmp_path, deflated_dicom_writer):
    """A deflated file declaring a small image but holding 64 MiB of private zeros before the
    pixels is refused while streaming (limit 1 MiB + 16 MiB allowance); the same file without
    padding is read, with the right pixels."""
    small = deflated_dicom_writer(tmp_path / "small.dcm", frames=2, rows=16, cols=16)
    vol = read(small, max_voxel_bytes=1 << 20)
    assert vol.shape == (2, 16, 16) and vol.array.max() == 0
    padded = deflated_dicom_writer(tmp_path / "padded.dcm", frames=2, rows=16, cols=16, padding=64 << 20)
    assert padded.stat().st_size < 200_000
    with pytest.raises(InputError, match="padded.dcm: deflated data expand to more than the limit of 1 MiB"):
        read(padded, max_voxel_bytes=1 << 20)
    assert read(padded, max_voxel_bytes=128 << 20).shape == (2, 16, 16)


def test_memory_shortfall_gives_the_available_bytes_only_when_the_need_is_over_its_share() -> None:
    from medanomaly.io.limits import memory_shortfall

    assert memory_shortfall(91, 0.9, available=100) == 100
    assert memory_shortfall(90, 0.9, available=100) is None
    assert memory_shortfall(1, 0.9) is None  # this machine's own memory (readable here) holds one byte
