"""A procedural mammography phantom (SYNTHETIC data) for the breast 3-class case study.

No mammography cohort can be used here (DATA.md), so this module draws 2D mammogram-like images
whose lesion class is known exactly. It is a *stand-in for testing the pipeline*, not a model of
breast imaging physics; every image it makes says ``synthetic=True`` in its metadata, and every
number measured on it must be labelled synthetic.

What an image contains (all lengths in mm; ``spacing = field_of_view_mm / size``):

* **Breast outline**: a half-ellipse against the chest wall (left edge; mirrored for right
  breasts) with a slightly irregular border. ``CC`` view: centred; ``MLO`` view: taller, lower,
  with the **pectoral muscle** as a bright triangle in the upper chest-wall corner.
* **Anatomical background**: power-law noise with power spectrum P(f) ~ 1/f^beta, beta = 3
  by default (the value measured on real mammograms, Burgess et al. 2001), scaled to a
  fibroglandular texture; :func:`spectrum_slope` measures it back (about -beta).
* **Compressed-thickness fall-off** near the skin (semicircular edge profile over
  ``edge_falloff_mm``) and a thin brighter **skin line**.
* **One lesion** of a kind that decides the label (BI-RADS-like descriptors):

  ============== ======================================================= =========
  kind           appearance                                              label
  ============== ======================================================= =========
  circumscribed  round/oval mass, sharp margin (edge blur 0.2 mm)        benign
  indistinct     oval mass, ill-defined lobulated margin (blur ~30% R),  uncertain
                 partly obscured by the overlying tissue texture
  spiculated     small dense core with 10-24 tapering radiating spicules malignant
  calcifications cluster of 6-20 bright specks within a 2.5-6 mm radius    malignant
  none           no lesion (only when ``"normal"`` is asked for)         normal
  ============== ======================================================= =========

* Detector blur (Gaussian, 0.5 px) and white quantum noise.

What it is **not**: no X-ray spectrum, scatter, Cooper's ligaments, ducts, vessels or real
BI-RADS density categories; calcifications smaller than a pixel are drawn at a minimum of about
one pixel (so at low resolution they are larger than real microcalcifications); label noise is
zero. A classifier that does well here has learned these drawing rules, not breast cancer.

Example:
    >>> case = render_case("malignant", view="MLO", size=128, seed=3)
    >>> case.image.modality, case.image.meta["synthetic"], case.label
    ('MG', True, 'malignant')
    >>> case.image.shape == case.mask.shape == (1, 128, 128)
    True
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medanomaly.errors import InputError
from medanomaly.types import Volume

__all__ = [
    "KIND_LABEL",
    "PHANTOM_VERSION",
    "LABEL_KINDS",
    "Lesion",
    "MammoCase",
    "power_law_noise",
    "radial_power_spectrum",
    "render_case",
    "spectrum_slope",
    "write_dataset",
]

#: Bumped whenever the drawing rules change, so cached cohorts can be told apart.
PHANTOM_VERSION = "1"

#: Lesion kind -> class label.
KIND_LABEL = {
    "circumscribed": "benign",
    "indistinct": "uncertain",
    "spiculated": "malignant",
    "calcifications": "malignant",
    "none": "normal",
}
#: Class label -> the lesion kinds drawn for it.
LABEL_KINDS = {
    "benign": ("circumscribed",),
    "uncertain": ("indistinct",),
    "malignant": ("spiculated", "calcifications"),
    "normal": ("none",),
}
VIEWS = ("CC", "MLO")


@dataclass(frozen=True)
class Lesion:
    """What was drawn (the ground truth of one image).

    Attributes:
        kind: ``circumscribed``, ``indistinct``, ``spiculated``, ``calcifications`` or ``none``.
        center_mm: lesion centre (x, y) in mm from the image corner.
        radius_mm: mass radius (mean semi-axis) or calcification-cluster radius, mm.
        margin_blur_mm: Gaussian margin blur, mm (0 for calcifications).
        n_spicules: number of spicules (spiculated only).
        n_calcifications: number of calcifications (calcifications only).
        contrast: peak added intensity (background tissue is ~0.45 +- 0.1).
    """

    kind: str
    center_mm: tuple[float, float] = (float("nan"), float("nan"))
    radius_mm: float = 0.0
    margin_blur_mm: float = 0.0
    n_spicules: int = 0
    n_calcifications: int = 0
    contrast: float = 0.0


@dataclass(frozen=True, eq=False)
class MammoCase:
    """One synthetic mammogram: image, lesion mask (uint8, same grid), label and what was drawn."""

    image: Volume
    mask: Volume
    label: str
    lesion: Lesion
    view: str
    laterality: str


# --------------------------------------------------------------------------- background
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


# --------------------------------------------------------------------------- anatomy
def _breast_regions(
    shape: tuple[int, int], view: str, spacing: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Breast mask and pectoral-muscle mask, chest wall at x = 0."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    if view == "CC":
        cy, a, b = h * rng.uniform(0.46, 0.54), w * rng.uniform(0.70, 0.84), h * rng.uniform(0.38, 0.45)
    else:  # MLO: taller, lower, reaching the axilla at the top
        cy, a, b = h * rng.uniform(0.55, 0.62), w * rng.uniform(0.68, 0.80), h * rng.uniform(0.50, 0.58)
    theta = np.arctan2((yy - cy) / b, xx / a)
    # irregular border: a smooth random function of the angle (a few low harmonics)
    wobble = sum(rng.normal(0, 0.02) * np.cos(m * theta + rng.uniform(0, 2 * np.pi)) for m in (2, 3, 5))
    rho = np.hypot(xx / a, (yy - cy) / b)
    breast = rho <= 1.0 + wobble
    pectoral = np.zeros(shape, dtype=bool)
    if view == "MLO":
        top, left = w * rng.uniform(0.22, 0.34), h * rng.uniform(0.45, 0.62)
        pectoral = (xx / top + yy / left) < 1.0
        breast |= pectoral
    return breast, pectoral


def _thickness(breast: np.ndarray, spacing: float, falloff_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Relative compressed thickness (0..1) and the distance to the skin line in mm."""
    from scipy.ndimage import distance_transform_edt

    padded = np.pad(breast, ((1, 1), (0, 0)), constant_values=False)
    padded = np.pad(padded, ((0, 0), (1, 0)), constant_values=True)  # the chest wall is not skin
    dist = distance_transform_edt(padded)[1:-1, 1:] * spacing
    d = np.clip(dist / falloff_mm, 0.0, 1.0)
    return np.sqrt(1.0 - (1.0 - d) ** 2) * breast, dist


