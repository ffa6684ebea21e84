"""Bad input to the lung pipeline gives one clear InputError: non-CT, no lungs, missing mask."""

from __future__ import annotations

import numpy as np
import pytest

from medanomaly.data.sources import pyradiomics_case, real_data
from medanomaly.detect.grid import lung_region, require_chest_ct
from medanomaly.errors import InputError
from medanomaly.io import read
from medanomaly.types import Volume


def test_detect_rejects_mri() -> None:
    image, _ = pyradiomics_case("brain1")  # a real MRI, intensities not HU
    with pytest.raises(InputError, match="CT in HU"):
        require_chest_ct(read(image), image)


def test_detect_rejects_labelled_non_ct_modality() -> None:
    mr = Volume(np.full((4, 8, 8), -1000, np.int16), meta={"modality": "MR"})
    with pytest.raises(InputError, match="modality MR"):
        require_chest_ct(mr)


def test_detect_rejects_head_ct_without_lungs() -> None:
    path = real_data("invesalius/cranium.nrrd")
    with pytest.raises(InputError, match="no lungs found") as info:
        lung_region(read(path), path)
    assert "cranium.nrrd" in str(info.value) and "\n" not in str(info.value)


def test_detect_source_with_missing_mask(tmp_path) -> None:
    from medanomaly.detect.simulate import load_source

    image, _ = pyradiomics_case("lung1")
    with pytest.raises(InputError, match="lesion mask not found"):
        load_source("lung1", image, tmp_path / "nope.nrrd")
