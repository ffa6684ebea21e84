"""The registered voxel-wise atlas (``atlas`` method) on small synthetic heads: it must find an
inserted lesion in a test volume on another grid (shifted, rotated, thick slices), keep its state
through safetensors-style arrays, and flag a registration that fails the brain-mask check."""

from __future__ import annotations

import re

import numpy as np
import pytest

from medanomaly.anomaly.atlas import AtlasMethod, atlas_brain, thick_slices
from medanomaly.anomaly.methods import METHODS, pixel_auroc
from medanomaly.anomaly.synthetic import make_synthetic_3d
from medanomaly.types import Volume


def _head(seed: int, shift_mm: float = 0.0, lesion: bool = False, spacing: tuple = (2.0, 2.0, 2.0)) -> tuple[Volume, np.ndarray]:
    """A skull-stripped 'brain' (ellipsoid 120 x 100 x 80 mm, textured, values 100..200) on a 2 mm grid,
    moved ``shift_mm`` along x and y; with ``lesion`` a bright 16 mm cube. Returns (volume, lesion mask)."""
    rng = np.random.default_rng(seed)
    shape = (int(100 / spacing[2]), int(140 / spacing[1]), int(140 / spacing[0]))
    zz, yy, xx = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing[::-1])), indexing="ij")
    cz, cy, cx = 50.0, 70.0 + shift_mm, 70.0 + shift_mm
    inside = ((zz - cz) / 40) ** 2 + ((yy - cy) / 60) ** 2 + ((xx - cx) / 50) ** 2 < 1
    texture = 150 + 30 * np.sin((xx - cx) / 6.0) * np.cos((yy - cy) / 9.0) + 15 * np.cos((zz - cz) / 7.0)
    arr = np.where(inside, texture + rng.normal(0, 2, shape), 0).astype(np.float32)
    mask = np.zeros(shape, bool)
    if lesion:
        mask = inside & (np.abs(zz - cz) < 8) & (np.abs(yy - cy - 15) < 8) & (np.abs(xx - cx + 12) < 8)
        arr[mask] = 260
    return Volume(arr, spacing=spacing, meta={"modality": "MR"}), mask


def _fitted() -> AtlasMethod:
    method = METHODS.get("atlas")(spacing_mm=2.0, fixed_mm=2.0, iterations=60, sampling=0.3)
    method.brains_ = [atlas_brain(_head(s)[0], 2.0) for s in (1, 2)]
    return method


def test_atlas_finds_an_inserted_lesion_on_another_grid():
    method = _fitted()
    test, lesion = _head(9, shift_mm=6.0, lesion=True)
    amap, score = method.predict_volume(test, 2.0)
    assert amap.same_grid(test) and np.isfinite(amap.array).all() and score > 0
    brain = test.array > 0
    assert min(method.last_log["mask_dice"]) > 0.95 and method.last_flags == ()
    assert pixel_auroc(np.asarray(amap.array), lesion, brain) > 0.95
    # the state round-trips (arrays only, as written to safetensors)
    method.kind, method.match = "z", "rank"
    restored = AtlasMethod()
    restored.load_state({k: np.asarray(v) for k, v in method.state().items()})
    assert (restored.kind, restored.match, len(restored.brains_)) == ("z", "rank", 2)
    for (a, ma), (b, mb) in zip(method.brains_, restored.brains_):
        assert a.same_grid(b) and np.array_equal(a.array, b.array) and np.array_equal(ma, mb)


