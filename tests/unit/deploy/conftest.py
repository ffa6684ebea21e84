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


def load_fake_module():
    """tests/unit/deploy/fake_model.py as the module ``deploy_fake_model`` (tests are not a package)."""
    import importlib.util
    import sys

    name = "deploy_fake_model"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("fake_model.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def fake_module():
    """The fake detection model module (FakeDetector, load_fake)."""
    return load_fake_module()


@pytest.fixture(scope="session")
def small_archive(tmp_path_factory):
    """A 10-series archive built from the real lung CTs (8x64x64 crops), 2 corrupt, with clutter."""
    from medanomaly.deploy.demo_archive import build_archive

    return build_archive(tmp_path_factory.mktemp("archive") / "a", n_series=10, n_corrupt=2, seed=3)
