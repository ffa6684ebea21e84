"""Fixtures of the io tests: small real CT series written in the real DICOM format."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from medanomaly.data.sources import real_data
from medanomaly.io import read
from medanomaly.io.dicom_writer import write_dicom_series
from medanomaly.types import Volume


@pytest.fixture(scope="session")
def lung_crop() -> Volume:
    """A 12 x 96 x 80 crop of pyradiomics lung1 (real chest CT, HU) with a non-trivial geometry."""
    lung = read(real_data("pyradiomics/lung1_image.nrrd"))
    z0, y0, x0 = 18, 200, 150
    crop = lung.array[z0 : z0 + 12, y0 : y0 + 96, x0 : x0 + 80]
    origin = lung.index_to_physical((x0, y0, z0))
    return Volume(np.ascontiguousarray(crop), spacing=lung.spacing, origin=origin, meta={"modality": "CT"})


def write_series(vol: Volume, folder: Path, *, shuffle: bool = False, seed: int = 0, **kwargs) -> list[Path]:
    """Write ``vol`` as a DICOM series; with ``shuffle`` the file names do not follow slice order."""
    names = [f"IM{k:04d}.dcm" for k in range(vol.shape[0])]
    if shuffle:
        random.Random(seed).shuffle(names)
    return write_dicom_series(vol, folder, file_names=names, **kwargs)


@pytest.fixture(scope="session")
def ct_series(tmp_path_factory, lung_crop) -> Path:
    """The lung crop as a 12-file CT series, sorted names."""
    folder = tmp_path_factory.mktemp("ct_series")
    write_series(lung_crop, folder)
    return folder


@pytest.fixture(scope="session")
def ct_series_shuffled(tmp_path_factory, lung_crop) -> Path:
    """The same slices with shuffled file names."""
    folder = tmp_path_factory.mktemp("ct_series_shuffled")
    write_series(lung_crop, folder, shuffle=True, seed=3)
    return folder


@pytest.fixture(scope="session")
def series_writer():
    """The ``write_series(vol, folder, shuffle=False, seed=0, **kwargs)`` helper, as a fixture."""
    return write_series
