"""ROI masks on real scans: lungs of the pyradiomics CTs contain the expert lesions, volumes in mL."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medanomaly.data.sources import pyradiomics_case
from medanomaly.errors import InputError
from medanomaly.io import read
from medanomaly.preprocess.overlay import write_lung_overlays, write_mask_overlay
from medanomaly.preprocess.segment import (
    LEFT_LUNG,
    RIGHT_LUNG,
    airway_mask,
    body_mask,
    lung_mask,
    lung_stats,
)
from medanomaly.preprocess.tissue_masks import brain_mask, breast_mask
from medanomaly.types import Volume


@pytest.mark.parametrize("case", ["lung1", "lung2"])
def test_lung_mask_contains_whole_lesion(case, request):
    c = request.getfixturevalue(case)
    lesion = c.lesion.array > 0
    assert c.lungs.same_grid(c.ct) and c.lungs.array.dtype == np.uint8
    assert set(np.unique(c.lungs.array)) == {0, RIGHT_LUNG, LEFT_LUNG}
    assert np.all(c.lungs.array[lesion] > 0), f"{case}: {np.count_nonzero(c.lungs.array[lesion] == 0)} lesion voxels outside"


def test_lung_labels_follow_lps(lung1, lung2):
    # LPS: +x is the patient's left, so the right lung (1) has the smaller physical x.
    for c in (lung1, lung2):
        xs = {}
        for lab in (RIGHT_LUNG, LEFT_LUNG):
            zyx = np.array(ndimage.center_of_mass(c.lungs.array == lab))
            xs[lab] = c.ct.index_to_physical(zyx[::-1])[0]
        assert xs[RIGHT_LUNG] < xs[LEFT_LUNG]
    # lung1's nodule is in the right lung, lung2's tumour in the left (read off the overlays).
    assert set(np.unique(lung1.lungs.array[lung1.lesion.array > 0])) == {RIGHT_LUNG}
    assert set(np.unique(lung2.lungs.array[lung2.lesion.array > 0])) == {LEFT_LUNG}


def _independent_count(hu: np.ndarray) -> int:
    """Pixels below -500 HU inside the body outline of one slice (largest > -500 HU blob, holes
    filled), keeping only air blobs over 1500 pixels (drops trachea and bronchi): no morphology,
    no closing, no lesion handling. Bowel gas below the diaphragm is counted (it is > 1500 px)."""
    labels, _ = ndimage.label(hu > -500)
    body = ndimage.binary_fill_holes(labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    lab, n = ndimage.label((hu < -500) & body)
    sizes = np.bincount(lab.ravel())
    return int(sum(sizes[i] for i in range(1, n + 1) if sizes[i] > 1500))


@pytest.mark.parametrize("case", ["lung1", "lung2"])
def test_lung_volume_matches_independent_count(case, request):
    """Manual check (docs/preprocess.md): the mask adds vessels, hilum and lesions to plain air,
    so it is 1.0-1.2x the independent count over the scan, and 1.0-1.15x on the 5 largest
    lesion-free slices."""
    c = request.getfixturevalue(case)
    stats = lung_stats(c.lungs)
    assert 1500 < stats.total_ml < 7000  # partial chest CTs: plausible adult lung volume in mL
    counts = np.array([_independent_count(c.ct.array[z]) for z in range(c.ct.shape[0])])
    per_slice = (c.lungs.array > 0).reshape(c.ct.shape[0], -1).sum(axis=1)
    assert 1.0 <= per_slice.sum() / counts.sum() <= 1.2
    lesion_free = ~(c.lesion.array > 0).reshape(c.ct.shape[0], -1).any(axis=1)
    largest = [z for z in np.argsort(counts)[::-1] if lesion_free[z]][:5]
    ratios = per_slice[largest] / counts[largest]
    assert np.all((ratios >= 1.0) & (ratios <= 1.15)), ratios


def test_airway_removed(lung1):
    airway = airway_mask(lung1.ct).array > 0
    ml = airway.sum() * lung1.ct.voxel_volume_mm3 / 1000
    assert 5 < ml < 100
    # the trachea in the top slices is not lung
    top = lung1.ct.shape[0] - 10
    assert not np.any(lung1.lungs.array[top:][airway[top:]] > 0)


def test_lung_overlay_png(lung1, lung2, tmp_path):
    for c in (lung1, lung2):
        path = write_mask_overlay(c.ct, c.lungs, tmp_path / f"{c.name}.png", c.lesion)
        assert path.stat().st_size > 10_000
        from PIL import Image

        img = np.asarray(Image.open(path).convert("RGB")).astype(int)
        cyan = (img[..., 0] < 80) & (img[..., 1] > 180) & (img[..., 2] > 180)
        yellow = (img[..., 0] > 180) & (img[..., 1] > 180) & (img[..., 2] < 80)
        red = (img[..., 0] > 180) & (img[..., 1] < 80) & (img[..., 2] < 80)
        assert cyan.sum() > 200 and yellow.sum() > 200 and red.sum() > 10


def test_write_lung_overlays_script(tmp_path, monkeypatch):
    import medanomaly.preprocess.segment as seg

    # the script path is what writes runs/preprocess; reuse cheap masks so the test stays fast
    monkeypatch.setattr(seg, "lung_mask", lambda ct: ct.with_array((ct.array < -500).astype(np.uint8)))
    from medanomaly.data.sources import pyradiomics_case

    paths = write_lung_overlays(tmp_path, cases={"lung1": pyradiomics_case("lung1")})
    assert paths[0].name == "lung1_lung_overlay.png" and paths[0].stat().st_size > 5_000


def test_body_mask_ct(lung1):
    body = body_mask(lung1.ct)
    arr = body.array > 0
    assert arr[:, 0, 0].sum() == 0  # corner air is outside
    assert np.all(arr[lung1.lungs.array > 0])  # lungs are inside the (hole-filled) body
    assert lung1.ct.array[arr].mean() > -400


@pytest.mark.parametrize("case, min_inside", [("brain1", 0.99), ("brain2", 0.93)])
def test_brain_mask_mr_contains_lesion(case, min_inside):
    image, lesion_path = pyradiomics_case(case)
    mr = read(image).with_meta(modality="MR")
    lesion = read(lesion_path).array > 0
    brain = brain_mask(mr)
    ml = (brain.array > 0).sum() * mr.voxel_volume_mm3 / 1000
    assert 800 < ml < 1800  # a whole-head T1: intracranial volume about 1.2-1.7 L
    assert (brain.array[lesion] > 0).mean() > min_inside
    corners = brain.array[:, :10, :10]
    assert corners.sum() == 0


def test_brain_mask_refuses_unlabelled_ct(lung1_ct):
    """A chest CT read from NRRD has no modality ("OT"): its HU range still gets it refused (it
    used to give a 10.8 L "brain"); an unlabelled MRI (values >= 0) is still accepted."""
    ct = lung1_ct.with_meta(modality="OT")
    with pytest.raises(InputError, match="brain_mask expects an MRI, but values look like CT in HU"):
        brain_mask(ct)
    shifted = np.clip(ct.array[:, ::4, ::4].astype(np.float32) + 1024, 0, None)  # same anatomy, no HU
    mr = Volume(shifted, spacing=(ct.spacing[0] * 4, ct.spacing[1] * 4, ct.spacing[2]), meta={"modality": "OT"})
    assert brain_mask(mr).array.any()
    # Same for the breast ROI (mammogram / US): a chest CT gave a 10.8 L "breast".
    for image in (ct, lung1_ct):
        with pytest.raises(InputError, match="breast_mask expects a mammogram or ultrasound"):
            breast_mask(image)


def _mlo_phantom(seed: int = 0) -> tuple[Volume, np.ndarray, np.ndarray]:
    """Synthetic MLO-like image: noisy half-ellipse breast on the left, bright pectoral triangle
    in its upper-left corner. Returns (image, breast truth, pectoral truth)."""
    rng = np.random.default_rng(seed)
    h, w = 200, 160
    yy, xx = np.mgrid[:h, :w]
    breast = ((yy - h / 2) / (h / 2)) ** 2 + (xx / (0.8 * w)) ** 2 < 1
    pect = (xx < 60 - 0.6 * yy) & breast
    img = np.where(breast, 0.45, 0.02) + np.where(pect, 0.4, 0.0) + rng.normal(0, 0.03, (h, w))
    vol = Volume(img.astype(np.float32), spacing=(0.1, 0.1, 1.0), meta={"modality": "MG", "view": "MLO", "synthetic": True})
    return vol, breast & ~pect, pect


def test_breast_mask_removes_pectoral_on_synthetic_mlo():
    vol, breast_truth, pect_truth = _mlo_phantom()
    mask = breast_mask(vol).array[0] > 0
    dice = 2 * (mask & breast_truth).sum() / (mask.sum() + breast_truth.sum())
    assert dice > 0.95
    assert (mask & pect_truth).sum() < 0.1 * pect_truth.sum()
    kept = breast_mask(vol, remove_pectoral=False).array[0] > 0
    assert (kept & pect_truth).sum() > 0.9 * pect_truth.sum()


def test_breast_mask_on_real_mri_slice():
    image, _ = pyradiomics_case("breast1")
    mask = breast_mask(read(image))
    assert mask.array.any() and mask.array.dtype == np.uint8


def test_lung_mask_rejects_mr_and_nan(lung1):
    image, _ = pyradiomics_case("brain1")
    with pytest.raises(InputError, match="CT"):
        lung_mask(read(image).with_meta(modality="MR"))
    with pytest.raises(InputError, match="HU"):
        lung_mask(read(image))  # unlabelled but 0..3057: not HU
    bad = lung1.ct.array[20:22].astype(np.float32).copy()
    bad[0, 5, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        lung_mask(lung1.ct.with_array(np.zeros((48, 512, 512), np.float32)).__class__(bad, meta={"modality": "CT"}))


def test_lung_mask_no_lungs_is_input_error():
    ct = np.full((3, 64, 64), -1000, np.int16)
    yy, xx = np.mgrid[:64, :64]
    ct[:, (yy - 32) ** 2 + (xx - 32) ** 2 < 28**2] = 40  # a body with no air inside
    with pytest.raises(InputError, match="no air|no lungs"):
        lung_mask(Volume(ct, meta={"modality": "CT"}))


def test_body_mask_mr_contains_brain():
    mr = read(pyradiomics_case("brain1")[0]).with_meta(modality="MR")
    body = body_mask(mr).array > 0
    brain = brain_mask(mr).array > 0
    assert body[brain].mean() > 0.98  # the 3 mm opening trims ~1 % (thin bits where the dark skull is open)
    assert np.all(body_mask(mr, opening_mm=0).array[brain] > 0)
    assert body.sum() > 1.2 * brain.sum()  # scalp and skull are body, not brain
    assert not body[:, :3, :3].any()


def test_touching_lungs_are_split_left_right():
    """Synthetic (labelled so): two lung-shaped air regions joined by a 4-pixel bridge (the
    anterior junction line) are separated, and the one at smaller LPS x is the right lung."""
    ct = np.full((6, 96, 96), -1000, np.int16)
    yy, xx = np.mgrid[:96, :96]
    ct[:, (yy - 48) ** 2 / 40**2 + (xx - 48) ** 2 / 44**2 < 1] = 40
    for cx in (30, 66):
        ct[:, (yy - 48) ** 2 / 26**2 + (xx - cx) ** 2 / 14**2 < 1] = -850
    ct[:, 30:34, 40:57] = -850  # the bridge
    vol = Volume(ct, spacing=(4.0, 4.0, 5.0), meta={"modality": "CT", "synthetic": True})
    labels = lung_mask(vol, min_lung_ml=5.0, lesion_completion=False).array
    assert set(np.unique(labels)) == {0, RIGHT_LUNG, LEFT_LUNG}
    assert np.all(labels[:, 48, 25:35] == RIGHT_LUNG) and np.all(labels[:, 48, 61:71] == LEFT_LUNG)
    # mirrored direction (x axis pointing to the patient's right): the labels swap sides
    flipped = Volume(ct, spacing=(4.0, 4.0, 5.0), direction=np.diag([-1.0, 1.0, 1.0]), meta={"modality": "CT"})
    labels_f = lung_mask(flipped, min_lung_ml=5.0, lesion_completion=False).array
    assert np.all(labels_f[:, 48, 25:35] == LEFT_LUNG) and np.all(labels_f[:, 48, 61:71] == RIGHT_LUNG)


def test_an_mri_with_a_few_negative_values_is_not_called_ct():
    """nibabel's own test T1 (anatomical.nii, a file we did not write) holds a few negative values
    (minimum -610, 0.08 % of voxels below 0), as resampled MRI often does: it is not CT in HU (no
    air), so brain_mask takes it (a CT is still refused: the test above)."""
    from pathlib import Path

    from nibabel.testing import data_path

    from medanomaly.io import read
    from medanomaly.preprocess.checks import looks_like_hu

    mr = read(Path(data_path) / "anatomical.nii")
    assert float(mr.array.min()) <= -500 and not looks_like_hu(mr)
    assert brain_mask(mr).array.any()


def test_depth_ratio_tells_a_round_lesion_from_an_organ_cap():
    """A ball is about as deep as it is wide (ratio ~1); a one-slice disk 37 mm across on 5 mm
    slices (the spleen's cap cut tangentially by the lung base) is a pancake (ratio ~0.13)."""
    from medanomaly.preprocess.segment import _depth_ratio

    zz, yy, xx = np.mgrid[:12, :64, :64]
    ball = ((zz - 6) * 5.0) ** 2 + ((yy - 32) * 0.6) ** 2 + ((xx - 32) * 0.6) ** 2 <= 14.0**2
    assert 0.8 <= _depth_ratio(ball, (5.0, 0.6, 0.6)) <= 1.4
    disk = np.zeros((3, 64, 64), bool)
    disk[1] = ((yy[0] - 32) * 0.6) ** 2 + ((xx[0] - 32) * 0.6) ** 2 <= 18.5**2
    assert _depth_ratio(disk, (5.0, 0.6, 0.6)) < 0.2


def test_lesion_completion_takes_lung2_tumour_not_the_spleen_cap(lung2):
    """Lesion completion brings in the 11 mL of lung2's tumour that the closing leaves out, while
    the top of the spleen, ringed by the lung base on one slice, stays out: before the depth-ratio
    rule the completion added 113 mL besides the tumour, 43 mL with it (chest wall, paravertebral
    tissue and the spleen under the tumour's base: docs/preprocess.md)."""
    lesion = lung2.lesion.array > 0
    plain = lung_mask(lung2.ct, lesion_completion=False).array > 0
    added = (lung2.lungs.array > 0) & ~plain
    voxel_ml = lung2.ct.voxel_volume_mm3 / 1000.0
    assert (lesion & ~plain).sum() * voxel_ml > 10.0  # the closing alone misses part of the tumour
    assert np.all(lung2.lungs.array[lesion] > 0)
    assert (added & ~lesion).sum() * voxel_ml < 60.0


@pytest.mark.parametrize("modality", ["MG", "US", "DX", "CT", "PT"])
def test_brain_mask_refuses_an_image_labelled_as_another_modality(modality):
    """``segment --roi brain`` of a mammogram wrote a 44.5 cm2 "brain": only MR (or an unlabelled image) is taken."""
    image = Volume(np.random.default_rng(0).random((1, 64, 64)).astype(np.float32), meta={"modality": modality})
    with pytest.raises(InputError, match=f"brain_mask expects an MRI, got modality {modality}"):
        brain_mask(image)


def test_the_brain_mask_is_the_same_in_any_unit_and_warns_of_no_overflow() -> None:
    """An int64 MRI of values near 10^18 (or a float64 one of 10^30): skimage's Otsu overflowed float32 in its
    between-class variance (numpy's warnings on the terminal) and the mask came from infinities. Otsu is computed on
    the values mapped to [0, 1], the same threshold for any unit."""
    import warnings

    brain = read(pyradiomics_case("brain1")[0])
    reference = brain_mask(brain).array
    for scale, dtype in ((2.0**40, np.int64), (1e26, np.float64)):
        scaled = Volume((brain.array.astype(np.float64) * scale).astype(dtype), spacing=brain.spacing,
                        origin=brain.origin, direction=brain.direction, meta={"modality": "MR"})  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert np.array_equal(brain_mask(scaled).array, reference)


@pytest.mark.parametrize(("spacing_yx", "radius_mm"), [((0.8, 0.7), 20.0), ((0.703125, 0.703125), 20.0),
                                                       ((2.0, 0.8), 5.0), ((0.5, 1.0), 0.4)])  # fmt: skip
def test_lung_closing_equals_distance_transform_thresholds(spacing_yx, radius_mm):
    """The closing's row passes give the masks of thresholded Euclidean distances in mm (the plane around the
    image is background), ties at exactly ``radius_mm`` included (20 mm is 25 pixels of 0.8 mm)."""
    from medanomaly.preprocess.segment import _disk_closing_per_slice

    rng = np.random.default_rng(3)
    mask = ndimage.binary_dilation(rng.random((3, 70, 64)) < 0.01, iterations=3)
    mask[1, :5, :5] = True  # against the image corner
    pad = 40
    expected = mask.copy()
    for z in range(mask.shape[0]):
        plane = np.pad(mask[z], pad)
        grown = ndimage.distance_transform_edt(~plane, sampling=spacing_yx) <= radius_mm
        expected[z] |= (ndimage.distance_transform_edt(grown, sampling=spacing_yx) > radius_mm)[pad:-pad, pad:-pad]
    np.testing.assert_array_equal(_disk_closing_per_slice(mask, radius_mm, spacing_yx), expected)


def test_hole_filling_equals_scipy_slice_by_slice():
    """Holes are filled on the mask's in-plane box only; the result is SciPy's ``binary_fill_holes`` per slice,
    rings against the image edge (not holes) and masks off the box's centre included, and ``max_hole_px`` leaves
    larger holes open."""
    from medanomaly.preprocess.segment import _fill_holes_per_slice

    rng = np.random.default_rng(11)
    mask = rng.random((4, 40, 50)) < 0.55
    mask[0] = False
    mask[1, 10:30, 5:45] = True
    mask[1, 15:25, 10:40] = False  # a 300-pixel hole
    mask[1, 18:20, 20:22] = True  # an island inside it
    mask[2, :, :3] = False
    mask[2, :, 3] = True  # a wall against the left edge: what lies left of it touches the edge
    mask[3] = False
    mask[3, 30:36, 40:46] = True
    mask[3, 32:34, 42:44] = False  # a small hole in a ring far from the other slices' box
    expected = np.stack([ndimage.binary_fill_holes(s) for s in mask])
    np.testing.assert_array_equal(_fill_holes_per_slice(mask), expected)
    capped = _fill_holes_per_slice(mask, max_hole_px=100)
    assert not capped[1, 16, 11] and capped[3, 32, 42]  # the 300-pixel hole stays open, the 4-pixel one is filled
    assert not _fill_holes_per_slice(np.zeros((2, 5, 5), bool)).any()
