"""Region growing of a finding's mask (medanomaly.detect.grow) on small synthetic CTs (HU)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from medanomaly.detect.config import InferConfig
from medanomaly.detect.grow import compactness, grow_mask
from medanomaly.detect.infer import findings_from_heatmap
from medanomaly.types import Volume

SPACING = (0.8, 0.8, 2.5)  # mm, x/y/z
SHAPE = (24, 80, 80)  # z, y, x


def _mm_grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    zz, yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]].astype(float)
    return zz * SPACING[2], yy * SPACING[1], xx * SPACING[0]


def _parenchyma(seed: int = 0) -> np.ndarray:
    return -850.0 + np.random.default_rng(seed).normal(0.0, 25.0, SHAPE)


def _sphere(centre_mm: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    z, y, x = _mm_grid()
    return (z - centre_mm[0]) ** 2 + (y - centre_mm[1]) ** 2 + (x - centre_mm[2]) ** 2 <= radius_mm**2


def _core(sphere: np.ndarray, centre_mm: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    """An under-segmenting 'network' mask: the inner part of the lesion."""
    return sphere & _sphere(centre_mm, radius_mm)


def test_sphere_grows_to_the_sphere_not_the_attached_vessel() -> None:
    centre, radius = (30.0, 32.0, 32.0), 8.0
    nodule = _sphere(centre, radius)
    z, y, x = _mm_grid()
    # A 4 mm vessel (wider than the 2 mm floor of the opening, narrower than the nodule's 8 mm
    # radius) leaving the nodule along +x through the slice of its centre, to the edge.
    vessel = (np.abs(z - centre[0]) <= 1.3) & (np.abs(y - centre[1]) <= 2.0) & (x > centre[2])
    ct = _parenchyma()
    ct[vessel] = 40.0 + np.random.default_rng(1).normal(0.0, 25.0, int(vessel.sum()))
    ct[nodule] = 30.0 + np.random.default_rng(2).normal(0.0, 25.0, int(nodule.sum()))
    seed = _core(nodule, centre, 3.0)
    grown = grow_mask(ct, seed, np.ones(SHAPE, bool), SPACING)
    assert grown.sum() > 10 * seed.sum()
    assert (grown & nodule).sum() >= 0.85 * nodule.sum()
    far_vessel = vessel & (x > centre[2] + radius + 3.0)
    assert not (grown & far_vessel).any()
    # With only the fixed 2 mm opening (no radius relative to the lesion) the vessel is swallowed.
    leaky = grow_mask(ct, seed, np.ones(SHAPE, bool), SPACING, opening_fraction=0.0)
    assert (leaky & far_vessel).sum() > 20


def test_growth_stops_at_the_lung_mask_and_the_margin() -> None:
    centre, radius = (30.0, 32.0, 40.0), 9.0
    lesion = _sphere(centre, radius)
    _z, _y, x = _mm_grid()
    lung = x < 44.0  # the chest wall starts 4 mm right of the lesion's centre
    ct = _parenchyma()
    ct[~lung] = 40.0  # soft tissue of the chest wall, brighter than the half-maximum level
    ct[lesion] = 30.0
    seed = _core(lesion, centre, 3.0)
    grown = grow_mask(ct, seed, lung, SPACING)
    assert not (grown & ~lung).any()
    assert (grown & lesion & lung).sum() >= 0.85 * (lesion & lung).sum()
    small = grow_mask(ct, seed, lung, SPACING, margin_mm=2.0)
    assert small.sum() < 0.5 * grown.sum()  # the neighbourhood bounds the growth


def test_ground_glass_does_not_leak_and_faint_ground_glass_keeps_the_seed() -> None:
    centre, radius = (30.0, 32.0, 32.0), 7.0
    ggo = _sphere(centre, radius)
    ct = _parenchyma(3)
    ct[ggo] = -500.0 + np.random.default_rng(4).normal(0.0, 25.0, int(ggo.sum()))
    seed = _core(ggo, centre, 2.5)
    grown = grow_mask(ct, seed, np.ones(SHAPE, bool), SPACING)
    assert grown.sum() > 3 * seed.sum()
    assert not (grown & ~_sphere(centre, radius + 1.0)).any()
    ct[ggo] = -760.0  # level (-760 - 850) / 2 < -700 HU: within noise of the parenchyma
    assert np.array_equal(grow_mask(ct, seed, np.ones(SHAPE, bool), SPACING), seed)


def test_empty_seed_and_thin_lesion_return_the_seed() -> None:
    ct = _parenchyma()
    empty = np.zeros(SHAPE, bool)
    assert not grow_mask(ct, empty, np.ones(SHAPE, bool), SPACING).any()
    tiny = _sphere((30.0, 32.0, 32.0), 1.2)  # thinner than the 2 mm opening: kept as the network had it
    ct[tiny] = 30.0
    assert np.array_equal(grow_mask(ct, tiny, np.ones(SHAPE, bool), SPACING), tiny)


def test_findings_are_measured_on_the_refined_mask() -> None:
    centre, radius = (30.0, 32.0, 32.0), 8.0
    nodule = _sphere(centre, radius)
    ct_arr = _parenchyma()
    ct_arr[nodule] = 30.0
    ct = Volume(ct_arr.astype(np.int16), spacing=SPACING)
    prob = ct.with_array(_core(nodule, centre, 4.0).astype(np.float32) * 0.9)
    region = np.ones(SHAPE, bool)
    plain = findings_from_heatmap(prob, ct, region)
    lung = np.ones(SHAPE, bool)
    grown = findings_from_heatmap(prob, ct, region, refine=lambda m: grow_mask(ct_arr, m, lung, SPACING))
    assert len(plain) == len(grown) == 1
    assert grown[0].score == plain[0].score and grown[0].center_mm == plain[0].center_mm
    true_ml = float(nodule.sum()) * 0.8 * 0.8 * 2.5 / 1000.0
    assert plain[0].measurements.volume_ml < 0.3 * true_ml
    assert grown[0].measurements.volume_ml == pytest.approx(true_ml, rel=0.15)


def test_a_lesion_found_in_two_pieces_is_one_grown_finding() -> None:
    """Two separate heatmap components inside one large lesion: the higher one grows over the
    whole lesion, the lower one is a piece of it and is dropped; without growing both remain."""
    centre, radius = (30.0, 32.0, 32.0), 12.0
    tumour = _sphere(centre, radius)
    ct_arr = _parenchyma()
    ct_arr[tumour] = 30.0
    ct = Volume(ct_arr.astype(np.int16), spacing=SPACING)
    heat = _core(tumour, (30.0, 26.0, 32.0), 4.0).astype(np.float32) * 0.9
    heat[_core(tumour, (30.0, 39.0, 32.0), 4.0)] = 0.7
    prob = ct.with_array(heat)
    region, lung = np.ones(SHAPE, bool), np.ones(SHAPE, bool)
    assert len(findings_from_heatmap(prob, ct, region)) == 2
    grown = findings_from_heatmap(prob, ct, region, refine=lambda m: grow_mask(ct_arr, m, lung, SPACING))
    assert len(grown) == 1 and grown[0].score == pytest.approx(0.9)
    true_ml = float(tumour.sum()) * 0.8 * 0.8 * 2.5 / 1000.0
    assert grown[0].measurements.volume_ml == pytest.approx(true_ml, rel=0.15)


@pytest.mark.parametrize(
    "field,value",
    [
        ("grow_margin_mm", 0.0),
        ("grow_opening_mm", -1.0),
        ("grow_min_hu", -2000.0),
        ("grow_opening_fraction", 1.0),
        ("grow_min_compactness", 1.5),
        ("grow_min_compactness", -0.1),
    ],
)
def test_grow_parameters_are_validated(field: str, value: float) -> None:
    with pytest.raises(ValidationError):
        InferConfig(**{field: value})


def test_a_sliver_seed_grows_to_the_whole_lesion() -> None:
    """The network marks only a sliver at the edge of a large lesion (lung2's case): the growth is
    compact, so it is kept however small the seed; the former volume-ratio rule threw it away."""
    centre, radius = (30.0, 32.0, 32.0), 12.0
    tumour = _sphere(centre, radius)
    z, y, x = _mm_grid()
    ct = _parenchyma()
    ct[tumour] = 30.0 + np.random.default_rng(5).normal(0.0, 25.0, int(tumour.sum()))
    seed = tumour & (x > centre[2] + radius - 3.0) & (np.abs(z - centre[0]) <= 2.5) & (np.abs(y - centre[1]) <= 2.0)
    lung = np.ones(SHAPE, bool)
    grown = grow_mask(ct, seed, lung, SPACING)
    assert grown.sum() > 50 * seed.sum()
    assert (grown & tumour).sum() >= 0.85 * tumour.sum()
    assert not (grown & ~_sphere(centre, radius + 1.5)).any()
    assert compactness(grown, SPACING) > 0.8
    assert np.array_equal(grow_mask(ct, seed, lung, SPACING, max_ratio=50.0), seed)


def _rim() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A heart-like dense region outside the lung mask with a 6 mm partial-volume rim inside it,
    and a seed on the rim (false positives at the heart border)."""
    z, y, x = _mm_grid()
    r = np.sqrt((z - 30.0) ** 2 + (y - 32.0) ** 2 + (x - 75.0) ** 2)
    lung = r > 30.0
    ct = _parenchyma()
    ct[r <= 36.0] = 40.0
    seed = lung & (r <= 36.0) & (np.abs(z - 30.0) <= 2.5) & (np.abs(y - 32.0) <= 2.0)
    return ct, seed, lung


def _vessel_tree() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A trunk with three branches, all 3 mm in radius (thicker than the opening's 2 mm floor),
    and a seed on the trunk (false positives on hilar vessels)."""
    z, y, x = _mm_grid()
    tree = ((z - 30.0) ** 2 + (x - 32.0) ** 2 <= 9.0) & (y > 4.0) & (y < 60.0)
    for yb in (15.0, 30.0, 45.0):
        tree |= ((z - 30.0) ** 2 + (y - yb) ** 2 <= 9.0) & (x > 32.0) & (x < 60.0)
    ct = _parenchyma()
    ct[tree] = 40.0
    seed = tree & (np.abs(y - 22.0) <= 2.0)
    return ct, seed, np.ones(SHAPE, bool)


@pytest.mark.parametrize("make", [_rim, _vessel_tree], ids=["heart-border rim", "vessel tree"])
def test_a_leak_is_refused_whatever_the_seed(make) -> None:  # type: ignore[no-untyped-def]
    """Growth along a rim or a vessel tree is long and thin (compactness < 0.5): the network's
    mask is kept; without the test the same seed spreads over the structure."""
    ct, seed, lung = make()
    spread = grow_mask(ct, seed, lung, SPACING, min_compactness=0.0)
    assert spread.sum() > 10 * seed.sum()
    assert compactness(spread, SPACING) < 0.4
    assert np.array_equal(grow_mask(ct, seed, lung, SPACING), seed)


def test_compactness_ranks_ball_ellipsoid_rod() -> None:
    z, y, x = _mm_grid()
    ball = _sphere((30.0, 32.0, 32.0), 10.0)
    oblate = ((z - 30.0) / 4.0) ** 2 + ((y - 32.0) / 16.0) ** 2 + ((x - 32.0) / 16.0) ** 2 <= 1.0
    rod = ((z - 30.0) ** 2 + (x - 32.0) ** 2 <= 9.0) & (y > 4.0) & (y < 60.0)
    values = [compactness(m, SPACING) for m in (ball, oblate, rod)]
    assert values[0] > 0.85 and values[0] > values[1] > values[2]
    assert values[1] < 0.55 and values[2] < 0.4
