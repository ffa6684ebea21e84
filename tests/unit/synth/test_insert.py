"""Real-shape insertion: volume kept, partial volume, HU by texture, pleura and vessels, bounded tries."""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest

from medanomaly.errors import InputError
from medanomaly.synth.insert import (InsertionSpec, SimpleShape, apply_insertion, insert_shape, insert_shapes,
                                     prepare_background, render_shape, sample_appearance, sample_insertion)
from medanomaly.types import Volume


def _phantom(vessel: bool = False, lung_mm: float = 60.0) -> tuple[Volume, Volume]:
    """A block of lung (-850 HU) in soft tissue; optionally a 6 mm vessel (40 HU) along z."""
    sp = (0.7, 0.7, 2.5)
    n_in = int(lung_mm / sp[0])
    ct = np.full((24, n_in + 20, n_in + 20), 40, np.int16)
    ct[2:-2, 10:-10, 10:-10] = -850
    lung = np.zeros(ct.shape, np.uint8)
    lung[2:-2, 10:-10, 10:-10] = 1
    if vessel:
        yy, xx = np.mgrid[:ct.shape[1], :ct.shape[2]]
        c = ct.shape[1] / 2
        ct[2:-2, (yy - c) ** 2 + (xx - c) ** 2 <= (3.0 / sp[0]) ** 2] = 40
    vol = Volume(ct, spacing=sp, meta={"modality": "CT"})
    return vol, vol.with_array(lung)


def _mean_in(out: Volume, mask: Volume) -> float:
    return float(np.asarray(out.array)[np.asarray(mask.array) > 0].mean())


def test_volume_is_kept_and_centre_lands_where_specified():
    ct, lung = _phantom()
    bg = prepare_background(ct, lung=lung)
    shape = SimpleShape.ball(12.0, spacing_xyz=(0.6, 0.6, 1.25))
    spec = InsertionSpec(center_index=(40, 40, 12))
    out, mask, rec = apply_insertion(bg, shape, spec)
    assert rec.volume_ml == pytest.approx(rec.shape_volume_ml, rel=0.03)
    assert rec.mask_volume_ml == pytest.approx(rec.shape_volume_ml, rel=0.15)
    assert np.allclose(rec.center_mm, ct.index_to_physical([40, 40, 12]), atol=0.7)
    assert rec.n_voxels == int(np.asarray(mask.array).sum()) > 0
    assert out.meta.get("synthetic") is True and out.same_grid(ct)


def test_partial_volume_on_thick_slices():
    # a 2.5 mm-thick disc inside 5 mm slices fills half of the slice it sits in
    disc = np.zeros((1, 31, 31), bool)
    yy, xx = np.mgrid[:31, :31]
    disc[0] = (yy - 15) ** 2 + (xx - 15) ** 2 <= 12**2
    shape = SimpleShape("disc", disc, (0.5, 0.5, 2.5))
    occ, _ = render_shape(shape, (0.5, 0.5, 5.0), InsertionSpec((0, 0, 0), subvoxel=(0.3, 0.3, 0.0)), psf_mm=0.0)
    assert occ.max() == pytest.approx(0.5, abs=0.02)
    assert occ.sum() * 0.5 * 0.5 * 5.0 == pytest.approx(disc.sum() * 0.5 * 0.5 * 2.5, rel=0.01)
    # in plane, the edge voxels are partly filled
    assert np.any((occ > 0.05) & (occ < 0.45))


def test_rotation_and_mirror_keep_the_volume_and_change_the_footprint():
    el = SimpleShape("ellipse", np.ones((3, 5, 21), bool), (0.7, 0.7, 2.5))
    base, _ = render_shape(el, (0.7, 0.7, 2.5), InsertionSpec((0, 0, 0)), psf_mm=0.0)
    turned, _ = render_shape(el, (0.7, 0.7, 2.5), InsertionSpec((0, 0, 0), angle_deg=90.0), psf_mm=0.0)
    assert turned.sum() == pytest.approx(base.sum(), rel=0.02)
    ext = lambda o: np.ptp(np.argwhere(o > 0.5), axis=0)  # noqa: E731  (z, y, x) extents
    assert ext(base)[2] > 3 * ext(base)[1] and ext(turned)[1] > 3 * ext(turned)[2]