# --------------------------------------------------------------------------- lesions
def _ellipse_rho(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, ra: float, rb: float, ang: float) -> np.ndarray:
    c, s = np.cos(ang), np.sin(ang)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    return np.hypot(u / ra, v / rb)


def _mass_profile(rho: np.ndarray) -> np.ndarray:
    """Projected density of a compact mass: steep rise at the margin, flat-ish top."""
    return np.clip(2.0 * np.sqrt(np.clip(1.0 - rho**2, 0.0, None)), 0.0, 1.0)


def _draw_lesion(
    kind: str,
    shape: tuple[int, int],
    spacing: float,
    center_px: tuple[float, float],
    params: dict[str, float],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, Lesion]:
    """Additive lesion signal, its mask and the record of what was drawn."""
    from scipy.ndimage import gaussian_filter

    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cx, cy = center_px
    r_px = params["radius_mm"] / spacing
    ang = params["angle"]
    signal = np.zeros(shape)
    n_spic = n_calc = 0
    blur_mm = 0.0
    if kind in ("circumscribed", "indistinct"):
        ra, rb = r_px * params["aspect"], r_px / params["aspect"]
        rho = _ellipse_rho(xx, yy, cx, cy, ra, rb, ang)
        if kind == "indistinct":  # lobulated, ill-defined border
            theta = np.arctan2(yy - cy, xx - cx)
            lobes = sum(0.08 * np.cos(m * theta + rng.uniform(0, 2 * np.pi)) for m in (3, 5, 7))
            rho = rho * (1.0 + lobes)
        core = _mass_profile(rho)
        blur_mm = 0.2 if kind == "circumscribed" else 0.3 * params["radius_mm"]
        signal = params["contrast"] * gaussian_filter(core, max(blur_mm / spacing, 0.3))
        mask = rho <= 1.0
    elif kind == "spiculated":
        rho = _ellipse_rho(xx, yy, cx, cy, r_px * 0.6, r_px * 0.6, 0.0)
        blur_mm = 0.1 * params["radius_mm"]
        core = gaussian_filter(_mass_profile(rho), max(blur_mm / spacing, 0.3))
        spic = np.zeros(shape)
        n_spic = int(params["n_spicules"])
        for t0 in rng.uniform(0, 2 * np.pi, n_spic):
            length = r_px * rng.uniform(1.4, 2.6)
            width = max(rng.uniform(0.4, 0.8) / spacing, 0.5)
            dx, dy = np.cos(t0), np.sin(t0)
            t = (xx - cx) * dx + (yy - cy) * dy
            d = np.abs(-(xx - cx) * dy + (yy - cy) * dx)
            taper = np.clip(1.0 - t / length, 0.0, 1.0) * (t > 0)
            spic = np.maximum(spic, taper * np.exp(-((d / width) ** 2)))
        signal = params["contrast"] * np.maximum(core, 0.7 * spic)
        mask = (rho <= 1.0) | (spic > 0.35)
    elif kind == "calcifications":
        n_calc = int(params["n_calcifications"])
        dots = np.zeros(shape)
        sigma = max(0.15 / spacing, 0.6)
        min_gap = max(4.0 * sigma, 0.8 / spacing)  # distinct specks, not one blob
        # uniform in the cluster disk, at least ~2 dot widths apart where possible
        placed: list[tuple[float, float]] = []
        for _ in range(n_calc * 20):
            if len(placed) == n_calc:
                break
            rr, tt = r_px * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
            px, py = cx + rr * np.cos(tt), cy + rr * np.sin(tt)
            if all(np.hypot(px - qx, py - qy) > min_gap for qx, qy in placed):
                placed.append((px, py))
        n_calc = len(placed)
        for px, py in placed:
            bright = rng.uniform(0.7, 1.0)
            dots = np.maximum(dots, bright * np.exp(-((xx - px) ** 2 + (yy - py) ** 2) / (2 * sigma**2)))
        signal = params["contrast"] * dots
        mask = dots > 0.3
    elif kind == "none":
        mask = np.zeros(shape, dtype=bool)
        return signal, mask, Lesion("none")
    else:
        raise InputError(f"unknown lesion kind {kind!r}; expected one of {sorted(KIND_LABEL)}")
    lesion = Lesion(
        kind=kind,
        center_mm=(round(cx * spacing, 3), round(cy * spacing, 3)),
        radius_mm=round(float(params["radius_mm"]), 3),
        margin_blur_mm=round(float(blur_mm), 3),
        n_spicules=n_spic,
        n_calcifications=n_calc,
        contrast=round(float(params["contrast"]), 4),
    )
    return signal, mask, lesion


