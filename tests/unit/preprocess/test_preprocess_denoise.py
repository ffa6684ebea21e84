"""Denoising on a real CT slice (lung1) with added Gaussian noise: PSNR and SSIM must improve."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from medanomaly.errors import InputError
from medanomaly.preprocess import denoise
from medanomaly.types import Volume

DATA_RANGE = 1500.0  # the lung window width, HU: metrics on the clinically viewed range


def _scores(clean: np.ndarray, img: np.ndarray) -> tuple[float, float]:
    c = np.clip(clean, -1350, 150)
    i = np.clip(img, -1350, 150)
    return (peak_signal_noise_ratio(c, i, data_range=DATA_RANGE),
            structural_similarity(c, i, data_range=DATA_RANGE))  # fmt: skip


@pytest.fixture(scope="module")
def noisy_pair(ct_slice):
    rng = np.random.default_rng(42)
    noisy = ct_slice.with_array(ct_slice.array + rng.normal(0, 60.0, ct_slice.array.shape).astype(np.float32))
    return ct_slice, noisy


@pytest.mark.parametrize(
    "fn, kwargs",
    [
        (denoise.gaussian, {"sigma_mm": 0.8}),
        (denoise.median, {"radius": 1}),
        (denoise.bilateral, {"domain_sigma_mm": 1.0, "range_sigma": 150.0}),
        (denoise.nl_means, {}),
        (denoise.anisotropic_diffusion, {"kind": "curvature", "iterations": 5}),
        (denoise.anisotropic_diffusion, {"kind": "gradient", "iterations": 5, "conductance": 2.0}),
    ],
    ids=["gaussian", "median", "bilateral", "nl_means", "curvature", "gradient"],
)
def test_denoise_improves_psnr_and_ssim(noisy_pair, fn, kwargs):
    clean, noisy = noisy_pair
    out = fn(noisy, **kwargs)
    assert out.same_grid(noisy) and out.array.dtype == np.float32
    psnr0, ssim0 = _scores(clean.array[0], noisy.array[0])
    psnr1, ssim1 = _scores(clean.array[0], out.array[0])
    assert psnr1 > psnr0 + 1.0, (psnr0, psnr1)
    assert ssim1 > ssim0 + 0.02, (ssim0, ssim1)


def test_speckle_lee_reduces_multiplicative_noise(ct_slice):
    rng = np.random.default_rng(1)
    clean = np.clip(ct_slice.array, -1350, 150) + 1400.0  # positive intensities, like US
    speckled = clean * rng.gamma(8.0, 1 / 8.0, clean.shape)
    out = denoise.speckle_lee(ct_slice.with_array(speckled.astype(np.float32)))
    err0 = np.abs(speckled - clean).mean()
    err1 = np.abs(out.array - clean).mean()
    assert err1 < 0.8 * err0


def test_denoise_3d_and_per_slice_keep_geometry(ct_slice):
    vol = Volume(np.repeat(ct_slice.array[:, 200:264, 200:264], 4, axis=0), spacing=(0.6, 0.6, 5.0),
                 origin=(1.0, 2.0, 3.0), meta={"modality": "CT"})  # fmt: skip
    for out in (denoise.gaussian(vol, 1.0), denoise.median(vol, 1, per_slice=True),
                denoise.anisotropic_diffusion(vol, iterations=2)):  # fmt: skip
        assert out.same_grid(vol) and out.modality == "CT"
    # slices are identical, so 3D smoothing keeps them identical
    g = denoise.gaussian(vol, 1.0).array
    assert np.allclose(g[0], g[3], atol=1e-3)


def test_denoise_bad_input():
    nan = np.zeros((1, 8, 8), np.float32)
    nan[0, 1, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        denoise.gaussian(Volume(nan))
    with pytest.raises(InputError, match="sigma"):
        denoise.gaussian(Volume(np.zeros((1, 8, 8), np.float32)), sigma_mm=0)
    with pytest.raises(InputError, match="kind"):
        denoise.anisotropic_diffusion(Volume(np.zeros((1, 8, 8), np.float32)), kind="heat")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="scalar"):
        denoise.median(Volume(np.zeros((1, 8, 8, 3), np.float32)))


def test_noise_sigma_estimates_added_noise():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:128, :128]
    smooth = 100 * np.sin(yy / 20.0) + 50 * np.cos(xx / 15.0)
    for sigma in (5.0, 20.0):
        est = denoise.noise_sigma(smooth + rng.normal(0, sigma, smooth.shape))
        assert abs(est - sigma) < 0.15 * sigma


def test_curvature_diffusion_on_coarse_spacing_is_stable_and_quiet(capfd):
    """ITK's curvature filter checks its time step in pixel units whatever the spacing: the default step
    from a 5 mm spacing (0.59) was over its bound, and ITK printed an instability warning per call."""
    from medanomaly.preprocess.denoise import anisotropic_diffusion

    noisy = np.random.default_rng(0).normal(0, 1, (1, 64, 64)).astype(np.float32)
    out = anisotropic_diffusion(Volume(noisy, spacing=(5.0, 5.0, 5.0)), kind="curvature")
    assert "instability" not in capfd.readouterr().err
    assert np.isfinite(out.array).all() and out.array.std() < noisy.std()  # it smooths, and stays finite
