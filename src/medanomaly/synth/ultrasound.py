"""A procedural breast-ultrasound phantom (SYNTHETIC data): B-mode images with annotated lesions.

There is no breast-ultrasound cohort here (DATA.md); this module draws B-mode-like images of a
linear probe whose lesions are known exactly (class, mask, box). It is a *stand-in for testing
the pipeline*, not an acoustic simulation: every image says ``synthetic=True``, and every
number measured on it must be labelled synthetic.

How an image is made (depth runs down the image, y; lateral is x; lengths in mm):

1. **Echogenicity map** (mean backscatter power) of the breast layers, with wavy boundaries:
   skin (bright), subcutaneous fat (dark) crossed by bright Cooper's ligaments, the
   fibroglandular zone (bright, with dark fat lobules from a 1/f^3 texture), retromammary fat
   and the pectoralis muscle (striated).
2. **Lesions** change echogenicity and attenuation inside their mask (see the table).
3. **Speckle**: a complex Gaussian scatterer field weighted by the echogenicity and filtered by
   the point-spread function (axial 0.15 mm, lateral 0.3 mm): its envelope is **Rayleigh**
   distributed in homogeneous tissue (:func:`medanomaly.synth.texture.rayleigh_speckle`).
4. **Depth attenuation**: amplitude falls as exp(-integral of the attenuation down each beam
   line), compensated by a time-gain compensation that is slightly too weak (a residual fall-off
   with depth). A lesion that attenuates more than tissue leaves **posterior acoustic shadowing**
   below it; one that attenuates less (fluid) leaves **posterior enhancement**.
5. **Log compression** to a 50 dB dynamic range: the image is in 0..1.

=============== ========= ============================================================================
kind            class     appearance (BI-RADS US lexicon)
=============== ========= ============================================================================
cyst            benign    oval, parallel (wider than tall, W/H 1.3-2), circumscribed, anechoic,
                          posterior enhancement
fibroadenoma    benign    oval, parallel (W/H 1.4-2.2), circumscribed with 2-3 gentle macrolobulations,
                          homogeneous hypoechoic, mild enhancement or none
indistinct      uncertain round to oval (W/H 0.9-1.3), microlobulated indistinct margin, heterogeneous
                          hypoechoic, no posterior feature
complex_cyst    uncertain oval, anechoic with an echogenic mural nodule, posterior enhancement
irregular       malignant irregular, not parallel (**taller than wide**, H/W 1.1-1.6), angular /
                          spiculated margin, markedly hypoechoic, echogenic halo, posterior shadowing
=============== ========= ============================================================================

Example:
    >>> img = render_ultrasound(["malignant"], size=(128, 128), seed=2)
    >>> img.image.modality, img.image.meta["synthetic"], [les.label for les in img.lesions]
    ('US', True, ['malignant'])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medanomaly.data.lesions2d import CLASSES, LesionImage, LesionSet, lesion_from_mask
from medanomaly.errors import InputError
from medanomaly.synth.texture import power_law_noise, rayleigh_speckle
from medanomaly.types import Volume

__all__ = [
    "KIND_LABEL",
    "LABEL_KINDS",
    "PHANTOM_VERSION",
    "lesion_params",
    "make_us_cohort",
    "render_ultrasound",
]

#: Bumped whenever the drawing rules change, so cached cohorts can be told apart.
PHANTOM_VERSION = "1"
KIND_LABEL = {"cyst": "benign", "fibroadenoma": "benign", "indistinct": "uncertain", "complex_cyst": "uncertain",
              "irregular": "malignant"}
LABEL_KINDS = {"benign": ("cyst", "fibroadenoma"), "uncertain": ("indistinct", "complex_cyst"),
               "malignant": ("irregular",)}
#: Attenuation of tissue, amplitude nepers per mm of depth (round trip), and the TGC's estimate.
MU_TISSUE, MU_TGC = 0.20, 0.18
DYNAMIC_RANGE_DB = 50.0


# --------------------------------------------------------------------------- lesions
def lesion_params(kind: str, rng: np.random.Generator) -> dict[str, float]:
    """Sample one lesion's parameters: width/height (mm), echogenicity, attenuation, margin."""
    if kind not in KIND_LABEL:
        raise InputError(f"unknown ultrasound lesion kind {kind!r}; expected one of {sorted(KIND_LABEL)}")
    width = rng.uniform(6.0, 15.0)
    p: dict[str, float] = {"seed": int(rng.integers(2**31)), "tilt": rng.uniform(-0.15, 0.15)}
    if kind == "cyst":
        p.update(width_mm=width, aspect=rng.uniform(1.3, 2.0), echo=rng.uniform(0.0, 0.002), mu=0.005,
                 margin=0.02, lobes=0.0, spikes=0, heterogeneity=0.0)
    elif kind == "fibroadenoma":
        p.update(width_mm=width, aspect=rng.uniform(1.4, 2.2), echo=rng.uniform(0.08, 0.2),
                 mu=rng.uniform(0.1, 0.15), margin=0.04, lobes=rng.uniform(0.04, 0.09), spikes=0, heterogeneity=0.1)
    elif kind == "indistinct":
        p.update(width_mm=rng.uniform(6.0, 13.0), aspect=rng.uniform(0.9, 1.3), echo=rng.uniform(0.12, 0.25),
                 mu=MU_TISSUE, margin=0.22, lobes=rng.uniform(0.05, 0.1), spikes=0, heterogeneity=0.45)
    elif kind == "complex_cyst":
        p.update(width_mm=width, aspect=rng.uniform(1.2, 1.8), echo=rng.uniform(0.0, 0.003), mu=0.04,
                 margin=0.03, lobes=0.03, spikes=0, heterogeneity=0.0, nodule=rng.uniform(0.3, 0.5))
    else:  # irregular: taller than wide (aspect = width / height < 1), spiculated, shadowing
        p.update(width_mm=rng.uniform(6.0, 13.0), aspect=1.0 / rng.uniform(1.1, 1.6), echo=rng.uniform(0.03, 0.08),
                 mu=rng.uniform(0.35, 0.5), margin=0.05, lobes=rng.uniform(0.12, 0.2), spikes=int(rng.integers(5, 12)),
                 heterogeneity=0.35, halo=rng.uniform(0.6, 1.2))
    return p