def test_atlas_flags_a_failed_registration():
    method = _fitted()
    method.min_dice = 0.999  # no registration can pass: every one is flagged, the best is kept
    test, _ = _head(9, shift_mm=6.0)
    amap, _ = method.predict_volume(test, 0.0)
    assert set(method.last_flags) == {"atlas_registration_failed:0", "atlas_registration_failed:1",
                                      "quality_check_failed:no_atlas_registration_passed"}  # fmt: skip
    assert len(method.last_log["kept"]) == 1 and np.asarray(amap.array).max() > 0
    import threading

    other_thread: list = []  # a model shared by threads: each reads its own call's flags, not another's
    reader = threading.Thread(target=lambda: other_thread.append((method.last_flags, method.last_log)))
    reader.start()
    reader.join()
    assert other_thread == [((), {})] and len(method.last_flags) == 3
    method.min_dice = 0.6  # both pass again: no flag, no abstention
    method.predict_volume(test, 0.0)
    assert method.last_flags == ()


def test_thick_slices_and_synthetic_lesions_in_mm():
    head, _ = _head(3)
    thick = thick_slices(head, 2.0, 6.0)
    assert thick.spacing[2] == pytest.approx(6.0) and thick.shape[0] == pytest.approx(head.shape[0] / 3, abs=1)
    brain = np.asarray(thick.array) > 0
    arr, lesions = make_synthetic_3d(np.asarray(thick.array), brain, thick.spacing, seed=0, n_lesions=3)
    assert lesions.any() and not lesions[~brain].any()
    assert np.abs(arr - np.asarray(thick.array))[~brain].max() == 0  # nothing changes outside the brain


def test_register_refuses_an_unknown_start():
    from medanomaly.errors import InputError
    from medanomaly.preprocess.registration import register

    head, _ = _head(4)
    with pytest.raises(InputError, match="init must be 'geometry' or 'moments'"):
        register(head, head, init="centre")


def test_support_distance_and_weight_in_mm():
    from medanomaly.anomaly.atlas import signed_distance_mm, support_weight

    support = np.zeros((3, 1, 20), bool)
    support[:, :, 5:15] = True  # 10 voxels of 2 mm along x
    d = signed_distance_mm(support, (2.0, 1.0, 1.0))
    assert d[1, 0, 5] == pytest.approx(2.0) and d[1, 0, 9] == pytest.approx(10.0)  # inside: to the nearest outside voxel
    assert d[1, 0, 4] == pytest.approx(-2.0) and d[1, 0, 0] == pytest.approx(-10.0)  # outside: negative
    assert np.array_equal(support_weight(d, 0.0, 0.0) > 0, support)  # hard cut at the support edge
    assert support_weight(d, -4.0, 0.0)[1, 0, 3] == 1.0 and support_weight(d, -4.0, 0.0)[1, 0, 2] == 0.0  # 4 mm margin
    ramp = support_weight(d, 0.0, 8.0)[1, 0]
    assert ramp[4] == 0.0 and ramp[5] == pytest.approx(0.25) and ramp[8] == pytest.approx(1.0)
    assert (signed_distance_mm(np.ones((2, 2, 2), bool), (1.0, 1.0, 1.0)) > 0).all()


def test_atlas_support_silences_tissue_no_normal_brain_covers():
    """A test 'head' whose rough brain region includes a dark 4 mm gap and a bright 4 mm shell (skull,
    scalp) that no normal brain covers: without the support the shell outranks the lesion; with it
    the shell scores ~0 and the lesion keeps its score."""
    method = _fitted()
    test, lesion = _head(9, shift_mm=6.0, lesion=True)
    zz, yy, xx = np.meshgrid(*(np.arange(n) * 2.0 for n in test.shape), indexing="ij")
    ellipsoid = lambda a: ((zz - 50) / (40 + a)) ** 2 + ((yy - 76) / (60 + a)) ** 2 + ((xx - 76) / (50 + a)) ** 2 < 1  # noqa: E731
    arr = np.asarray(test.array, np.float32).copy()
    shell = ellipsoid(8) & ~ellipsoid(4) & (arr == 0)
    arr[shell] = 250.0
    region = ellipsoid(8) | (arr > 0)
    parts = method.components(test.with_array(arr), region)
    assert min(parts["log"]["mask_dice"]) > 0.6 and parts["log"]["support_fraction"] < 0.7
    off = method.map_from(parts, "abs", 2.0, test.spacing, "conditional", None)
    on = method.map_from(parts, "abs", 2.0, test.spacing, "conditional", (2.0, 0.0))
    assert pixel_auroc(off, lesion, region) < 0.85 and pixel_auroc(on, lesion, region) > 0.98
    assert on[shell].max() < 0.05 * on[lesion].max()
    assert method.support is None  # off until the validation chooses
    method.support = (2.0, 0.0)
    assert np.array_equal(method.map_from(parts, "abs", 2.0, test.spacing, "conditional"), on)
    restored = AtlasMethod()
    restored.load_state({k: np.asarray(v) for k, v in method.state().items()})
    assert restored.support == (2.0, 0.0)


