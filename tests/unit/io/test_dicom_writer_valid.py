"""The CT series we write (fixtures, exports of volumes) is a valid CT Image IOD: dciodvfy (Debian
dicom3tools) reports no error, and it reads back with its geometry and HU values."""

from __future__ import annotations

import numpy as np

from medanomaly.deploy.dicom_out import dciodvfy
from medanomaly.io import read
from medanomaly.io.dicom_writer import write_dicom_series
from medanomaly.types import Volume


def test_written_ct_series_passes_dciodvfy_and_reads_back(tmp_path):
    hu = np.random.default_rng(0).normal(-300, 200, (3, 16, 20)).astype(np.float32)
    volume = Volume(hu, spacing=(0.7, 0.8, 2.5), origin=(-10.0, 5.0, 30.0)).with_meta(modality="CT")
    paths = write_dicom_series(volume, tmp_path / "ct", description="test series")
    result = dciodvfy(paths[1])
    assert result.errors == [], result.errors
    back = read(tmp_path / "ct")
    assert back.shape == volume.shape and np.allclose(back.spacing, volume.spacing)
    assert np.allclose(back.origin, volume.origin, atol=1e-3)
    assert np.abs(np.asarray(back.array) - hu).max() < 0.05  # HU through slope / intercept
