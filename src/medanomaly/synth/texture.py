"""Random textures shared by the procedural phantoms (SYNTHETIC data), and the spectrum check.

* :func:`power_law_noise`: the anatomical background of mammograms, power spectrum ~ 1/f^beta
  (beta about 3 on real mammograms: Burgess et al., Med Phys 2001);
  :func:`spectrum_slope` measures it back (a slope of about -beta).
* :func:`rayleigh_speckle`: fully developed ultrasound speckle: a complex Gaussian scatterer
  field filtered by the imaging point-spread function, whose envelope is Rayleigh distributed
  (mean / std = 1.91 in a homogeneous region).

Example:
    >>> import numpy as np
    >>> field = power_law_noise((128, 128), 3.0, np.random.default_rng(0))
    >>> round(float(field.std()), 3), abs(spectrum_slope(field) + 3.0) < 0.3
    (1.0, True)
"""

from __future__ import annotations

import numpy as np

from medanomaly.errors import InputError

__all__ = ["power_law_noise", "radial_power_spectrum", "rayleigh_speckle", "spectrum_slope"]


def power_law_noise(shape: tuple[int, int], beta: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-std 2D field whose power spectrum falls as 1/f^beta.

    White Gaussian noise is filtered in Fourier space by f^(-beta/2) (the DC term set to 0).
    """
    h, w = shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    amp = f ** (-beta / 2.0)
    amp[0, 0] = 0.0
    spectrum = np.fft.rfft2(rng.standard_normal((h, w))) * amp
    field = np.fft.irfft2(spectrum, s=(h, w))
    return (field - field.mean()) / (field.std() + 1e-12)


def radial_power_spectrum(image: np.ndarray, spacing_mm: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of a square 2D region (Hann-windowed, mean removed).

    Returns:
        (frequency in cycles/mm, power) for integer radial frequency bins 1 .. N/2 - 1.
    """
    a = np.asarray(image, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] < 16:
        raise InputError(f"need a square 2D region of at least 16 px, got {a.shape}")
    n = a.shape[0]
    win = np.outer(np.hanning(n), np.hanning(n))
    a = (a - a.mean()) * win
    power = np.abs(np.fft.fftshift(np.fft.fft2(a))) ** 2
    yy, xx = np.indices(power.shape) - n // 2
    r = np.rint(np.hypot(yy, xx)).astype(int)
    radial = np.bincount(r.ravel(), power.ravel()) / np.maximum(np.bincount(r.ravel()), 1)
    k = np.arange(1, n // 2)
    return k / (n * spacing_mm), radial[k]


def spectrum_slope(image: np.ndarray, f_range: tuple[float, float] = (0.03, 0.25)) -> float:
    """Slope of log(power) vs log(frequency), fitted over ``f_range`` in cycles/pixel.

    For a 1/f^beta texture this is about -beta. The default band leaves out the lowest
    frequencies (window leakage) and the highest (detector blur, quantum noise).
    """
    freqs, power = radial_power_spectrum(image, 1.0)
    keep = (freqs >= f_range[0]) & (freqs <= f_range[1]) & (power > 0)
    if keep.sum() < 3:
        raise InputError("too few frequencies in the fit band: use a larger region")
    slope, _ = np.polyfit(np.log(freqs[keep]), np.log(power[keep]), 1)
    return float(slope)


def rayleigh_speckle(
    scatter_strength: np.ndarray,
    psf_sigma_px: tuple[float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """Envelope of fully developed speckle: ``|PSF * (n * sqrt(s))|`` with complex Gaussian n.

    Args:
        scatter_strength: (y, x) mean backscatter power per pixel (echogenicity, >= 0).
        psf_sigma_px: Gaussian point-spread function widths (axial = y, lateral = x) in pixels.
        rng: random generator.

    Returns:
        (y, x) envelope amplitude; in a region of constant strength it is Rayleigh distributed.
    """
    from scipy.ndimage import gaussian_filter

    s = np.sqrt(np.clip(np.asarray(scatter_strength, dtype=np.float64), 0.0, None))
    shape = s.shape
    re = gaussian_filter(rng.standard_normal(shape) * s, psf_sigma_px, mode="reflect")
    im = gaussian_filter(rng.standard_normal(shape) * s, psf_sigma_px, mode="reflect")
    # unit mean power (E|env|^2 = 1) for unit strength: filtering scales the variance by the
    # energy of the kernel, measured on an impulse
    half = int(4 * max(psf_sigma_px)) + 1
    delta = np.zeros((2 * half + 1, 2 * half + 1))
    delta[half, half] = 1.0
    energy = float((gaussian_filter(delta, psf_sigma_px, mode="constant") ** 2).sum())
    return np.hypot(re, im) / np.sqrt(2.0 * max(energy, 1e-12))
