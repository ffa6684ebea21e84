"""The second-body rule of region growing (medanomaly.detect.grow.drop_second_body): a tumour resting on
an organ of its own attenuation (the liver dome under a basal tumour) is grown without the organ."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from medanomaly.detect.config import InferConfig
from medanomaly.detect.detector import NoduleDetector, saved_params
from medanomaly.detect.grow import grow_mask

SPACING = (0.8, 0.8, 2.5)  # mm, x/y/z
SHAPE = (24, 80, 80)  # z, y, x


def _mm_grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    zz, yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]].astype(float)
    return zz * SPACING[2], yy * SPACING[1], xx * SPACING[0]


def _ellipsoid(centre_mm: tuple[float, float, float], radii_mm: tuple[float, float, float]) -> np.ndarray:
    z, y, x = _mm_grid()
    return sum(((c - m) / r) ** 2 for c, m, r in zip((z, y, x), centre_mm, radii_mm, strict=True)) <= 1.0


def _ct(*solids: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    ct = -850.0 + rng.normal(0.0, 25.0, SHAPE)
    for solid in solids:
        ct[solid] = 40.0 + rng.normal(0.0, 20.0, int(solid.sum()))
    return ct


def _tumour_on_dome() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ct, seed, tumour, dome): a 20 mm tumour resting on a dome 56 mm wide, both +40 HU."""
    dome = _ellipsoid((0.0, 32.0, 32.0), (20.0, 28.0, 28.0))
    tumour = _ellipsoid((28.0, 32.0, 32.0), (10.0, 10.0, 10.0))
    seed = tumour & _ellipsoid((31.0, 32.0, 32.0), (5.0, 5.0, 5.0))
    return _ct(dome, tumour), seed, tumour, dome & ~tumour


def test_the_organ_under_a_tumour_is_dropped_and_the_tumour_kept() -> None:
    ct, seed, tumour, dome = _tumour_on_dome()
    lung = np.ones(SHAPE, bool)  # as the lung mask's lesion completion can leave it: the dome inside
    without = grow_mask(ct, seed, lung, SPACING, margin_mm=40.0)
    assert (without & dome).sum() > tumour.sum()  # the failure the rule is for: the organ grown into
    grown = grow_mask(ct, seed, lung, SPACING, margin_mm=40.0, max_slice_rise=1.25)
    assert (grown & tumour).sum() >= 0.85 * tumour.sum()
    assert (grown & dome).sum() <= 0.15 * tumour.sum()


def test_a_seeds_thin_tail_into_the_organ_does_not_keep_the_organ() -> None:
    """A network's mask can trail a few voxels into the organ's slices: those slices are not the network's own
    (the seed holds a sliver of their grown area), so the organ is still dropped."""
    ct, seed, tumour, dome = _tumour_on_dome()
    z, y, x = _mm_grid()
    tail = (z >= 10.0) & (z <= 28.0) & ((y - 32.0) ** 2 + (x - 32.0) ** 2 <= 1.0)  # 1 mm wide, 4 slices into the dome
    assert (tail & dome).any(axis=(1, 2)).sum() >= 3
    grown = grow_mask(ct, seed | tail, np.ones(SHAPE, bool), SPACING, margin_mm=40.0, max_slice_rise=1.25)
    assert (grown & tumour).sum() >= 0.85 * tumour.sum()
    assert (grown & dome).sum() <= 0.15 * tumour.sum()


def test_a_lone_lesion_is_unchanged_by_the_rule() -> None:
    tumour = _ellipsoid((30.0, 32.0, 32.0), (12.0, 9.0, 9.0))
    ct, seed = _ct(tumour), tumour & _ellipsoid((30.0, 32.0, 32.0), (4.0, 4.0, 4.0))
    lung = np.ones(SHAPE, bool)
    assert np.array_equal(grow_mask(ct, seed, lung, SPACING), grow_mask(ct, seed, lung, SPACING, max_slice_rise=1.25))


def test_a_seed_on_the_lesions_top_still_grows_down_to_its_widest_slice() -> None:
    """Areas may rise out of the seed (it covers the top of a lesion); only a rise after a fall is cut."""
    tumour = _ellipsoid((26.0, 32.0, 32.0), (14.0, 11.0, 11.0))
    seed = tumour & _ellipsoid((36.0, 32.0, 32.0), (3.0, 3.0, 3.0))
    grown = grow_mask(_ct(tumour), seed, np.ones(SHAPE, bool), SPACING, max_slice_rise=1.25)
    assert (grown & tumour).sum() >= 0.85 * tumour.sum()


@pytest.mark.parametrize("value", [0.9, 11.0])
def test_the_rise_factor_is_validated(value: float) -> None:
    with pytest.raises(ValidationError):
        InferConfig(grow_max_slice_rise=value)


def test_a_run_saved_before_the_rule_grows_without_it() -> None:
    assert InferConfig().grow_max_slice_rise == 1.25
    params = NoduleDetector(model_params={"filters": [4, 8]}, steps=1, batch_size=1).get_params()
    assert params["grow_max_slice_rise"] == 1.25  # saved with new runs
    params.pop("grow_max_slice_rise")  # a detector.json written before the rule
    assert NoduleDetector(**saved_params(json.loads(json.dumps(params)))).grow_max_slice_rise is None