def _lesion_params(kind: str, rng: np.random.Generator) -> dict[str, float]:
    """Sample the lesion's own parameters (shared by the two views of one patient)."""
    params = {"angle": rng.uniform(0, np.pi), "aspect": rng.uniform(1.0, 1.35)}
    if kind == "circumscribed":
        params.update(radius_mm=rng.uniform(5.0, 10.0), contrast=rng.uniform(0.22, 0.32))
    elif kind == "indistinct":
        params.update(radius_mm=rng.uniform(5.0, 10.0), contrast=rng.uniform(0.22, 0.32))
    elif kind == "spiculated":
        params.update(
            radius_mm=rng.uniform(4.0, 7.0), contrast=rng.uniform(0.28, 0.38), n_spicules=int(rng.integers(10, 25))
        )
    elif kind == "calcifications":
        n = int(rng.integers(6, 21))  # a cluster: >= 5 calcifications within about 1 cm
        params.update(
            radius_mm=max(rng.uniform(2.5, 6.0), np.sqrt(n)), contrast=rng.uniform(0.45, 0.7), n_calcifications=n
        )
    else:
        params.update(radius_mm=0.0, contrast=0.0)
    return params


# --------------------------------------------------------------------------- one image
def render_case(
    label: str,
    view: str = "CC",
    size: int = 256,
    seed: int | np.random.Generator = 0,
    field_of_view_mm: float = 120.0,
    beta: float = 3.0,
    laterality: str = "L",
    kind: str | None = None,
    edge_falloff_mm: float = 12.0,
    noise_sigma: float = 0.01,
    _lesion_params_override: dict[str, float] | None = None,
) -> MammoCase:
    """Draw one synthetic mammogram with one lesion of the given class.

    Args:
        label: ``benign``, ``uncertain``, ``malignant`` or ``normal``.
        view: ``CC`` or ``MLO`` (MLO shows the pectoral muscle).
        size: image side in pixels.
        seed: an int seed or a NumPy Generator (same seed, same image).
        field_of_view_mm: physical side of the image; spacing = field_of_view_mm / size (mm).
        beta: power-law exponent of the background texture (real mammograms: about 3).
        laterality: ``L`` (chest wall on the left of the image) or ``R`` (mirrored).
        kind: force a lesion kind of that label (e.g. ``"calcifications"`` for malignant).
        edge_falloff_mm: width of the compressed-thickness fall-off at the skin.
        noise_sigma: standard deviation of the white quantum noise (intensity units).

    Returns:
        A :class:`MammoCase`; the image is float32 in about 0..1 (brighter = denser), spacing in mm.
    """
    from scipy.ndimage import gaussian_filter

    if label not in LABEL_KINDS:
        raise InputError(f"unknown phantom label {label!r}; expected one of {sorted(LABEL_KINDS)}")
    if view not in VIEWS:
        raise InputError(f"unknown view {view!r}; expected CC or MLO")
    if laterality not in ("L", "R"):
        raise InputError(f"laterality must be 'L' or 'R', got {laterality!r}")
    if size < 32:
        raise InputError(f"phantom size must be at least 32 px, got {size}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    kinds = LABEL_KINDS[label]
    if kind is None:
        kind = kinds[int(rng.integers(len(kinds)))]
    elif kind not in kinds:
        raise InputError(f"lesion kind {kind!r} is not drawn for label {label!r}")
    spacing = field_of_view_mm / size
    shape = (size, size)

    breast, pectoral = _breast_regions(shape, view, spacing, rng)
    thick, dist_mm = _thickness(breast, spacing, edge_falloff_mm)
    texture = power_law_noise(shape, beta, rng)
    density = 0.45 + 0.10 * texture
    muscle = 0.78 + 0.03 * power_law_noise(shape, beta, rng)
    tissue = np.where(pectoral, muscle, density)
    skin = 0.12 * np.exp(-((dist_mm / 0.8) ** 2)) * breast

    params = _lesion_params_override or _lesion_params(kind, rng)
    r_mm = params["radius_mm"] * (2.6 if kind == "spiculated" else 1.0)
    eligible = breast & ~pectoral & (dist_mm > r_mm + 4.0)
    eligible[:, : max(int((r_mm + 4.0) / spacing), 1)] = False  # keep clear of the chest wall
    if not eligible.any():
        eligible = breast & ~pectoral
    cand = np.flatnonzero(eligible)
    cy, cx = np.unravel_index(cand[int(rng.integers(cand.size))], shape)
    signal, mask, lesion = _draw_lesion(kind, shape, spacing, (float(cx), float(cy)), params, rng)

    image = thick * (tissue + signal) + skin
    image = gaussian_filter(image, 0.5) + rng.normal(0.0, noise_sigma, shape)
    image = np.clip(image, 0.0, None).astype(np.float32)
    mask = (mask & breast).astype(np.uint8)
    if laterality == "R":
        image, mask = image[:, ::-1].copy(), mask[:, ::-1].copy()
        if kind != "none":
            x_mm = (size - 1) * spacing - lesion.center_mm[0]
            lesion = Lesion(**{**lesion.__dict__, "center_mm": (round(x_mm, 3), lesion.center_mm[1])})
    meta = {
        "modality": "MG",
        "synthetic": True,
        "view": view,
        "laterality": laterality,
        "label": label,
        "units": "a.u. (relative density)",
        "description": f"procedural mammography phantom (synthetic), {kind}",
        "source_format": "phantom",
    }
    geo = {"spacing": (spacing, spacing, 1.0)}
    return MammoCase(
        image=Volume(image, meta=meta, **geo),
        mask=Volume(mask, meta={"synthetic": True, "label": label}, **geo),
        label=label,
        lesion=lesion,
        view=view,
        laterality=laterality,
    )


# --------------------------------------------------------------------------- data set
def _write_image(volume: Volume, path: Path, fmt: str, is_mask: bool) -> None:
    if fmt == "nrrd":
        from medanomaly.io import write

        write(volume, path)
        return
    from PIL import Image  # 16-bit PNG: no spacing in the file (the manifest notes it)

    a = volume.array[0]
    a = a.astype(np.uint16) if is_mask else np.clip(a * 40000.0, 0, 65535).astype(np.uint16)
    Image.fromarray(a).save(path)


def write_dataset(
    out_dir: str | Path,
    n_patients: int = 300,
    labels: Sequence[str] = ("benign", "uncertain", "malignant"),
    size: int = 128,
    seed: int = 0,
    two_view_fraction: float = 0.5,
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    fmt: str = "nrrd",
    field_of_view_mm: float = 120.0,
) -> Path:
    """Write a synthetic mammography cohort: images, lesion masks and ``manifest.csv``.

    Each patient has one lesion class and one or two views (CC, and MLO for ``two_view_fraction``
    of them) of one breast; both views show the same lesion (same size and kind). Patients are
    split into train/val/test *by patient* and stratified by class, so every split has every
    class and no patient is in two splits.

    Args:
        out_dir: folder to write (``images/``, ``masks/``, ``manifest.csv``, ``README.txt``).
        n_patients: number of patients (classes are balanced at patient level).
        labels: class labels to draw (any of benign, uncertain, malignant, normal).
        size: image side in pixels.
        seed: seed of the whole cohort.
        two_view_fraction: fraction of patients with both CC and MLO views.
        split_fractions: train, val, test fractions of patients per class.
        fmt: ``"nrrd"`` (float32, keeps spacing) or ``"png"`` (16-bit, intensity x 40000).
        field_of_view_mm: image side in mm.

    Returns:
        Path of ``manifest.csv`` (columns ``path,label,patient_id,split,view,mask_path``).
    """
    if fmt not in ("nrrd", "png"):
        raise InputError(f"format must be 'nrrd' or 'png', got {fmt!r}")
    unknown = [lb for lb in labels if lb not in LABEL_KINDS]
    if unknown:
        raise InputError(f"unknown phantom label(s) {unknown}; expected {sorted(LABEL_KINDS)}")
    if n_patients < 3 * len(labels):
        raise InputError(f"need at least {3 * len(labels)} patients for 3 splits x {len(labels)} classes")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    patient_label = np.array([labels[i % len(labels)] for i in range(n_patients)])
    rng.shuffle(patient_label)
    split = np.empty(n_patients, dtype=object)
    for lb in labels:  # stratified split at patient level
        members = rng.permutation(np.flatnonzero(patient_label == lb))
        n_train = int(round(split_fractions[0] * members.size))
        n_val = max(1, int(round(split_fractions[1] * members.size)))
        split[members[:n_train]] = "train"
        split[members[n_train : n_train + n_val]] = "val"
        split[members[n_train + n_val :]] = "test"
    ext = "nrrd" if fmt == "nrrd" else "png"
    rows = []
    for i in range(n_patients):
        pid = f"P{i + 1:04d}"
        label = str(patient_label[i])
        prng = np.random.default_rng([seed, i])
        kinds = LABEL_KINDS[label]
        kind = kinds[int(prng.integers(len(kinds)))]
        params = _lesion_params(kind, prng)
        side = "L" if prng.random() < 0.5 else "R"
        views = ("CC", "MLO") if prng.random() < two_view_fraction else ("CC",)
        for view in views:
            case = render_case(
                label, view, size, prng, field_of_view_mm, laterality=side, kind=kind,
                _lesion_params_override=params,
            )
            name = f"{pid}_{side}_{view}.{ext}"
            _write_image(case.image, out / "images" / name, fmt, False)
            _write_image(case.mask, out / "masks" / name, fmt, True)
            rows.append(
                {"path": f"images/{name}", "label": label, "patient_id": pid, "split": split[i],
                 "view": view, "mask_path": f"masks/{name}"}
            )
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "README.txt").write_text(
        "SYNTHETIC DATA: procedural mammography phantom (medanomaly.synth.mammo), not real patients.\n"
        f"phantom_version={PHANTOM_VERSION} seed={seed} n_patients={n_patients} size={size}px "
        f"field_of_view={field_of_view_mm}mm labels={list(labels)} format={fmt}\n"
        "benign = circumscribed mass; uncertain = indistinct mass; malignant = spiculated mass or "
        "calcification cluster.\n"
    )
    return manifest