def test_atlas_edge_validation_settings_are_checked():
    from medanomaly.anomaly.atlas_validation import leave_out as _leave_out
    from medanomaly.errors import InputError

    with pytest.raises(InputError, match="whole heads with a known brain"):
        AtlasMethod(edge_heads=("mni152",))
    assert AtlasMethod(edge_heads=("ch2", "itk_t1")).edge_heads == ("ch2", "itk_t1")
    with pytest.raises(InputError, match="ramp_mm must be >= 0"):
        AtlasMethod(supports=((0.0, -1.0),))
    method = _fitted()
    method.names_ = ("ch2", "mni152")
    assert len(_leave_out(method, "ch2").brains_) == 1 and len(method.brains_) == 2
    method.names_, method.brains_ = ("ch2",), method.brains_[:1]
    with pytest.raises(InputError, match="only training brain"):
        _leave_out(method, "ch2")


def test_validation_chooses_the_support_when_bright_non_brain_rims_the_region():
    """The label-free choice (two stages: match/kind/sigma with the support off, then the support) on
    hand-made parts: a bright rim outside the atlas support competes with the lesion, so the
    validation must switch the support on; with no rim and a lesion across the support's edge it
    must keep the map unweighted (the support would silence part of the lesion)."""
    from medanomaly.anomaly.atlas import signed_distance_mm
    from medanomaly.anomaly.atlas_validation import choose_by_validation

    rng = np.random.default_rng(0)
    shape, spacing = (6, 40, 40), (2.0, 2.0, 4.0)
    support = np.zeros(shape, bool)
    support[:, 5:35, 5:35] = True
    method = AtlasMethod(supports=((0.0, 0.0), (8.0, 0.0)))
    for rim, want in ((True, (0.0, 0.0)), (False, None)):
        lesion = np.zeros(shape, bool)
        lesion[2:4, 15:22, 15:22] = True
        if not rim:
            lesion[2:4, 1:9, 15:22] = True  # across the support edge (rows 5+)
        ranks = (0.5 + rng.normal(0, 0.05, shape)).astype(np.float32)
        ranks[lesion] = 0.95
        if rim:
            ranks[~support] = 0.95
        flat = (np.full(shape, 0.5, np.float32), np.full(shape, 0.05, np.float32))
        parts = {"ranks": ranks, "brain": np.ones(shape, bool), "rank": flat, "conditional": flat,
                 "conditional_in_support": flat, "support_mm": signed_distance_mm(support, spacing)}  # fmt: skip
        got = choose_by_validation(method, [{"parts": parts, "lesions": lesion, "volume": Volume(ranks, spacing)}], [0.0, 2.0])
        assert len(got) == 2 * 4 * 2 + 2  # every match/kind/sigma off, then each support with the best
        best = max(got, key=got.get)
        assert best[3] == want and got[best] > 0.97


