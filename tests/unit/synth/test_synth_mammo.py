"""Procedural mammography phantom (synthetic): classes differ measurably, background is 1/f^3."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import measure, morphology

from medanomaly.errors import InputError
from medanomaly.synth.mammo import (
    power_law_noise,
    render_case,
    spectrum_slope,
)
from medanomaly.synth.mammo_cohort import write_dataset

KINDS = (
    ("circumscribed", "benign"),
    ("indistinct", "uncertain"),
    ("spiculated", "malignant"),
    ("calcifications", "malignant"),
)


def _descriptors(case) -> tuple[float, float, int]:
    """Measured from the image and mask (not read from the drawing parameters).

    Returns:
        spiculation index (1 - solidity of the largest mask component), margin sharpness (mean
        gradient on the mask boundary per unit lesion contrast, 1/mm), calcification count (small
        bright top-hat blobs within 12 mm of the lesion).
    """
    img = case.image.array[0].astype(float)
    m = case.mask.array[0] > 0
    sp = case.image.spacing[0]
    largest = max(measure.regionprops(measure.label(m)), key=lambda p: p.area)
    grad = np.hypot(ndi.sobel(img, 0), ndi.sobel(img, 1)) / (8 * sp)
    boundary = m & ~ndi.binary_erosion(m)
    ring = ndi.binary_dilation(m, iterations=max(2, int(3 / sp))) & ~ndi.binary_dilation(m)
    sharpness = grad[boundary].mean() / max(img[m].mean() - img[ring].mean(), 1e-6)
    cx, cy = np.array(case.lesion.center_mm) / sp
    r = int(12 / sp)
    win = img[int(max(cy - r, 0)) : int(cy + r), int(max(cx - r, 0)) : int(cx + r)]
    tophat = morphology.white_tophat(win, morphology.disk(max(2, int(1.0 / sp))))
    blobs = measure.regionprops(measure.label(tophat > 0.12))
    n_calc = sum(1 for b in blobs if b.area <= (1.2 / sp) ** 2 * 3.2)
    return 1.0 - largest.solidity, sharpness, n_calc


@pytest.fixture(scope="module")
def measured() -> dict[str, np.ndarray]:
    return {
        kind: np.array([_descriptors(render_case(label, "CC", 256, seed=100 + s, kind=kind)) for s in range(6)])
        for kind, label in KINDS
    }


def test_spiculated_masses_have_the_highest_spiculation_index(measured):
    spic = measured["spiculated"][:, 0]
    for kind in ("circumscribed", "indistinct"):
        assert spic.min() > measured[kind][:, 0].max() + 0.2, kind


def test_circumscribed_margins_are_sharper_than_indistinct(measured):
    assert measured["circumscribed"][:, 1].min() > measured["indistinct"][:, 1].max()
    assert np.median(measured["circumscribed"][:, 1]) > 1.5 * np.median(measured["indistinct"][:, 1])


def test_calcification_clusters_have_many_bright_specks(measured):
    assert measured["calcifications"][:, 2].min() >= 4
    for kind in ("circumscribed", "indistinct", "spiculated"):
        assert measured[kind][:, 2].max() <= 2, kind


@pytest.mark.parametrize("beta", [2.0, 3.0])
def test_background_spectrum_slope_is_minus_beta(beta):
    slopes = []
    for seed in range(4):
        case = render_case("normal", "CC", 256, seed=seed, beta=beta)
        a = case.image.array[0]
        roi = a[128 - 40 : 128 + 40, 32 : 32 + 80]  # inside the breast, away from the skin fall-off
        assert case.mask.array.sum() == 0
        slopes.append(spectrum_slope(roi))
    assert np.mean(slopes) == pytest.approx(-beta, abs=0.3)
    # the raw texture generator itself
    assert spectrum_slope(power_law_noise((128, 128), beta, np.random.default_rng(0))) == pytest.approx(
        -beta, abs=0.3
    )


def test_geometry_metadata_and_determinism():
    a = render_case("benign", "MLO", 128, seed=5, field_of_view_mm=96.0)
    b = render_case("benign", "MLO", 128, seed=5, field_of_view_mm=96.0)
    assert np.array_equal(a.image.array, b.image.array) and a.lesion == b.lesion
    assert a.image.spacing == pytest.approx((0.75, 0.75, 1.0))
    assert a.image.meta["synthetic"] is True and a.image.modality == "MG"
    assert a.image.meta["view"] == "MLO" and a.mask.same_grid(a.image)
    assert a.mask.array.dtype == np.uint8 and a.mask.array.sum() > 0
    c = render_case("benign", "MLO", 128, seed=6)
    assert not np.array_equal(a.image.array, c.image.array)


def test_anatomy_pectoral_muscle_skin_falloff_and_laterality():
    mlo = [render_case("normal", "MLO", 128, seed=s).image.array[0] for s in range(3)]
    cc = [render_case("normal", "CC", 128, seed=s).image.array[0] for s in range(3)]
    corner = (slice(0, 12), slice(0, 12))  # upper chest-wall corner: muscle in MLO, air in CC
    assert min(m[corner].mean() for m in mlo) > 0.6
    assert max(c[corner].mean() for c in cc) < 0.3
    # thickness falls toward the nipple-side skin: intensity along the central row decreases
    row = cc[0][64, :]
    inside = np.flatnonzero(row > 0.05)
    edge = inside.max()
    assert row[edge - 25 : edge - 15].mean() > row[edge - 3 : edge + 1].mean()
    right = render_case("normal", "CC", 128, seed=0, laterality="R").image.array[0]
    assert right[:, -12:].mean() > right[:, :12].mean()  # chest wall on the right


def test_bad_arguments_are_clear():
    with pytest.raises(InputError, match="unknown phantom label"):
        render_case("suspicious")
    with pytest.raises(InputError, match="view"):
        render_case("benign", view="LAT")
    with pytest.raises(InputError, match="not drawn"):
        render_case("benign", kind="spiculated")


def test_write_dataset_patient_splits_and_engine_manifest_loader(tmp_path):
    manifest = write_dataset(tmp_path / "mammo", n_patients=18, size=64, seed=1, two_view_fraction=0.6)
    rows = list(csv.DictReader(manifest.open()))
    assert {"path", "label", "patient_id", "split"} <= set(rows[0])
    splits_of: dict[str, set[str]] = {}
    for r in rows:
        splits_of.setdefault(r["patient_id"], set()).add(r["split"])
        assert (manifest.parent / r["path"]).is_file() and (manifest.parent / r["mask_path"]).is_file()
    assert len(splits_of) == 18 and all(len(s) == 1 for s in splits_of.values())
    for split in ("train", "val", "test"):
        assert {r["label"] for r in rows if r["split"] == split} == {"benign", "uncertain", "malignant"}
    views = {}
    for r in rows:
        views.setdefault(r["patient_id"], []).append(r["view"])
    assert any(len(v) == 2 for v in views.values()) and any(len(v) == 1 for v in views.values())
    assert "SYNTHETIC" in (manifest.parent / "README.txt").read_text()

    from medanomaly.io import read

    vol = read(manifest.parent / rows[0]["path"])
    assert vol.spacing[0] == pytest.approx(120.0 / 64)
    assert vol.shape == (1, 64, 64)

    from medanomaly.data.manifest import load_manifest

    data = load_manifest(manifest, class_names=("benign", "uncertain", "malignant"), image_size=(64, 64))
    assert data.images.shape == (len(rows), 1, 64, 64)
    assert sorted(set(data.labels.tolist())) == [0, 1, 2]


def test_write_dataset_png_and_bad_arguments(tmp_path):
    manifest = write_dataset(tmp_path / "png", n_patients=9, size=48, seed=2, fmt="png", two_view_fraction=0.0)
    rows = list(csv.DictReader(manifest.open()))
    assert len(rows) == 9 and all(r["path"].endswith(".png") for r in rows)
    from PIL import Image

    img = np.asarray(Image.open(manifest.parent / rows[0]["path"]))
    mask = np.asarray(Image.open(manifest.parent / rows[0]["mask_path"]))
    assert img.dtype == np.uint16 and img.shape == (48, 48) and img.max() > 10_000
    assert set(np.unique(mask)) <= {0, 1}
    again = write_dataset(tmp_path / "png2", n_patients=9, size=48, seed=2, fmt="png", two_view_fraction=0.0)
    assert again.read_text() == manifest.read_text()  # seeded: the same cohort, pixel for pixel
    assert (again.parent / rows[3]["path"]).read_bytes() == (manifest.parent / rows[3]["path"]).read_bytes()
    with pytest.raises(InputError, match="format"):
        write_dataset(tmp_path / "x", n_patients=9, fmt="jpeg")
    with pytest.raises(InputError, match="at least"):
        write_dataset(tmp_path / "x", n_patients=4)


# ------------------------------------------------------------------ lesions with boxes, density
def test_lesions_have_class_box_and_mask_matching_the_image():
    from medanomaly.synth.mammo import render_mammogram

    img = render_mammogram(["benign", "malignant", "uncertain"], "CC", 256, seed=4, density="b")
    assert [les.label for les in img.lesions] == ["benign", "malignant", "uncertain"]
    assert img.synthetic and img.image.modality == "MG" and img.attributes["density"] == "b"
    sp = img.image.spacing[0]
    inst = img.instance_map()
    for i, les in enumerate(img.lesions):
        assert les.kind in ("mass", "calcification_cluster") and les.area_px > 0
        assert np.allclose(les.box_mm, (np.array(les.box_px) - 0.5) * sp)
        assert (inst == i + 1).sum() == les.area_px  # lesions do not overlap
        x0, y0, x1, y1 = les.box_px
        a = img.image.array[0]
        ring = np.ones(a.shape, bool)
        ring[max(y0 - 6, 0):y1 + 6, max(x0 - 6, 0):x1 + 6] = False
        ring[max(y0 - 12, 0):y1 + 12, max(x0 - 12, 0):x1 + 12] &= True
        near = ~ring & ~les.full_mask(a.shape)
        near[y0:y1, x0:x1] = False
        assert a[les.full_mask(a.shape)].mean() > a[near].mean()  # lesions are denser than around them
    one = render_case("malignant", "CC", 128, seed=7, kind="spiculated")
    assert len(one.lesions) == 1 and one.lesions[0].kind == "mass"
    assert np.array_equal(one.lesions[0].full_mask((128, 128)), one.mask.array[0] > 0)
    assert one.to_lesion_image("P1", "k").label == "malignant"
    assert render_case("normal", "CC", 64, seed=1).lesions == ()


def test_right_breast_boxes_are_mirrored():
    from medanomaly.synth.mammo import render_mammogram

    left = render_mammogram(["benign"], "MLO", 128, seed=9, laterality="L", density="a")
    right = render_mammogram(["benign"], "MLO", 128, seed=9, laterality="R", density="a")
    (lx0, ly0, lx1, ly1), (rx0, ry0, rx1, ry1) = left.lesions[0].box_px, right.lesions[0].box_px
    assert (ly0, ly1) == (ry0, ry1) and (rx0, rx1) == (128 - lx1, 128 - lx0)
    assert np.array_equal(right.image.array[0], left.image.array[0][:, ::-1])


def test_density_classes_give_increasing_dense_fraction_and_brightness():
    from medanomaly.synth.mammo import DENSITIES, render_mammogram

    frac, level = {}, {}
    for d in "abcd":
        imgs = [render_mammogram([], "CC", 128, seed=s, density=d) for s in range(4)]
        frac[d] = [im.attributes["dense_fraction"] for im in imgs]
        level[d] = np.mean([np.median(im.image.array[0][40:90, 10:60]) for im in imgs])
        lo, hi = DENSITIES[d]
        assert lo - 0.08 <= min(frac[d]) and max(frac[d]) <= hi + 0.08, (d, frac[d])
    assert level["a"] < level["b"] < level["c"] < level["d"]
    with pytest.raises(InputError, match="density"):
        render_mammogram([], density="e")


def test_calcification_classes_differ_in_speck_size_and_brightness():
    def specks(kind: str, label: str) -> tuple[float, float]:
        sizes, peaks = [], []
        for s in range(4):
            case = render_case(label, "CC", 256, seed=40 + s, kind=kind)
            m = case.mask.array[0] > 0
            lab = measure.label(m)
            sizes += [r.area for r in measure.regionprops(lab)]
            tophat = morphology.white_tophat(case.image.array[0], morphology.disk(6))
            peaks.append(float(tophat[m].max()))
        return float(np.median(sizes)), float(np.median(peaks))

    coarse, amorphous, fine = (specks("coarse_calcifications", "benign"), specks("amorphous_calcifications", "uncertain"),
                               specks("calcifications", "malignant"))
    assert coarse[0] > 2.5 * fine[0] and coarse[0] > 2.5 * amorphous[0]  # large benign calcifications
    assert amorphous[1] < 0.75 * fine[1]  # faint amorphous specks
    case = render_case("benign", "CC", 128, seed=3, kind="coarse_calcifications")
    assert case.lesions[0].kind == "calcification_cluster" and case.lesions[0].label == "benign"


def test_lesion_cohort_two_views_share_lesions_and_split_by_patient():
    from medanomaly.synth.mammo import make_lesion_cohort

    cohort = make_lesion_cohort(n_patients=12, size=96, seed=2, two_view_fraction=1.0, normal_fraction=0.2)
    assert cohort.synthetic and cohort.source == "mammo_phantom" and len(cohort) == 24
    by_patient: dict[str, list] = {}
    for it in cohort:
        by_patient.setdefault(it.patient_id, []).append(it)
    for views in by_patient.values():
        cc, mlo = sorted(views, key=lambda it: it.view)
        assert (cc.view, mlo.view) == ("CC", "MLO") and cc.split == mlo.split
        assert sorted(les.label for les in cc.lesions) == sorted(les.label for les in mlo.lesions)
        assert cc.attributes["density"] == mlo.attributes["density"]
    assert any(not it.lesions for it in cohort) and {it.split for it in cohort} == {"train", "val", "test"}
    counts = {c: sum(les.label == c for it in cohort for les in it.lesions) for c in cohort.class_names}
    assert min(counts.values()) > 0