@pytest.mark.parametrize(("texture", "calcification", "low", "high", "kind"), [
    (1.0, 6.0, -700.0, -430.0, "ground_glass"),
    (5.0, 6.0, -60.0, 120.0, "solid"),
    (5.0, 3.0, 250.0, 1000.0, "solid"),
])
def test_hu_follows_texture_and_calcification(texture, calcification, low, high, kind):
    ct, lung = _phantom()
    bg = prepare_background(ct, lung=lung)
    shape = SimpleShape.ball(10.0, spacing_xyz=(0.6, 0.6, 1.0), texture=texture, calcification=calcification)
    out, mask, rec = insert_shape(bg, shape, np.random.default_rng(1))
    assert rec.kind == kind and rec.spec.calcified == (calcification < 6)
    core = np.asarray(mask.array) > 0
    assert low < float(np.median(np.asarray(out.array)[core])) < high


def test_part_solid_has_a_solid_core_in_ground_glass():
    params = sample_appearance({"texture": 3.0, "calcification": 6.0}, np.random.default_rng(0))
    assert params["kind"] == "part_solid" and 0.3 <= params["core_fraction"] <= 0.6
    assert -650 <= params["hu"] <= -500 and 0 <= params["core_hu"] <= 60
    ct, lung = _phantom()
    bg = prepare_background(ct, lung=lung)
    shape = SimpleShape.ball(16.0, spacing_xyz=(0.6, 0.6, 1.0), texture=3.0)
    out, mask, rec = apply_insertion(bg, shape, InsertionSpec((40, 40, 12), **params, seed=3))
    hu = np.asarray(out.array)[12][np.asarray(mask.array)[12] > 0]
    assert hu.max() > -100 and np.percentile(hu, 10) < -400


def test_placements_respect_pleura_and_large_vessels():
    ct, lung = _phantom(vessel=True)
    bg = prepare_background(ct, lung=lung, pleura_mm=3.0)
    vessel = (np.asarray(ct.array) > -300) & (np.asarray(lung.array) > 0)
    assert vessel.any() and not (bg.allowed & vessel).any()
    rng = np.random.default_rng(0)
    for i in range(6):
        shape = SimpleShape.ball(6.0 + 2 * i, spacing_xyz=(0.6, 0.6, 1.25))
        spec = sample_insertion(shape, bg, rng)
        occ, _ = render_shape(shape, ct.spacing, spec)
        _, mask, _ = apply_insertion(bg, shape, spec)
        m = np.asarray(mask.array) > 0
        assert not (m & vessel).any()
        assert bg.allowed[m].all()  # inside the lung eroded by 3 mm, off the vessel


def test_several_nodules_do_not_touch():
    ct, lung = _phantom()
    bg = prepare_background(ct, lung=lung)
    shapes = [SimpleShape.ball(d, spacing_xyz=(0.6, 0.6, 1.25)) for d in (6.0, 8.0, 10.0)]
    _, labels, recs = insert_shapes(bg, shapes, np.random.default_rng(2), gap_mm=3.0)
    assert sorted(np.unique(labels.array).tolist()) == [0, 1, 2, 3] and len(recs) == 3
    centres = np.array([r.center_mm for r in recs])
    d = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    assert d[np.triu_indices(3, 1)].min() > 6.0


def test_sampling_is_deterministic():
    ct, lung = _phantom()
    bg = prepare_background(ct, lung=lung)
    shape = SimpleShape.ball(8.0)
    a = sample_insertion(shape, bg, np.random.default_rng(5))
    b = sample_insertion(shape, bg, np.random.default_rng(5))
    assert a == b
    out_a = apply_insertion(bg, shape, a)[0]
    out_b = apply_insertion(bg, shape, b)[0]
    assert np.array_equal(out_a.array, out_b.array)