def _offset_parts(offset: float, seed: int = 0) -> tuple[dict, np.ndarray, tuple]:
    """Hand-made atlas parts: flat expected ranks, noise, a small bright lesion (8 x 8 mm, two 4 mm
    slices) and a smooth regional offset of ``offset`` rank units rising across the field of view (as
    an intensity inhomogeneity or a region whose contrast differs from the atlas's)."""
    rng = np.random.default_rng(seed)
    shape, spacing = (8, 48, 48), (2.0, 2.0, 4.0)
    lesion = np.zeros(shape, bool)
    lesion[3:5, 20:24, 8:12] = True
    ramp = np.clip((np.arange(48) - 16) / 16.0, 0.0, 1.0)[None, None, :] * np.ones(shape)
    ranks = (0.5 + rng.normal(0, 0.04, shape) + offset * ramp).astype(np.float32)
    ranks[lesion] += 0.25
    flat = (np.full(shape, 0.5, np.float32), np.full(shape, 0.04, np.float32))
    parts = {"ranks": ranks, "brain": np.ones(shape, bool), "rank": flat, "conditional": flat}
    return parts, lesion, spacing


def test_local_offset_removes_a_regional_offset_and_keeps_a_small_lesion():
    from medanomaly.anomaly.atlas import local_offset

    brain = np.zeros((4, 10, 10), bool)
    brain[:, 2:8, 2:8] = True
    const = local_offset(np.full(brain.shape, 0.3, np.float32), brain, (1.0, 1.0, 1.0), 5.0)
    assert np.allclose(const[brain], 0.3, atol=1e-5) and not const[~brain].any()  # normalised: the edge keeps 0.3
    assert not local_offset(np.ones(brain.shape), brain, (1.0, 1.0, 1.0), 0.0).any()  # 0 mm = off
    parts, lesion, spacing = _offset_parts(0.3)
    method = AtlasMethod()
    region = parts["brain"]
    plain = method.map_from(parts, "abs", 0.0, spacing, "conditional", None, 0.0)
    local = method.map_from(parts, "abs", 0.0, spacing, "conditional", None, 15.0)
    assert pixel_auroc(plain, lesion, region) < 0.85 < 0.97 < pixel_auroc(local, lesion, region)
    assert local[lesion].mean() > 0.6 * 0.25  # the lesion keeps most of its contrast


def test_robust_map_is_in_units_of_the_volumes_own_residual_spread():
    parts, lesion, spacing = _offset_parts(0.0)
    method = AtlasMethod()
    loud = dict(parts, ranks=0.5 + 3 * (parts["ranks"] - 0.5))  # the same scan with 3x the residuals
    for kind, factor in (("robust", 1.0), ("abs", 3.0)):
        a = method.map_from(parts, kind, 2.0, spacing, "conditional", None, 0.0)
        b = method.map_from(loud, kind, 2.0, spacing, "conditional", None, 0.0)
        assert np.allclose(b, factor * a, rtol=1e-4, atol=1e-5)
    robust = method.map_from(parts, "robust", 0.0, spacing, "conditional", None, 0.0)
    assert np.median(robust) == pytest.approx(0.6745, abs=0.05)  # |N(0,1)| median: the noise is 1 unit


def test_validation_chooses_local_offset_removal_only_when_an_offset_is_there():
    from medanomaly.anomaly.atlas_validation import choose_by_validation
    from medanomaly.errors import InputError

    method = AtlasMethod(supports=(), locals_mm=(0.0, 15.0), kinds=("abs",))
    for offset, want in ((0.3, 15.0), (0.0, 0.0)):
        parts, lesion, spacing = _offset_parts(offset, seed=1)
        got = choose_by_validation(method, [{"parts": parts, "lesions": lesion, "volume": Volume(parts["ranks"], spacing)}], [0.0, 2.0])
        assert len(got) == 2 * 1 * 2 * 2  # match x kind x local x sigma, no support candidates
        assert max(got, key=got.get)[4] == want
    method.local_mm = 15.0
    method.brains_ = _fitted().brains_  # a saved atlas holds its normal brains (one without is refused)
    restored = AtlasMethod()
    restored.load_state({k: np.asarray(v) for k, v in method.state().items()})
    assert restored.local_mm == 15.0
    with pytest.raises(InputError, match="local_mm must be >= 0"):
        AtlasMethod(locals_mm=(-5.0,))