def _radial_shape(theta: np.ndarray, p: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """Relative outline radius as a function of angle: lobulation harmonics plus angular spikes."""
    r = np.ones_like(theta)
    if p["lobes"] > 0:
        orders = (2, 3) if p["lobes"] < 0.1 and p["spikes"] == 0 and p["margin"] < 0.1 else (3, 5, 7, 9, 11)
        for m in orders:
            r += p["lobes"] * rng.uniform(0.5, 1.0) * np.cos(m * theta + rng.uniform(0, 2 * np.pi))
    for _ in range(int(p["spikes"])):
        t0, width, height = rng.uniform(0, 2 * np.pi), rng.uniform(0.06, 0.14), rng.uniform(0.25, 0.6)
        d = np.angle(np.exp(1j * (theta - t0)))
        r += height * np.clip(1.0 - np.abs(d) / width, 0.0, None)  # sharp (angular) protrusion
    return np.clip(r, 0.4, None)


def _draw(kind: str, p: dict[str, float], shape: tuple[int, int], spacing: tuple[float, float],
          center: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Lesion weight w (0..1, soft margin), mask, echogenicity inside, halo weight; (y, x) arrays."""
    rng = np.random.default_rng(int(p["seed"]))
    sx, sy = spacing
    a, b = p["width_mm"] / 2.0, p["width_mm"] / p["aspect"] / 2.0  # lateral, axial semi-axes (mm)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dx, dy = (xx - center[0]) * sx, (yy - center[1]) * sy
    c, s = np.cos(p["tilt"]), np.sin(p["tilt"])
    u, v = dx * c + dy * s, -dx * s + dy * c
    theta = np.arctan2(v / b, u / a)
    rho = np.hypot(u / a, v / b) / _radial_shape(theta, p, rng)
    margin = max(p["margin"], 0.5 * sx / min(a, b))
    weight = np.clip((1.0 + margin - rho) / (2 * margin), 0.0, 1.0)
    weight = weight * weight * (3 - 2 * weight)  # smoothstep
    inside = np.full(shape, p["echo"])
    if p["heterogeneity"] > 0:
        inside = inside * np.clip(1.0 + p["heterogeneity"] * power_law_noise(shape, 2.0, rng), 0.1, None)
    if kind == "complex_cyst":  # echogenic mural nodule on the posterior-lateral wall
        ang = rng.uniform(0.2, 1.2) * rng.choice([-1.0, 1.0]) + np.pi / 2
        nx, ny = 0.7 * a * np.cos(ang), 0.7 * b * np.sin(ang)
        nod = np.hypot(u - nx, v - ny) / (p["nodule"] * b)
        inside = np.where(nod < 1.0, 0.55, inside)
    halo = np.zeros(shape)
    if p.get("halo", 0.0) > 0:
        halo = p["halo"] * np.clip(1.0 - np.abs(rho - 1.12) / 0.12, 0.0, 1.0)
    return weight, rho <= 1.0, inside, halo


# --------------------------------------------------------------------------- tissue
def _boundary(width: int, mean_mm: float, wobble_mm: float, rng: np.random.Generator) -> np.ndarray:
    """A wavy depth (mm) per image column: smooth low-frequency 1D noise."""
    x = np.linspace(0.0, 1.0, width)
    depth = np.full(width, mean_mm)
    for m in (1, 2, 3):
        depth += wobble_mm / m * rng.uniform(-1, 1) * np.sin(np.pi * m * x + rng.uniform(0, 2 * np.pi))
    return depth


def _layers(shape: tuple[int, int], spacing: tuple[float, float], depth_mm: float,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Echogenicity (mean backscatter power) of the breast layers, and the glandular-zone mask."""
    from scipy.ndimage import gaussian_filter

    h, w = shape
    sx, sy = spacing
    z = (np.arange(h)[:, None] + 0.5) * sy * np.ones((1, w))
    skin = _boundary(w, rng.uniform(1.2, 2.0), 0.3, rng)
    fat = _boundary(w, rng.uniform(4.0, 9.0), 1.5, rng)
    gland = _boundary(w, rng.uniform(0.55, 0.7) * depth_mm, 2.5, rng)
    retro = gland + rng.uniform(1.5, 3.5)
    echo = np.full(shape, 0.55)  # muscle
    zone = (z >= fat) & (z < gland)
    lobules = power_law_noise(shape, 3.0, rng)
    echo = np.where(z < retro, 0.08, echo)  # retromammary fat
    echo = np.where(zone, np.where(lobules > rng.uniform(0.3, 0.9), 0.1, 0.9), echo)
    echo = np.where(z < fat, 0.08, echo)  # subcutaneous fat
    echo = np.where(z < skin, 1.3, echo)
    # Cooper's ligaments: thin bright oblique curves in the fat, rising to the skin
    lig = np.zeros(shape)
    for _ in range(int(rng.integers(2, 6))):
        x0, slope = rng.uniform(0, w), rng.uniform(-1.5, 1.5)
        line_x = x0 + slope * (z / sx - fat[None, :] / sy)
        lig = np.maximum(lig, np.exp(-(((np.arange(w)[None, :] - line_x) * sx / 0.25) ** 2)))
    echo = np.where((z >= skin) & (z < fat + 1.0), np.maximum(echo, 0.9 * lig), echo)
    # muscle striations: bright lines roughly parallel to the skin
    stri = np.sin(2 * np.pi * z / rng.uniform(1.2, 2.0) + 0.5 * np.sin(np.arange(w)[None, :] * sx / 7.0)) > 0.85
    echo = np.where((z >= retro) & stri, 0.95, echo)
    return gaussian_filter(echo, (0.6, 0.6)), zone


def _attenuation(mu: np.ndarray, sy: float, sx: float) -> np.ndarray:
    """Amplitude factor per pixel: exp(-cumulative attenuation down each beam line) times the
    TGC's exp(+MU_TGC * depth); the beam width blurs shadows laterally (~0.6 mm)."""
    from scipy.ndimage import gaussian_filter1d

    depth = (np.arange(mu.shape[0])[:, None] + 0.5) * sy
    cumulative = np.cumsum(mu, axis=0) * sy - 0.5 * mu * sy  # integral to the pixel centre
    cumulative = gaussian_filter1d(cumulative, 0.6 / sx, axis=1, mode="nearest")
    return np.exp(-cumulative + MU_TGC * depth)


# --------------------------------------------------------------------------- one image
def _candidate(shape: tuple[int, int], spacing: tuple[float, float], zone: np.ndarray, p: dict[str, float],
               rng: np.random.Generator, tries: int = 40) -> tuple[float, float]:
    """A lesion centre (x, y) px inside the image, in the glandular zone where one is found."""
    h, w = shape
    sx, sy = spacing
    half_w, half_h = 0.6 * p["width_mm"] / sx, 0.6 * p["width_mm"] / p["aspect"] / sy
    x = y = 0.0
    for _ in range(tries):
        x = rng.uniform(min(half_w, w / 2), max(w - half_w, w / 2))
        y = rng.uniform(min(max(half_h, 4.0 / sy), h / 2), max(h - half_h - 6.0 / sy, h / 2))
        if zone[int(min(y, h - 1)), int(min(x, w - 1))]:
            break
    return x, y


def _place_and_draw(kind: str, p: dict[str, float], shape: tuple[int, int], spacing: tuple[float, float],
                    zone: np.ndarray, occupied: np.ndarray,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw the lesion at a centre where its mask, grown by 1 mm, misses the lesions drawn before.

    Raises:
        InputError: no such place after 30 tries (too many or too large lesions for the field).
    """
    from scipy.ndimage import binary_dilation

    grow = max(int(round(1.0 / min(spacing))), 1)
    for _ in range(30):
        drawn = _draw(kind, p, shape, spacing, _candidate(shape, spacing, zone, p, rng))
        if not occupied.any() or not (binary_dilation(drawn[1], iterations=grow) & occupied).any():
            return drawn
    raise InputError(f"no room for another {kind} lesion without overlap; use fewer lesions or a larger field")


def _check(size: tuple[int, int], depth_mm: float, width_mm: float) -> None:
    if min(size) < 32:
        raise InputError(f"ultrasound phantom size must be at least 32 x 32 px, got {size}")
    if not (15.0 <= depth_mm <= 120.0) or not (15.0 <= width_mm <= 120.0):
        raise InputError(f"depth and width must be 15-120 mm, got {depth_mm}, {width_mm}")


def _kind_for(entry: str, rng: np.random.Generator) -> str:
    if entry in KIND_LABEL:
        return entry
    if entry in LABEL_KINDS:
        return LABEL_KINDS[entry][int(rng.integers(len(LABEL_KINDS[entry])))]
    raise InputError(f"unknown lesion {entry!r}; expected a class {sorted(LABEL_KINDS)} or a kind {sorted(KIND_LABEL)}")


def render_ultrasound(
    lesions: Sequence[str] = (),
    size: int | tuple[int, int] = (256, 256),
    seed: int | np.random.Generator = 0,
    depth_mm: float = 40.0,
    width_mm: float = 40.0,
    params: Sequence[dict[str, float]] | None = None,
    patient_id: str = "",
    key: str = "",
    view: str = "",
) -> LesionImage:
    """Draw one synthetic B-mode breast ultrasound with its lesions annotated.

    Args:
        lesions: one entry per lesion: a class (``benign``, ``uncertain``, ``malignant``) or a kind
            (``cyst``, ``fibroadenoma``, ``indistinct``, ``complex_cyst``, ``irregular``); empty = normal.
        size: (rows = depth, columns = lateral) pixels, or one int for a square image.
        seed: an int seed or a NumPy Generator (same seed, same image).
        depth_mm, width_mm: imaged depth and probe width; spacing = (width/columns, depth/rows) mm.
        params: per lesion, parameters from :func:`lesion_params` (to image one lesion twice).
        patient_id, key, view: stored on the returned image (``view``: e.g. ``radial``).

    Returns:
        A :class:`~medanomaly.data.lesions2d.LesionImage`: float32 image in 0..1 (log-compressed
        echo amplitude), modality ``US``, ``synthetic=True``; each lesion with kind ``mass`` and
        its phantom kind, size and attenuation in ``attributes``.
    """
    shape = (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    _check(shape, depth_mm, width_mm)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    kinds = [_kind_for(e, rng) for e in lesions]
    if params is not None and len(params) != len(kinds):
        raise InputError(f"{len(params)} parameter sets for {len(kinds)} lesions")
    spacing = (width_mm / shape[1], depth_mm / shape[0])
    echo, zone = _layers(shape, spacing, depth_mm, rng)
    mu = np.full(shape, MU_TISSUE)
    drawn = []
    occupied = np.zeros(shape, dtype=bool)
    for i, kind in enumerate(kinds):
        p = dict(params[i]) if params is not None else lesion_params(kind, rng)
        weight, mask, inside, halo = _place_and_draw(kind, p, shape, spacing, zone, occupied, rng)
        echo = echo * (1 - weight) + inside * weight + halo * (1 - weight)
        mu = mu * (1 - weight) + p["mu"] * weight
        occupied |= mask
        drawn.append((kind, p, mask))
    envelope = rayleigh_speckle(echo, (0.15 / spacing[1], 0.3 / spacing[0]), rng) * _attenuation(mu, spacing[1],
                                                                                                   spacing[0])
    ref = 4.0 * float(np.percentile(envelope, 99.0)) + 1e-12  # display gain: tissue at mid-grey
    db = 20.0 * np.log10(np.maximum(envelope / ref, 1e-6))
    image = np.clip((db + DYNAMIC_RANGE_DB) / DYNAMIC_RANGE_DB, 0.0, 1.0).astype(np.float32)
    meta = {"modality": "US", "synthetic": True, "units": f"a.u. (log-compressed echo, {DYNAMIC_RANGE_DB:g} dB)",
            "source_format": "phantom", "view": view,
            "description": "procedural breast ultrasound phantom (synthetic), " + (", ".join(kinds) or "no lesion")}
    vol = Volume(image[None], spacing=(spacing[0], spacing[1], 1.0), meta=meta)
    annotated = []
    for kind, p, mask in drawn:
        if mask.any():
            attrs = {"phantom_kind": kind, "width_mm": round(p["width_mm"], 2),
                     "height_mm": round(p["width_mm"] / p["aspect"], 2), "attenuation": round(p["mu"], 4)}
            annotated.append(lesion_from_mask(vol, mask, KIND_LABEL[kind], "mass", attrs))
    return LesionImage(vol, tuple(annotated), patient_id, key, view=view,
                       attributes={"depth_mm": depth_mm, "width_mm": width_mm})


# --------------------------------------------------------------------------- cohorts
def make_us_cohort(
    n_patients: int = 60,
    size: int | tuple[int, int] = (256, 256),
    seed: int = 0,
    two_plane_fraction: float = 0.5,
    normal_fraction: float = 0.2,
    class_names: Sequence[str] = CLASSES,
    val: float = 0.2,
    test: float = 0.2,
    depth_mm: float = 40.0,
    width_mm: float = 40.0,
) -> LesionSet:
    """A SYNTHETIC breast-ultrasound cohort: one lesion (or none) per patient, one or two planes.

    Lesion classes are balanced over the lesion patients; the second plane (``antiradial``) of a
    patient images the same lesion kind and size with another outline and position. Splits are by
    patient, stratified by class.

    Returns:
        A :class:`~medanomaly.data.lesions2d.LesionSet` with ``synthetic=True``.
    """
    if n_patients < 3:
        raise InputError(f"need at least 3 patients, got {n_patients}")
    unknown = [c for c in class_names if c not in LABEL_KINDS]
    if unknown:
        raise InputError(f"unknown lesion class(es) {unknown}; expected some of {list(CLASSES)}")
    rng = np.random.default_rng(seed)
    pool = [class_names[i % len(class_names)] for i in range(n_patients)]
    rng.shuffle(pool)
    items = []
    for i in range(n_patients):
        prng = np.random.default_rng([seed, i, 7])
        normal = prng.random() < normal_fraction
        kind = None if normal else _kind_for(pool[i], prng)
        base = None if kind is None else lesion_params(kind, prng)
        pid = f"U{i + 1:04d}"
        planes = ("radial", "antiradial") if prng.random() < two_plane_fraction else ("radial",)
        for j, plane in enumerate(planes):
            params = None
            if base is not None:
                params = [{**base, "seed": int(base["seed"]) + j, "tilt": prng.uniform(-0.15, 0.15)}]
            items.append(render_ultrasound([kind] if kind else [], size, prng, depth_mm, width_mm, params,
                                           patient_id=pid, key=f"{pid}_{plane}", view=plane))
    cohort = LesionSet(tuple(items), tuple(class_names), "us_phantom", synthetic=True)
    return cohort.with_patient_splits(val=val, test=test, seed=seed)
