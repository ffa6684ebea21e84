"""Fixtures of the preprocess tests: the real pyradiomics lung CTs and their lung masks (computed
once per worker), and a real CT slice for the denoising tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from medanomaly.data.sources import pyradiomics_case
from medanomaly.io import read
from medanomaly.preprocess.segment import lung_mask
from medanomaly.types import Volume


@dataclass(frozen=True)
class LungCase:
    name: str
    ct: Volume
    lesion: Volume
    lungs: Volume


def _case(name: str) -> LungCase:
    image, lesion = pyradiomics_case(name)
    ct = read(image).with_meta(modality="CT")
    return LungCase(name, ct, read(lesion), lung_mask(ct))


@pytest.fixture(scope="session")
def lung1_ct() -> Volume:
    """The lung1 CT only (no lung mask computed)."""
    return read(pyradiomics_case("lung1")[0]).with_meta(modality="CT")


@pytest.fixture(scope="session")
def lung1() -> LungCase:
    return _case("lung1")


@pytest.fixture(scope="session")
def lung2() -> LungCase:
    return _case("lung2")


@pytest.fixture(scope="session")
def ct_slice() -> Volume:
    """One real axial CT slice (lung1, slice 24, HU), as a 2D Volume, float32."""
    ct = read(pyradiomics_case("lung1")[0])
    return Volume(ct.array[24:25].astype(np.float32), spacing=ct.spacing, origin=ct.origin,
                  direction=ct.direction, meta={"modality": "CT"})  # fmt: skip