def test_validation_volumes_look_clinical_bias_field_and_another_person():
    from medanomaly.anomaly.atlas_validation import _atlas_for, bias_field

    region = np.zeros((6, 30, 30), bool)
    region[1:5, 5:25, 5:25] = True
    field = bias_field(region.shape, region, 0.2, np.random.default_rng(0))
    assert np.exp(-0.2) - 1e-5 <= field[region].min() and field[region].max() <= np.exp(0.2) + 1e-5
    assert field[region].max() / field[region].min() > 1.15  # not flat
    assert np.abs(np.diff(field, axis=2)).max() < 0.05  # smooth: < 5 % per voxel
    assert (bias_field(region.shape, region, 0.0, np.random.default_rng(0)) == 1).all()
    method = _fitted()
    method.names_ = ("mni152", "ch2")
    assert _atlas_for(method, "ch2better") is method  # val_leave_out off: the whole atlas
    method.val_leave_out = True
    assert len(_atlas_for(method, "ch2better").brains_) == 1  # ch2better is ch2's person: left out
    assert _atlas_for(method, "inia19") is method


def test_enhancing_lesions_are_bright_rims_or_solid_inside_the_brain():
    from medanomaly.errors import InputError

    head, _ = _head(3)
    arr = np.asarray(head.array)
    brain = arr > 0
    out, lesions = make_synthetic_3d(arr, brain, head.spacing, seed=2, n_lesions=8, model="enhancing")
    assert lesions.any() and not lesions[~brain].any()
    top = np.quantile(arr[brain], 0.85)
    inside = out[lesions]
    assert np.mean(inside >= top - 1e-3) > 0.5  # mostly enhancing (top 15 % of the brain's intensities)
    assert np.mean(inside <= np.quantile(arr[brain], 0.2) + 1e-3) > 0.02  # and some necrotic core
    mixed, _ = make_synthetic_3d(arr, brain, head.spacing, seed=2, n_lesions=8)
    assert not np.array_equal(mixed, out)
    with pytest.raises(InputError, match="lesion model"):
        make_synthetic_3d(arr, brain, head.spacing, model="cystic")


def test_demons_refinement_fits_a_larger_brain_and_zero_iterations_is_the_identity():
    import SimpleITK as sitk

    from medanomaly.preprocess.registration import demons_refine, resample_to

    grid = np.meshgrid(*(np.arange(40) * 2.0 for _ in range(3)), indexing="ij")
    ball = lambda r: (sum((g - 40.0) ** 2 for g in grid) < r**2).astype(np.float32)  # noqa: E731
    fixed, moving = Volume(ball(20.0), (2.0, 2.0, 2.0)), Volume(ball(26.0), (2.0, 2.0, 2.0))
    identity = sitk.Transform(3, sitk.sitkIdentity)
    assert demons_refine(fixed, moving, identity, iterations=0) is identity

    def dice(t: object) -> float:
        warped = np.asarray(resample_to(fixed, moving, t).array) > 0.5
        return float(2 * (warped & (fixed.array > 0)).sum() / (warped.sum() + (fixed.array > 0).sum()))

    before, after = dice(identity), dice(demons_refine(fixed, moving, identity, iterations=60, smooth_mm=2.0))
    assert before < 0.8 and after > 0.9