def test_no_room_stops_with_a_clear_error_after_bounded_tries():
    ct, lung = _phantom(lung_mm=14.0)
    bg = prepare_background(ct, lung=lung, pleura_mm=2.0)
    big = SimpleShape.ball(30.0, spacing_xyz=(1.0, 1.0, 1.0))
    start = time.perf_counter()
    with pytest.raises(InputError, match="could not place nodule ball30.*lung too small or exclusions too wide"):
        sample_insertion(big, bg, np.random.default_rng(0))
    # a nodule that fits the depth test but not the footprint test: bounded tries, same message
    wide = SimpleShape("wide", np.ones((1, 3, 60), bool), (0.7, 0.7, 2.5))
    with pytest.raises(InputError, match="after 50 tries"):
        sample_insertion(wide, bg, np.random.default_rng(0), max_tries=50)
    assert time.perf_counter() - start < 5.0
    with pytest.raises(InputError, match="max_tries"):
        sample_insertion(big, bg, np.random.default_rng(0), max_tries=0)


def test_bad_backgrounds_are_input_errors():
    ct, lung = _phantom()
    with pytest.raises(InputError, match="lung mask is empty"):
        prepare_background(ct, lung=lung.with_array(np.zeros(ct.shape, np.uint8)))
    with pytest.raises(InputError, match="not on the CT's grid"):
        prepare_background(ct, lung=Volume(np.ones((4, 4, 4), np.uint8)))
    with pytest.raises(InputError, match="too small or the exclusions too wide"):
        prepare_background(ct, lung=lung, exclude=lung, name="phantom")


# ----------------------------------------------------------------------------------------- real CT
@functools.lru_cache(maxsize=1)
def _lung1_slab() -> tuple[Volume, Volume]:
    """12 slices of the real lung1 CT (its real nodule, at slices 32-34, left out) and their lung mask."""
    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.io import read
    from medanomaly.preprocess.segment import lung_mask

    full = read(pyradiomics_case("lung1")[0])
    z0 = 18
    ct = Volume(np.asarray(full.array)[z0:z0 + 12], spacing=full.spacing, origin=full.index_to_physical([0, 0, z0]),
                direction=full.direction, meta={"modality": "CT"})
    return ct, lung_mask(ct)


def test_real_shapes_in_the_real_lung1_ct():
    from medanomaly.data.lidc_shapes import load_library

    ct, lung = _lung1_slab()
    bg = prepare_background(ct, lung=lung, name="lung1")
    lib = load_library()
    test = lib.indices("test", min_diameter_mm=5.0, max_diameter_mm=20.0)
    shapes = [lib[int(i)] for i in test[:4]]
    out, labels, recs = insert_shapes(bg, shapes, np.random.default_rng(0))
    lab = np.asarray(labels.array)
    hu_before = np.asarray(ct.array)
    for k, (shape, rec) in enumerate(zip(shapes, recs, strict=True), start=1):
        m = lab == k
        assert m.any() and (lung.array[m] > 0).all()
        assert rec.volume_ml == pytest.approx(shape.volume_ml, rel=0.05)  # physical size kept
        assert np.median(hu_before[m]) < -500  # placed in aerated lung, not on a vessel or the wall
        assert rec.nodule_id == shape.nodule_id and rec.to_json()["synthetic"] is True
    assert np.mean(np.asarray(out.array)[lab > 0]) > np.mean(hu_before[lab > 0]) + 100


def test_applying_on_a_crop_equals_applying_on_the_whole_ct():
    from dataclasses import replace

    from medanomaly.synth.insert import crop_background

    ct, lung = _phantom()
    bg = prepare_background(ct, lung=lung)
    shape = SimpleShape.ball(9.0, spacing_xyz=(0.6, 0.6, 1.25))
    spec = sample_insertion(shape, bg, np.random.default_rng(3))
    full, full_mask, rec = apply_insertion(bg, shape, spec)
    sub, lo = crop_background(bg, spec.center_index, 15.0)
    part, part_mask, rec_sub = apply_insertion(sub, shape, replace(spec, center_index=tuple(
        c - o for c, o in zip(spec.center_index, lo, strict=True))))
    box = tuple(slice(o, o + n) for o, n in zip(lo[::-1], part.shape, strict=True))
    assert np.array_equal(np.asarray(full_mask.array)[box], part_mask.array)
    assert np.allclose(rec.center_mm, rec_sub.center_mm) and rec.volume_ml == pytest.approx(rec_sub.volume_ml)
    # the noise level is estimated around the nodule, so the crop must hold that neighbourhood too
    assert np.abs(np.asarray(full.array, float)[box] - part.array).max() <= 1.0
