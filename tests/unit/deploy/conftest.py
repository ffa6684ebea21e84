"""Fixtures of the deploy tests: small DICOM CT series written with the project's writer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from medanomaly.types import Volume


def _small_ct(shape: tuple[int, int, int] = (6, 24, 20), seed: int = 0) -> Volume:
    """A small CT-like volume (HU) on a non-isotropic grid with a non-zero origin."""
    rng = np.random.default_rng(seed)
    array = rng.integers(-1000, 200, size=shape).astype(np.int16)
    return Volume(array, spacing=(0.8, 0.7, 2.5), origin=(-10.0, 5.0, 30.0), meta={"modality": "CT"})


@pytest.fixture
def make_ct() -> Callable[..., Volume]:
    """Factory of small CT volumes: ``make_ct(shape=(z, y, x), seed=0)``."""
    return _small_ct


@pytest.fixture
def ct_series(tmp_path: Path) -> tuple[Volume, list[Path]]:
    """(volume read back from DICOM, its files) of a small CT series."""
    from medanomaly.io import read
    from medanomaly.io.dicom_writer import write_dicom_series

    files = write_dicom_series(_small_ct(), tmp_path / "ct")
    return read(tmp_path / "ct"), files