def test_robust_scaled_map_lets_a_normal_volumes_threshold_transfer_to_a_louder_scan():
    """``map_scale: robust``: a threshold set at 1 % FPR on one volume's scaled map keeps ~1 % FPR on a
    scan whose map runs 3x higher with an offset (the unscaled threshold flags far more there), and a
    bright lesion on 2 % of the louder scan stays above it."""
    from medanomaly.anomaly.atlas import robust_scaled
    from medanomaly.errors import InputError

    rng = np.random.default_rng(3)
    region = np.zeros((10, 40, 40), bool)
    region[:, 4:36, 4:36] = True
    quiet = np.abs(rng.normal(0, 1, region.shape)).astype(np.float32)
    loud = (0.5 + 3 * np.abs(rng.normal(0, 1, region.shape))).astype(np.float32)
    lesion = np.zeros(region.shape, bool)
    lesion[4:6, 10:20, 10:20] = True  # 200 of 10240 region voxels
    loud[lesion] += 30.0
    raw_t = np.quantile(quiet[region], 0.99)
    scaled_t = np.quantile(robust_scaled(quiet, region)[region], 0.99)
    normal = region & ~lesion
    assert np.mean(loud[normal] > raw_t) > 0.3  # the unscaled threshold does not transfer
    scaled = robust_scaled(loud, region)
    assert 0.005 < np.mean(scaled[normal] > scaled_t) < 0.02 and (scaled[lesion] > scaled_t).all()
    assert not scaled[~region].any() and not robust_scaled(np.ones(region.shape), region).any()  # flat -> 0
    method = AtlasMethod(map_scale="robust")
    parts, _, spacing = _offset_parts(0.0)
    method.kind = "abs"
    expected = robust_scaled(method.map_from(parts, "abs", 2.0, spacing), parts["brain"])
    assert np.allclose(method.final_map(parts, 2.0, spacing), expected)
    with pytest.raises(InputError, match="map_scale must be one of"):
        AtlasMethod(map_scale="zscore")


def test_lesions_cut_to_a_wider_region_cross_the_brain_outline_only_when_asked():
    from medanomaly.errors import InputError

    head, _ = _head(4)
    arr = np.asarray(head.array)
    brain = arr > 0
    from scipy import ndimage

    region = ndimage.binary_dilation(brain, iterations=5)  # a rough whole-head mask around the brain
    _, inside = make_synthetic_3d(arr, brain, head.spacing, seed=5, n_lesions=12, radius_mm=(10.0, 15.0))
    _, crossing = make_synthetic_3d(arr, brain, head.spacing, seed=5, n_lesions=12, radius_mm=(10.0, 15.0),
                                    confine=region)  # fmt: skip
    assert not inside[~brain].any()
    assert crossing[~brain].any() and not crossing[~region].any()
    assert np.array_equal(crossing & brain, inside)  # the same lesions, only no longer cut at the outline
    small = {"seed": 5, "n_lesions": 40, "radius_mm": (4.0, 8.0), "confine": region}
    _, anywhere = make_synthetic_3d(arr, brain, head.spacing, **small)
    _, on_outline = make_synthetic_3d(arr, brain, head.spacing, outline_share=1.0, **small)
    outside = (~brain[anywhere]).mean(), (~brain[on_outline]).mean()
    assert outside[1] > 2 * outside[0] and outside[1] > 0.15, outside  # centred on the outline: far more outside
    with pytest.raises(InputError, match="val_cross_outline needs edge_heads"):
        AtlasMethod(val_cross_outline=True)


def test_third_normal_brain_is_itk_t1_masked_by_its_brain_labels():
    """ITK's whole-head T1 (a third person) is skull-stripped by its label image: zero outside the
    brain, its intensities inside, on its own grid; the raw head keeps its scalp."""
    from medanomaly.anomaly.data import load_brain_only, load_normal

    head, brain = load_normal("itk_t1"), load_brain_only("itk_t1")
    assert brain.shape == head.shape == (62, 128, 128) and brain.spacing == head.spacing
    inside = np.asarray(brain.array) > 0
    assert 0.08 < inside.mean() < 0.2  # ~1.5 L of brain in a 2 x 2 x 3 mm, 128 x 128 x 62 head
    np.testing.assert_array_equal(np.asarray(brain.array)[inside], np.asarray(head.array, np.float32)[inside])
    assert (np.asarray(head.array)[~inside] > 0).mean() > 0.05  # the scalp and skull stay in the head


