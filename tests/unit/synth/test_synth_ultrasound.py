"""Procedural breast ultrasound (synthetic): Rayleigh speckle, depth attenuation, posterior
shadowing and enhancement, benign "wider than tall" vs malignant "taller than wide" masses,
all measured from the images and masks, not read from the drawing parameters."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import measure

from medanomaly.errors import InputError
from medanomaly.synth.texture import rayleigh_speckle
from medanomaly.synth.ultrasound import MU_TGC, MU_TISSUE, _attenuation, make_us_cohort, render_ultrasound

KINDS = ("cyst", "fibroadenoma", "indistinct", "complex_cyst", "irregular")


def _measure(img) -> tuple[float, float, float, float]:
    """(box height / width in mm, posterior minus lateral mean 1-6 mm below the lesion,
    inside minus surrounding ring mean, solidity of the mask)."""
    les = img.lesions[0]
    a = img.image.array[0]
    sx, sy = img.image.spacing[:2]
    x0, y0, x1, y1 = les.box_px
    w = x1 - x0
    band = slice(y1 + int(1 / sy), y1 + int(6 / sy))
    below = a[band, x0 + w // 4 : x1 - w // 4]
    side = np.concatenate([a[band, max(x0 - int(8 / sx), 0) : max(x0 - int(3 / sx), 0)].ravel(),
                           a[band, x1 + int(3 / sx) : x1 + int(8 / sx)].ravel()])
    full = les.full_mask(a.shape)
    ring = ndi.binary_dilation(full, iterations=int(3 / sx)) & ~ndi.binary_dilation(full, iterations=int(1 / sx))
    solidity = measure.regionprops(les.mask.astype(int))[0].solidity
    post = below.mean() - side.mean() if below.size and side.size else np.nan
    return (les.height_px * sy) / (w * sx), post, a[full].mean() - a[ring].mean(), solidity


@pytest.fixture(scope="module")
def measured() -> dict[str, np.ndarray]:
    return {k: np.array([_measure(render_ultrasound([k], 192, seed=s)) for s in range(6)]) for k in KINDS}


def test_speckle_envelope_is_rayleigh():
    env = rayleigh_speckle(np.full((256, 256), 4.0), (1.0, 2.0), np.random.default_rng(0))
    assert np.mean(env**2) == pytest.approx(4.0, rel=0.05)  # mean power = scatter strength
    assert env.mean() / env.std() == pytest.approx(1.913, rel=0.05)  # Rayleigh SNR sqrt(pi / (4 - pi))
    assert np.median(env) / env.mean() == pytest.approx(0.9394, rel=0.03)  # sqrt(ln 4) / sqrt(pi / 2)
    gauss = np.abs(np.random.default_rng(0).normal(2.0, 1.0, 10000))
    assert not gauss.mean() / gauss.std() == pytest.approx(1.913, rel=0.05)  # the check can fail


def test_depth_attenuation_shadow_and_enhancement_of_the_beam_model():
    mu = np.full((200, 60), MU_TISSUE)
    plain = _attenuation(mu, 0.2, 0.2)
    depth = (np.arange(200) + 0.5) * 0.2
    assert plain[:, 30] == pytest.approx(np.exp(-(MU_TISSUE - MU_TGC) * depth), rel=0.02)  # residual fall-off
    mu[50:80, 20:40] = 0.5
    shadow = _attenuation(mu, 0.2, 0.2)
    assert shadow[120, 30] < 0.2 * plain[120, 30] and shadow[120, 5] == pytest.approx(plain[120, 5], rel=0.02)
    assert shadow[40, 30] == pytest.approx(plain[40, 30], rel=0.02)  # nothing above the lesion changes
    mu[50:80, 20:40] = 0.0
    assert _attenuation(mu, 0.2, 0.2)[120, 30] > 2.0 * plain[120, 30]


def test_benign_masses_are_wider_than_tall_malignant_taller_than_wide(measured):
    for kind in ("cyst", "fibroadenoma", "complex_cyst"):
        assert measured[kind][:, 0].max() < 0.85, kind
    assert measured["irregular"][:, 0].min() > 1.0
    assert measured["indistinct"][:, 0].mean() == pytest.approx(0.9, abs=0.25)


def test_posterior_shadowing_behind_malignant_enhancement_behind_cysts(measured):
    assert measured["irregular"][:, 1].max() < -0.15
    for kind in ("cyst", "complex_cyst"):  # tissue layers beside the lesion differ: most, not all, are brighter
        assert np.median(measured[kind][:, 1]) > 0.05 and measured[kind][:, 1].mean() > 0.1, kind
    assert abs(np.nanmean(measured["indistinct"][:, 1])) < 0.08


def test_lesions_are_hypoechoic_and_malignant_margins_irregular(measured):
    for kind in ("cyst", "complex_cyst", "irregular"):
        assert measured[kind][:, 2].max() < -0.1, kind
    for kind in ("fibroadenoma", "indistinct"):
        assert measured[kind][:, 2].mean() < 0.0, kind
    assert measured["irregular"][:, 3].max() < measured["cyst"][:, 3].min() - 0.15
    assert measured["irregular"][:, 3].max() < measured["fibroadenoma"][:, 3].min() - 0.15


def test_geometry_metadata_and_determinism():
    a = render_ultrasound(["benign"], (128, 96), seed=3, depth_mm=32.0, width_mm=48.0, patient_id="U1", key="k")
    b = render_ultrasound(["benign"], (128, 96), seed=3, depth_mm=32.0, width_mm=48.0)
    assert np.array_equal(a.image.array, b.image.array)
    assert a.image.shape == (1, 128, 96) and a.image.spacing == pytest.approx((0.5, 0.25, 1.0))
    assert a.image.modality == "US" and a.synthetic and a.image.meta["synthetic"] is True
    assert 0.0 <= a.image.array.min() and a.image.array.max() <= 1.0 and a.image.array.dtype == np.float32
    les = a.lesions[0]
    assert les.label == "benign" and les.kind == "mass" and les.attributes["phantom_kind"] in ("cyst", "fibroadenoma")
    assert np.allclose(les.box_mm, (np.array(les.box_px) - 0.5) * np.array([0.5, 0.25, 0.5, 0.25]))
    assert render_ultrasound([], 64, seed=1).lesions == ()
    two = render_ultrasound(["malignant", "cyst"], 192, seed=5)
    assert [les.label for les in two.lesions] == ["malignant", "benign"]
    assert not (two.lesions[0].full_mask((192, 192)) & two.lesions[1].full_mask((192, 192))).any()


def test_bad_arguments_are_clear():
    with pytest.raises(InputError, match="unknown lesion"):
        render_ultrasound(["suspicious"])
    with pytest.raises(InputError, match="at least"):
        render_ultrasound([], 16)
    with pytest.raises(InputError, match="depth"):
        render_ultrasound([], 64, depth_mm=5.0)
    with pytest.raises(InputError, match="parameter sets"):
        render_ultrasound(["cyst"], 64, params=[])


def test_cohort_is_split_by_patient_and_planes_share_the_lesion_class():
    cohort = make_us_cohort(12, (96, 96), seed=4, two_plane_fraction=1.0, normal_fraction=0.25)
    assert cohort.synthetic and cohort.source == "us_phantom" and len(cohort) == 24
    by_patient: dict[str, list] = {}
    for it in cohort:
        by_patient.setdefault(it.patient_id, []).append(it)
    for planes in by_patient.values():
        assert {p.view for p in planes} == {"radial", "antiradial"}
        assert len({p.split for p in planes}) == 1 and len({p.label for p in planes}) == 1
        kinds = {les.attributes["phantom_kind"] for p in planes for les in p.lesions}
        assert len(kinds) <= 1
    assert any(not it.lesions for it in cohort)
    assert {it.label for it in cohort} >= {"benign", "uncertain", "malignant", "normal"}
