"""Lesions of the procedural mammography phantom (SYNTHETIC): masses and calcification clusters.

Each lesion *kind* has a class (BI-RADS-like descriptors decide it) and a finding type:

======================== ============================================================ ========= =====================
kind                     appearance                                                   class     finding type
======================== ============================================================ ========= =====================
circumscribed            round/oval mass, sharp margin (edge blur 0.2 mm)             benign    mass
indistinct               oval mass, lobulated ill-defined margin (blur ~30% R)        uncertain mass
spiculated               small dense core with 10-24 tapering radiating spicules      malignant mass
coarse_calcifications    2-6 large (0.8-2 mm) round dense calcifications, scattered   benign    calcification_cluster
amorphous_calcifications 8-20 tiny faint round specks, grouped within 2.5-5 mm        uncertain calcification_cluster
calcifications           6-20 fine pleomorphic specks (some elongated) along 1-3      malignant calcification_cluster
                         branching duct lines (linear / segmental distribution)
======================== ============================================================ ========= =====================

:func:`draw_lesion` draws one lesion as an additive density signal and its mask (the mass
outline, or the calcification specks themselves), within a window around its centre.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> p = lesion_params("circumscribed", rng)
    >>> signal, mask, rec = draw_lesion("circumscribed", (96, 96), 0.5, (48.0, 48.0), p, rng)
    >>> rec.kind, bool(mask[48, 48]), finding_type(rec.kind)
    ('circumscribed', True, 'mass')
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medanomaly.errors import InputError

__all__ = [
    "KIND_LABEL",
    "LABEL_KINDS",
    "Lesion",
    "draw_lesion",
    "finding_type",
    "lesion_params",
    "lesion_reach_mm",
]

#: Lesion kind -> class label.
KIND_LABEL = {
    "circumscribed": "benign",
    "coarse_calcifications": "benign",
    "indistinct": "uncertain",
    "amorphous_calcifications": "uncertain",
    "spiculated": "malignant",
    "calcifications": "malignant",
    "none": "normal",
}
#: Class label -> the lesion kinds drawn for it (the mass kind first).
LABEL_KINDS = {
    "benign": ("circumscribed", "coarse_calcifications"),
    "uncertain": ("indistinct", "amorphous_calcifications"),
    "malignant": ("spiculated", "calcifications"),
    "normal": ("none",),
}
_CALCS = ("coarse_calcifications", "amorphous_calcifications", "calcifications")


def finding_type(kind: str) -> str:
    """``mass`` or ``calcification_cluster`` (``none`` for no lesion)."""
    return "none" if kind == "none" else ("calcification_cluster" if kind in _CALCS else "mass")


@dataclass(frozen=True)
class Lesion:
    """What was drawn (the ground truth of one lesion).

    Attributes:
        kind: one of :data:`KIND_LABEL` (``none`` for a normal image).
        center_mm: lesion centre (x, y) in mm from the image corner.
        radius_mm: mass radius (mean semi-axis) or calcification-cluster radius, mm.
        margin_blur_mm: Gaussian margin blur, mm (0 for calcifications).
        n_spicules: number of spicules (spiculated only).
        n_calcifications: number of calcifications (calcification kinds only).
        contrast: peak added intensity (fat is ~0.25, dense tissue ~0.6).
    """

    kind: str
    center_mm: tuple[float, float] = (float("nan"), float("nan"))
    radius_mm: float = 0.0
    margin_blur_mm: float = 0.0
    n_spicules: int = 0
    n_calcifications: int = 0
    contrast: float = 0.0


def lesion_params(kind: str, rng: np.random.Generator) -> dict[str, float]:
    """Sample a lesion's own parameters (shared by the two views of one patient)."""
    if kind not in KIND_LABEL:
        raise InputError(f"unknown lesion kind {kind!r}; expected one of {sorted(KIND_LABEL)}")
    params = {"angle": rng.uniform(0, np.pi), "aspect": rng.uniform(1.0, 1.35), "seed": int(rng.integers(2**31))}
    if kind in ("circumscribed", "indistinct"):
        params.update(radius_mm=rng.uniform(5.0, 10.0), contrast=rng.uniform(0.22, 0.32))
    elif kind == "spiculated":
        params.update(radius_mm=rng.uniform(4.0, 7.0), contrast=rng.uniform(0.28, 0.38),
                      n_spicules=int(rng.integers(10, 25)))
    elif kind == "calcifications":  # a cluster: >= 5 calcifications within about 1 cm
        n = int(rng.integers(6, 21))
        params.update(radius_mm=max(rng.uniform(2.5, 6.0), np.sqrt(n)), contrast=rng.uniform(0.45, 0.7),
                      n_calcifications=n)
    elif kind == "amorphous_calcifications":
        n = int(rng.integers(8, 21))
        params.update(radius_mm=max(rng.uniform(2.5, 5.0), 0.9 * np.sqrt(n)), contrast=rng.uniform(0.22, 0.34),
                      n_calcifications=n)
    elif kind == "coarse_calcifications":
        params.update(radius_mm=rng.uniform(4.0, 9.0), contrast=rng.uniform(0.5, 0.75),
                      n_calcifications=int(rng.integers(2, 7)))
    else:
        params.update(radius_mm=0.0, contrast=0.0)
    return params