def test_brain_labels_on_another_grid_are_refused(monkeypatch):
    from medanomaly.anomaly import data
    from medanomaly.errors import InputError

    monkeypatch.setitem(data.BRAIN_LABELS, "itk_t1", "itk/BrainProtonDensity3Slices.mha")
    with pytest.raises(InputError, match="brain labels are not on the grid of 'itk_t1'"):
        data.load_brain_only("itk_t1")


@pytest.mark.parametrize(("edit", "words"), [
    (lambda s: s.update(kind=np.asarray([99])), "atlas 'kind' index 99 is not one of 0..3"),
    (lambda s: s.update(match=np.asarray([-1])), "atlas 'match' index -1 is not one of 0..2"),
    (lambda s: s.update(match=np.asarray([0.5])), "index 0.5 is not one of"),
    (lambda s: s.update(support=np.asarray([1.0, 0.0])), "atlas 'support' holds 2 values, not 3"),
    (lambda s: s.update(support=np.asarray([1.0, 0.0, -8.0])), "support ramp -8.0 mm is negative"),
    (lambda s: s.update(local_mm=np.asarray([-5.0])), "local_mm -5.0 is negative"),
    (lambda s: s.update({"brain0.geometry": np.ones(14)}), "'brain0.geometry' holds 14 values, not 15"),
    (lambda s: s.update({"brain0.mask": np.ones((2, 2, 2), np.uint8)}), "atlas brain 0: ranks"),
    (lambda s: s.update({"brain1.geometry": np.concatenate([[0.0, 2.0, 2.0], np.zeros(3), np.eye(3).ravel()])}),
     "a positive spacing"),
    (lambda s: [s.pop(k) for k in [k for k in s if k.startswith("brain")]], "the atlas holds no normal brain"),
])  # fmt: skip
def test_a_saved_atlas_that_no_training_writes_is_refused_when_loaded(edit, words):
    """Saved arrays of a hand-edited or foreign atlas run: a map-kind index of 99 was an IndexError (not caught by the
    loader's one-line wrapper), a mask of another shape than its ranks failed at the first registration. Each is now a
    ValueError, which the task's loader reports in one line naming the weights file."""
    state = _fitted().state()
    edit(state)
    with pytest.raises(ValueError, match=re.escape(words)):
        METHODS.get("atlas")().load_state(state)


def test_a_saved_atlas_loads_back_as_it_was():
    method = _fitted()
    method.kind, method.match, method.support, method.local_mm = "bright", "rank", (-4.0, 8.0), 25.0
    again = METHODS.get("atlas")()
    again.load_state(method.state())
    assert (again.kind, again.match, again.support, again.local_mm) == ("bright", "rank", (-4.0, 8.0), 25.0)
    assert len(again.brains_) == 2 and np.array_equal(again.brains_[1][1], method.brains_[1][1])


def test_atlas_registers_its_brains_side_by_side_and_gets_what_one_after_the_other_gives(monkeypatch):
    """The atlas registers each normal brain to the test volume; on one ITK thread each (reproducible) it ran them
    one after the other and left a many-core machine idle. Side by side, in threads of one process, each still on
    one ITK thread (whatever ITK's default: here 4, a workstation's), they give the same map to the last bit; the
    default is restored."""
    import SimpleITK as sitk

    from medanomaly.anomaly import atlas

    method = _fitted()
    method.demons_iterations = 5  # the demons too: they stop on a sum over threads
    test, _ = _head(9, shift_mm=6.0, lesion=True)
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(4)
    try:
        monkeypatch.setattr(atlas, "usable_cpus", lambda: 1)
        alone = np.asarray(method.predict_volume(test, 2.0)[0].array)
        monkeypatch.setattr(atlas, "usable_cpus", lambda: 4)
        side = [np.asarray(method.predict_volume(test, 2.0)[0].array) for _ in range(2)]
        assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == 4
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)
    assert all(np.array_equal(alone, s) for s in side)
