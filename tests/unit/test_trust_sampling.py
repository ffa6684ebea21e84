"""Issue 18, item 4: every rejection-sampling loop has a bounded number of tries and a clear message."""

from __future__ import annotations

import time

import numpy as np
import pytest

from medanomaly.data.nodule_patches import MAX_TRIES_PER_NODULE, place_nodule
from medanomaly.errors import InputError


def _lung(wall_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """A 10^3 lung whose voxels all lie ``wall_mm`` from the wall."""
    to_wall = np.full((10, 10, 10), wall_mm, np.float64)
    return np.argwhere(to_wall > 0), to_wall


def test_an_impossible_nodule_placement_stops_fast_with_a_clear_message():
    candidates, to_wall = _lung(1.0)  # 1 mm from the wall everywhere: a 40 mm nodule never fits
    start = time.perf_counter()
    with pytest.raises(InputError) as info:
        place_nodule(np.random.default_rng(0), candidates, to_wall, None, (40.0, 60.0), 0, 3, "lung1, right lung")
    assert time.perf_counter() - start < 10.0
    message = str(info.value)
    assert "lung1, right lung" in message and "40-60 mm" in message and "diameter_range_mm" in message
    assert f"{3 * MAX_TRIES_PER_NODULE} tries" in message and "\n" not in message


def test_an_excluded_lesion_everywhere_is_refused_too():
    candidates, to_wall = _lung(500.0)
    to_excl = np.zeros_like(to_wall)  # every voxel touches the excluded tumour
    with pytest.raises(InputError, match="excluded lesion"):
        place_nodule(np.random.default_rng(1), candidates, to_wall, to_excl, (4.0, 6.0), 0, 1, "lung2, left lung")


def test_a_possible_placement_counts_its_tries():
    candidates, to_wall = _lung(500.0)
    spec, zyx, tries = place_nodule(np.random.default_rng(2), candidates, to_wall, None, (4.0, 6.0), 7, 1, "x")
    assert tries == 8 and 4.0 <= spec.diameter_mm <= 6.0 and tuple(zyx) in {tuple(c) for c in candidates}