def lesion_reach_mm(kind: str, params: dict[str, float]) -> float:
    """How far the lesion's signal reaches from its centre, mm (spicules, margin blur)."""
    r = float(params.get("radius_mm", 0.0))
    if kind == "spiculated":
        return 2.7 * r
    if kind in ("circumscribed", "indistinct"):
        return 1.45 * r * params.get("aspect", 1.0)
    return r + 2.0


def _ellipse_rho(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, ra: float, rb: float, ang: float) -> np.ndarray:
    c, s = np.cos(ang), np.sin(ang)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    return np.hypot(u / ra, v / rb)


def _mass_profile(rho: np.ndarray) -> np.ndarray:
    """Projected density of a compact mass: steep rise at the margin, flat-ish top."""
    return np.clip(2.0 * np.sqrt(np.clip(1.0 - rho**2, 0.0, None)), 0.0, 1.0)


def _mass(kind: str, xx: np.ndarray, yy: np.ndarray, c: tuple[float, float], spacing: float,
          p: dict[str, float], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Circumscribed, indistinct or spiculated mass: (signal, mask, margin blur mm, spicules)."""
    from scipy.ndimage import gaussian_filter

    cx, cy = c
    r_px = p["radius_mm"] / spacing
    if kind == "spiculated":
        rho = _ellipse_rho(xx, yy, cx, cy, r_px * 0.6, r_px * 0.6, 0.0)
        blur_mm = 0.1 * p["radius_mm"]
        core = gaussian_filter(_mass_profile(rho), max(blur_mm / spacing, 0.3))
        spic = np.zeros(xx.shape)
        n_spic = int(p["n_spicules"])
        for t0 in rng.uniform(0, 2 * np.pi, n_spic):
            length = r_px * rng.uniform(1.4, 2.6)
            width = max(rng.uniform(0.4, 0.8) / spacing, 0.5)
            dx, dy = np.cos(t0), np.sin(t0)
            t = (xx - cx) * dx + (yy - cy) * dy
            d = np.abs(-(xx - cx) * dy + (yy - cy) * dx)
            taper = np.clip(1.0 - t / length, 0.0, 1.0) * (t > 0)
            spic = np.maximum(spic, taper * np.exp(-((d / width) ** 2)))
        return p["contrast"] * np.maximum(core, 0.6 * spic), (rho <= 1.0) | (spic > 0.35), blur_mm, n_spic
    ra, rb = r_px * p["aspect"], r_px / p["aspect"]
    rho = _ellipse_rho(xx, yy, cx, cy, ra, rb, p["angle"])
    if kind == "indistinct":  # lobulated, ill-defined border
        theta = np.arctan2(yy - cy, xx - cx)
        lobes = sum(0.08 * np.cos(m * theta + rng.uniform(0, 2 * np.pi)) for m in (3, 5, 7))
        rho = rho * (1.0 + lobes)
    blur_mm = 0.2 if kind == "circumscribed" else 0.3 * p["radius_mm"]
    signal = p["contrast"] * gaussian_filter(_mass_profile(rho), max(blur_mm / spacing, 0.3))
    return signal, rho <= 1.0, blur_mm, 0


def _calc_positions(kind: str, c: tuple[float, float], r_px: float, n: int, min_gap: float,
                    rng: np.random.Generator) -> list[tuple[float, float]]:
    """Speck centres: uniform in the cluster disk, or along branching duct lines (malignant)."""
    cx, cy = c
    placed: list[tuple[float, float]] = []
    if kind == "calcifications":  # linear / branching: 1-3 lines through the cluster
        lines = [(rng.uniform(0, np.pi), rng.uniform(-0.3, 0.3) * r_px) for _ in range(int(rng.integers(2, 4)))]
    for _ in range(n * 30):
        if len(placed) == n:
            break
        if kind == "calcifications":
            ang, off = lines[int(rng.integers(len(lines)))]
            t = rng.uniform(-r_px, r_px)
            px = cx + t * np.cos(ang) - off * np.sin(ang) + rng.normal(0, 0.12 * r_px)
            py = cy + t * np.sin(ang) + off * np.cos(ang) + rng.normal(0, 0.12 * r_px)
        else:
            rr, tt = r_px * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
            px, py = cx + rr * np.cos(tt), cy + rr * np.sin(tt)
        if all(np.hypot(px - qx, py - qy) > min_gap for qx, qy in placed):
            placed.append((px, py))
    return placed


def _calcs(kind: str, xx: np.ndarray, yy: np.ndarray, c: tuple[float, float], spacing: float,
           p: dict[str, float], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Calcification cluster: (signal, mask of the specks, number drawn)."""
    n = int(p["n_calcifications"])
    r_px = p["radius_mm"] / spacing
    if kind == "coarse_calcifications":
        size_mm = (0.25, 0.55)  # sigma: round calcifications of 0.9-2 mm diameter
        min_gap = max(2.5 / spacing, 4.0)
    elif kind == "amorphous_calcifications":
        size_mm = (0.1, 0.15)
        min_gap = max(4.0 * max(0.15 / spacing, 0.6), 0.7 / spacing)
    else:
        size_mm = (0.12, 0.2)
        min_gap = max(6.0 * max(0.15 / spacing, 0.6), 1.2 / spacing)
    placed = _calc_positions(kind, c, r_px, n, min_gap, rng)
    dots = np.zeros(xx.shape)
    for px, py in placed:
        sigma = max(rng.uniform(*size_mm) / spacing, 0.6)
        if kind == "calcifications":  # pleomorphic: some specks elongated, random orientation
            elong, ang = rng.uniform(1.0, 1.8), rng.uniform(0, np.pi)
        else:
            elong, ang = 1.0, 0.0
        rho = _ellipse_rho(xx, yy, px, py, sigma * elong, sigma, ang)
        bright = rng.uniform(0.7, 1.0)
        profile = np.exp(-(rho**2) / 2) if kind != "coarse_calcifications" else np.clip(1.6 * (1.0 - rho**2 / 4), 0, 1)
        dots = np.maximum(dots, bright * profile)
    return p["contrast"] * dots, dots > 0.3, len(placed)


def draw_lesion(
    kind: str,
    shape: tuple[int, int],
    spacing: float,
    center_px: tuple[float, float],
    params: dict[str, float],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, Lesion]:
    """Additive lesion signal (y, x), its mask (bool, y, x) and the record of what was drawn.

    Args:
        kind: one of :data:`KIND_LABEL`.
        shape: image shape (y, x).
        spacing: pixel size, mm.
        center_px: lesion centre (x, y), pixels.
        params: from :func:`lesion_params`.
        rng: random generator (spicule and speck placement) when ``params`` has no ``seed``; with
            one, the lesion's shape comes from it, so two views of a patient show the same lesion.
    """
    signal = np.zeros(shape)
    mask = np.zeros(shape, dtype=bool)
    if kind == "none":
        return signal, mask, Lesion("none")
    if kind not in KIND_LABEL:
        raise InputError(f"unknown lesion kind {kind!r}; expected one of {sorted(KIND_LABEL)}")
    cx, cy = center_px
    reach = int(np.ceil(lesion_reach_mm(kind, params) / spacing)) + 4
    x0, x1 = max(int(cx) - reach, 0), min(int(cx) + reach + 1, shape[1])
    y0, y1 = max(int(cy) - reach, 0), min(int(cy) + reach + 1, shape[0])
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    if "seed" in params:
        rng = np.random.default_rng(int(params["seed"]))
    n_spic = n_calc = 0
    blur_mm = 0.0
    if kind in _CALCS:
        sig, m, n_calc = _calcs(kind, xx, yy, (cx, cy), spacing, params, rng)
    else:
        sig, m, blur_mm, n_spic = _mass(kind, xx, yy, (cx, cy), spacing, params, rng)
    signal[y0:y1, x0:x1] = sig
    mask[y0:y1, x0:x1] = m
    lesion = Lesion(
        kind=kind,
        center_mm=(round(float(cx) * spacing, 3), round(float(cy) * spacing, 3)),
        radius_mm=round(float(params["radius_mm"]), 3),
        margin_blur_mm=round(float(blur_mm), 3),
        n_spicules=n_spic,
        n_calcifications=n_calc,
        contrast=round(float(params["contrast"]), 4),
    )
    return signal, mask, lesion
