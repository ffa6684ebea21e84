"""A procedural mammography phantom (SYNTHETIC data) for the breast case studies.

No mammography cohort can be used here (DATA.md), so this module draws 2D mammogram-like images
whose lesions are known exactly: their class, their mask and their box. It is a *stand-in for
testing the pipeline*, not a model of breast imaging physics; every image says
``synthetic=True`` in its metadata, and every number measured on it must be labelled synthetic.

What an image contains (all lengths in mm; ``spacing = field_of_view_mm / size``):

* **Breast outline**: a half-ellipse against the chest wall (left edge; mirrored for right
  breasts) with an irregular border. ``CC``: centred; ``MLO``: taller, lower, reaching the
  top edge (axilla), with the **pectoral muscle** as a bright, textured region with a slightly
  convex or concave edge in the upper chest-wall corner.
* **Breast density** (BI-RADS a-d: fatty, scattered, heterogeneous, extremely dense): the
  fibroglandular tissue is a soft threshold of an **anatomical power-law texture** (power
  spectrum ~ 1/f^beta, beta = 3 by default, the value measured on real mammograms: Burgess et
  al. 2001) on a smooth envelope that keeps it away from the skin, so that the class's
  fraction of the breast (a: 3-20%, b: 20-45%, c: 45-70%, d: 70-90%) is dense; fat and dense
  tissue have different attenuation. :func:`spectrum_slope` measures the texture back (about
  -beta). Faint curvilinear strands (ducts, Cooper's ligaments) converge on the nipple.
* **Compressed-thickness fall-off** near the skin and a thin brighter **skin line**.
* **Lesions** (:mod:`medanomaly.synth.mammo_lesions`): masses (circumscribed = benign,
  indistinct = uncertain, spiculated = malignant) and calcification clusters (coarse = benign,
  amorphous = uncertain, fine pleomorphic in a linear/branching distribution = malignant), each
  with its mask and box (:class:`~medanomaly.data.lesions2d.Lesion2D`).
* Detector blur (Gaussian, 0.5 px) and white quantum noise.

Two entry points: :func:`render_case` (one lesion of a given class: the classification API) and
:func:`render_mammogram` (any number of lesions, a :class:`~medanomaly.data.lesions2d.LesionImage`
for detection). :func:`make_lesion_cohort` draws patients with one or two views of one breast.

What it is **not**: no X-ray spectrum, scatter, vessels or nipple; calcifications smaller than
a pixel are drawn at about one pixel; label noise is zero. A model that does well here has
learned these drawing rules, not breast cancer.

Example:
    >>> case = render_case("malignant", view="MLO", size=128, seed=3)
    >>> case.image.modality, case.image.meta["synthetic"], case.label
    ('MG', True, 'malignant')
    >>> case.image.shape == case.mask.shape == (1, 128, 128)
    True
    >>> [les.label for les in case.lesions]
    ['malignant']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from medanomaly.data.lesions2d import CLASSES, Lesion2D, LesionImage, LesionSet, lesion_from_mask
from medanomaly.errors import InputError
from medanomaly.synth.mammo_lesions import (
    KIND_LABEL,
    LABEL_KINDS,
    Lesion,
    draw_lesion,
    finding_type,
    lesion_params,
    lesion_reach_mm,
)
from medanomaly.synth.texture import power_law_noise, radial_power_spectrum, spectrum_slope
from medanomaly.types import Volume

__all__ = [
    "DENSITIES",
    "KIND_LABEL",
    "PHANTOM_VERSION",
    "LABEL_KINDS",
    "Lesion",
    "MammoCase",
    "make_lesion_cohort",
    "power_law_noise",
    "radial_power_spectrum",
    "render_case",
    "render_mammogram",
    "spectrum_slope",
]

#: Bumped whenever the drawing rules change, so cached cohorts can be told apart.
PHANTOM_VERSION = "2"
VIEWS = ("CC", "MLO")
#: BI-RADS density class -> range of the dense (fibroglandular) fraction of the breast area.
DENSITIES = {"a": (0.03, 0.20), "b": (0.20, 0.45), "c": (0.45, 0.70), "d": (0.70, 0.90)}
#: Relative attenuation (image intensity at full thickness) of fat, dense tissue and muscle.
FAT, GLAND, MUSCLE = 0.25, 0.62, 0.80


@dataclass(frozen=True, eq=False)
class MammoCase:
    """One synthetic mammogram with one lesion (the classification API).

    Attributes:
        image: the mammogram (float32, about 0..1, brighter = denser; spacing in mm).
        mask: lesion mask (uint8, same grid).
        label: the lesion's class (or ``normal``).
        lesion: what was drawn.
        view, laterality: ``CC`` / ``MLO``, ``L`` / ``R``.
        lesions: the lesion with its box and mask (empty for ``normal``).
        density: BI-RADS density class ``a``-``d``.
    """

    image: Volume
    mask: Volume
    label: str
    lesion: Lesion
    view: str
    laterality: str
    lesions: tuple[Lesion2D, ...] = ()
    density: str = ""

    def to_lesion_image(self, patient_id: str = "", key: str = "") -> LesionImage:
        """This case as a :class:`~medanomaly.data.lesions2d.LesionImage`."""
        return LesionImage(self.image, self.lesions, patient_id, key, view=self.view, laterality=self.laterality,
                           attributes={"density": self.density})


# --------------------------------------------------------------------------- anatomy
def _breast_regions(shape: tuple[int, int], view: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    """Breast mask, pectoral-muscle mask and the outline's ellipse (chest wall at x = 0)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    if view == "CC":
        cy, a, b = h * rng.uniform(0.46, 0.54), w * rng.uniform(0.70, 0.84), h * rng.uniform(0.38, 0.45)
    else:  # MLO: taller, lower, reaching the axilla at the top
        cy, a, b = h * rng.uniform(0.55, 0.62), w * rng.uniform(0.68, 0.80), h * rng.uniform(0.50, 0.58)
    theta = np.arctan2((yy - cy) / b, xx / a)
    # irregular border: a smooth random function of the angle (a few low harmonics)
    wobble = sum(rng.normal(0, 0.02) * np.cos(m * theta + rng.uniform(0, 2 * np.pi)) for m in (2, 3, 5))
    breast = np.hypot(xx / a, (yy - cy) / b) <= 1.0 + wobble
    pectoral = np.zeros(shape, dtype=bool)
    if view == "MLO":
        top, left, g = w * rng.uniform(0.22, 0.34), h * rng.uniform(0.45, 0.62), rng.uniform(0.8, 1.25)
        pectoral = (xx / top) ** g + (yy / left) ** g < 1.0  # g > 1 convex edge, g < 1 concave
        breast |= pectoral
    return breast, pectoral, {"cy": cy, "a": a, "b": b}


def _thickness(breast: np.ndarray, spacing: float, falloff_mm: float, open_top: bool) -> tuple[np.ndarray, np.ndarray]:
    """Relative compressed thickness (0..1) and the distance to the skin line in mm.

    The chest wall (left edge) is never skin; with ``open_top`` (MLO) the top edge is not
    either: the breast continues into the axilla there.
    """
    from scipy.ndimage import distance_transform_edt

    padded = np.pad(breast, ((1, 0), (0, 0)), constant_values=open_top)
    padded = np.pad(padded, ((0, 1), (0, 0)), constant_values=False)
    padded = np.pad(padded, ((0, 0), (1, 0)), constant_values=True)
    dist = distance_transform_edt(padded)[1:-1, 1:] * spacing
    d = np.clip(dist / falloff_mm, 0.0, 1.0)
    return np.sqrt(1.0 - (1.0 - d) ** 2) * breast, dist


def _glandular(breast: np.ndarray, dist_mm: np.ndarray, density: str, beta: float,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """Fibroglandular fraction map (0..1) for a density class, the 1/f^beta texture it was cut
    from (unit std), and the map's breast mean (the dense fraction).

    A soft threshold of a 1/f^beta texture on an envelope that rises over the first 20 mm from
    the skin; the threshold is found (bisection) so that the breast's mean dense fraction is the
    class's target.
    """
    lo, hi = DENSITIES[density]
    target = rng.uniform(lo, hi)
    texture = power_law_noise(breast.shape, beta, rng)
    z = texture + 1.2 * np.clip(dist_mm / 20.0, 0.0, 1.0)
    inside = z[breast]
    if not inside.size:
        return np.zeros(breast.shape), texture, 0.0
    t_lo, t_hi = float(inside.min()) - 8.0, float(inside.max()) + 8.0
    for _ in range(40):  # mean(sigmoid(k (z - t))) decreases with t
        t = (t_lo + t_hi) / 2
        if np.mean(1.0 / (1.0 + np.exp(-1.6 * (inside - t)))) > target:
            t_lo = t
        else:
            t_hi = t
    gland = 1.0 / (1.0 + np.exp(-1.6 * (z - t)))
    return gland, texture, float(gland[breast].mean())


def _strands(shape: tuple[int, int], geo: dict, spacing: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Faint curvilinear strands (ducts, Cooper's ligaments) from the nipple toward the chest
    wall: quadratic Bezier curves rasterised as points, then blurred to ~0.3 mm width."""
    from scipy.ndimage import gaussian_filter

    h, w = shape
    acc = np.zeros(shape)
    nipple = np.array([geo["a"] * 0.97, geo["cy"]])
    t = np.linspace(0.0, 1.0, int(2 * max(h, w)))[:, None]
    for _ in range(n):
        end = np.array([rng.uniform(0.0, 0.5) * geo["a"], geo["cy"] + rng.uniform(-0.9, 0.9) * geo["b"]])
        mid = (nipple + end) / 2 + rng.normal(0, 0.08, 2) * np.array([geo["a"], geo["b"]])
        start = nipple + rng.uniform(0.1, 0.5) * (end - nipple)
        pts = (1 - t) ** 2 * start + 2 * (1 - t) * t * mid + t**2 * end
        xi, yi = np.rint(pts[:, 0]).astype(int), np.rint(pts[:, 1]).astype(int)
        ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        acc[yi[ok], xi[ok]] = np.maximum(acc[yi[ok], xi[ok]], rng.uniform(0.5, 1.0))
    blurred = gaussian_filter(acc, max(0.3 / spacing, 0.5))
    return blurred / (blurred.max() + 1e-12)


def _place(kind: str, params: dict[str, float], geo: dict, eligible: np.ndarray, taken: list[tuple[float, float, float]],
           spacing: float, rng: np.random.Generator) -> tuple[float, float] | None:
    """Lesion centre (x, y) px from its relative position (u: depth from the chest wall, v: across),
    clear of the skin, the muscle and other lesions; resampled when it does not fit."""
    reach = lesion_reach_mm(kind, params) / spacing
    h, w = eligible.shape
    for attempt in range(60):
        u, v = (params["u"], params["v"]) if attempt == 0 and "u" in params else (rng.uniform(0.15, 0.85),
                                                                                   rng.uniform(-0.8, 0.8))
        x = u * geo["a"]
        y = geo["cy"] + v * geo["b"] * np.sqrt(max(1.0 - u**2, 0.0))
        xi, yi = int(round(x)), int(round(y))
        if not (0 <= xi < w and 0 <= yi < h) or not eligible[yi, xi] or x < reach + 2:
            continue
        if all(np.hypot(x - tx, y - ty) > reach + tr for tx, ty, tr in taken):
            return x, y
    return None


# --------------------------------------------------------------------------- one image
def _check(view: str, laterality: str, size: int, density: str | None) -> None:
    if view not in VIEWS:
        raise InputError(f"unknown view {view!r}; expected CC or MLO")
    if laterality not in ("L", "R"):
        raise InputError(f"laterality must be 'L' or 'R', got {laterality!r}")
    if size < 32:
        raise InputError(f"phantom size must be at least 32 px, got {size}")
    if density is not None and density not in DENSITIES:
        raise InputError(f"unknown breast density {density!r}; expected one of {sorted(DENSITIES)}")


def _render(specs: list[tuple[str, dict[str, float]]], view: str, size: int, rng: np.random.Generator,
            fov_mm: float, beta: float, laterality: str, density: str | None, falloff_mm: float,
            noise_sigma: float) -> tuple[Volume, list[tuple[str, np.ndarray, Lesion]], str, float]:
    """Draw the image and its lesions: (image, [(kind, mask, record)], density class, dense fraction)."""
    from scipy.ndimage import gaussian_filter

    spacing = fov_mm / size
    shape = (size, size)
    density = density or "abcd"[int(rng.integers(4))]
    breast, pectoral, geo = _breast_regions(shape, view, rng)
    thick, dist_mm = _thickness(breast, spacing, falloff_mm, open_top=view == "MLO")
    gland, texture, fraction = _glandular(breast & ~pectoral, dist_mm, density, beta, rng)
    # fat is textured too (lobules, trabeculae): a linear share of the same 1/f^beta field
    tissue = FAT + (GLAND - FAT) * gland + 0.04 * texture + 0.03 * _strands(shape, geo, spacing, int(rng.integers(12, 30)), rng)
    muscle = MUSCLE + 0.03 * power_law_noise(shape, beta, rng)
    tissue = np.where(pectoral, muscle, tissue)
    skin = 0.12 * np.exp(-((dist_mm / rng.uniform(0.7, 1.2)) ** 2)) * breast

    signal = np.zeros(shape)
    drawn: list[tuple[str, np.ndarray, Lesion]] = []
    taken: list[tuple[float, float, float]] = []
    for kind, params in specs:
        if kind == "none":
            continue
        reach_mm = lesion_reach_mm(kind, params)
        eligible = breast & ~pectoral & (dist_mm > reach_mm + 4.0)
        center = _place(kind, params, geo, eligible, taken, spacing, rng)
        if center is None:  # no room left (tiny image): fall back to any breast pixel
            cand = np.flatnonzero(breast & ~pectoral)
            cy, cx = np.unravel_index(cand[int(rng.integers(cand.size))], shape)
            center = (float(cx), float(cy))
        sig, mask, record = draw_lesion(kind, shape, spacing, center, params, rng)
        mask &= breast
        if not mask.any():
            continue
        signal = np.maximum(signal, sig) if kind.endswith("calcifications") else signal + sig
        taken.append((center[0], center[1], reach_mm / spacing))
        drawn.append((kind, mask, record))

    image = thick * (tissue + signal) + skin
    image = gaussian_filter(image, 0.5) + rng.normal(0.0, noise_sigma, shape)
    image = np.clip(image, 0.0, None).astype(np.float32)
    if laterality == "R":
        image = image[:, ::-1].copy()
        drawn = [(k, m[:, ::-1].copy(), replace(r, center_mm=(round((size - 1) * spacing - r.center_mm[0], 3),
                                                              r.center_mm[1]))) for k, m, r in drawn]
    kinds = ", ".join(k for k, _, _ in drawn) or "no lesion"
    meta = {"modality": "MG", "synthetic": True, "view": view, "laterality": laterality,
            "units": "a.u. (relative density)", "source_format": "phantom",
            "description": f"procedural mammography phantom (synthetic), density {density}, {kinds}"}
    return Volume(image, spacing=(spacing, spacing, 1.0), meta=meta), drawn, density, fraction


def _annotate(image: Volume, drawn: list[tuple[str, np.ndarray, Lesion]]) -> tuple[Lesion2D, ...]:
    """Lesion2D per drawn lesion: class, finding type, box (calcification clusters padded by 1 mm)."""
    out = []
    spacing = image.spacing[0]
    for kind, mask, rec in drawn:
        pad = int(round(1.0 / spacing)) if finding_type(kind) == "calcification_cluster" else 0
        attrs = {"phantom_kind": kind, "radius_mm": rec.radius_mm, "contrast": rec.contrast,
                 "margin_blur_mm": rec.margin_blur_mm, "n_spicules": rec.n_spicules,
                 "n_calcifications": rec.n_calcifications}
        out.append(lesion_from_mask(image, mask, KIND_LABEL[kind], finding_type(kind), attrs, pad_px=pad))
    return tuple(out)


def _kind_for(entry: str, rng: np.random.Generator) -> str:
    """A lesion kind from a kind name or a class label (label: one of its kinds at random)."""
    if entry in KIND_LABEL:
        return entry
    if entry in LABEL_KINDS:
        kinds = LABEL_KINDS[entry]
        return kinds[int(rng.integers(len(kinds)))]
    raise InputError(f"unknown lesion {entry!r}; expected a class {sorted(LABEL_KINDS)} or a kind {sorted(KIND_LABEL)}")


def render_mammogram(
    lesions: Sequence[str] = (),
    view: str = "CC",
    size: int = 256,
    seed: int | np.random.Generator = 0,
    field_of_view_mm: float = 120.0,
    beta: float = 3.0,
    laterality: str = "L",
    density: str | None = None,
    edge_falloff_mm: float = 12.0,
    noise_sigma: float = 0.01,
    params: Sequence[dict[str, float]] | None = None,
    patient_id: str = "",
    key: str = "",
) -> LesionImage:
    """Draw one synthetic mammogram with any number of lesions, annotated with boxes and masks.

    Args:
        lesions: one entry per lesion: a class (``benign``, ``uncertain``, ``malignant``: one of its
            kinds at random) or a kind (``spiculated``, ``coarse_calcifications``...); empty = normal.
        view, size, seed, field_of_view_mm, beta, laterality, edge_falloff_mm, noise_sigma: as
            :func:`render_case`.
        density: BI-RADS density ``a``-``d`` (None: random).
        params: per lesion, parameters from :func:`~medanomaly.synth.mammo_lesions.lesion_params`
            (with optional relative position ``u``, ``v``) to draw the same lesions in two views.
        patient_id, key: stored on the returned image.

    Returns:
        A :class:`~medanomaly.data.lesions2d.LesionImage` (attributes: ``density``, ``dense_fraction``).
    """
    _check(view, laterality, size, density)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    kinds = [_kind_for(e, rng) for e in lesions]
    if params is not None and len(params) != len(kinds):
        raise InputError(f"{len(params)} parameter sets for {len(kinds)} lesions")
    specs = [(k, dict(params[i]) if params is not None else lesion_params(k, rng)) for i, k in enumerate(kinds)]
    image, drawn, dens, fraction = _render(specs, view, size, rng, field_of_view_mm, beta, laterality, density,
                                           edge_falloff_mm, noise_sigma)
    return LesionImage(image, _annotate(image, drawn), patient_id, key, view=view, laterality=laterality,
                       attributes={"density": dens, "dense_fraction": round(fraction, 3)})


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
    density: str | None = None,
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
        density: BI-RADS density class ``a``-``d`` (None: random).

    Returns:
        A :class:`MammoCase`; the image is float32 in about 0..1 (brighter = denser), spacing in mm.
    """
    if label not in LABEL_KINDS:
        raise InputError(f"unknown phantom label {label!r}; expected one of {sorted(LABEL_KINDS)}")
    _check(view, laterality, size, density)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    kinds = LABEL_KINDS[label]
    if kind is None:
        kind = kinds[int(rng.integers(len(kinds)))]
    elif kind not in kinds:
        raise InputError(f"lesion kind {kind!r} is not drawn for label {label!r}")
    params = _lesion_params_override or lesion_params(kind, rng)
    image, drawn, dens, _ = _render([(kind, dict(params))], view, size, rng, field_of_view_mm, beta, laterality,
                                    density, edge_falloff_mm, noise_sigma)
    mask = np.zeros(image.shape[1:], dtype=np.uint8)
    for _, m, _ in drawn:
        mask |= m.astype(np.uint8)
    lesion = drawn[0][2] if drawn else Lesion("none")
    image = image.with_meta(label=label)
    return MammoCase(
        image=image,
        mask=image.with_array(mask[None], modality="MG", units="mask", label=label),
        label=label,
        lesion=lesion,
        view=view,
        laterality=laterality,
        lesions=_annotate(image, drawn),
        density=dens,
    )


# --------------------------------------------------------------------------- cohorts
def _patient_lesions(n_lesions: int, classes: list[str], mass_fraction: float,
                     rng: np.random.Generator) -> list[tuple[str, dict[str, float]]]:
    specs = []
    for label in classes[:n_lesions]:
        mass_kind, calc_kind = LABEL_KINDS[label][0], LABEL_KINDS[label][1]
        kind = mass_kind if rng.random() < mass_fraction else calc_kind
        params = lesion_params(kind, rng)
        params.update(u=rng.uniform(0.2, 0.8), v=rng.uniform(-0.7, 0.7))
        specs.append((kind, params))
    return specs


def make_lesion_cohort(
    n_patients: int = 60,
    size: int = 256,
    seed: int = 0,
    two_view_fraction: float = 0.5,
    normal_fraction: float = 0.2,
    max_lesions: int = 2,
    mass_fraction: float = 0.6,
    class_names: Sequence[str] = CLASSES,
    val: float = 0.2,
    test: float = 0.2,
    field_of_view_mm: float = 120.0,
) -> LesionSet:
    """A SYNTHETIC detection cohort: patients with one breast, one or two views, 0..max lesions.

    Lesion classes are balanced over the cohort; each lesion is a mass (``mass_fraction``) or a
    calcification cluster of its class; both views of a patient show the same lesions at the same
    relative depth from the chest wall (so a CC/MLO pairing by nipple distance is possible).
    Splits are by patient, stratified by each patient's most severe lesion class.

    Returns:
        A :class:`~medanomaly.data.lesions2d.LesionSet` with ``synthetic=True``; image keys
        ``P0001_L_CC``..., patient ids ``P0001``...
    """
    if n_patients < 3 or max_lesions < 1:
        raise InputError(f"need at least 3 patients and max_lesions >= 1, got {n_patients}, {max_lesions}")
    unknown = [c for c in class_names if c not in LABEL_KINDS or c == "normal"]
    if unknown:
        raise InputError(f"unknown lesion class(es) {unknown}; expected some of {list(CLASSES)}")
    rng = np.random.default_rng(seed)
    pool = [class_names[i % len(class_names)] for i in range(n_patients * max_lesions)]
    rng.shuffle(pool)
    items = []
    for i in range(n_patients):
        prng = np.random.default_rng([seed, i])
        n_les = 0 if prng.random() < normal_fraction else int(prng.integers(1, max_lesions + 1))
        specs = _patient_lesions(n_les, pool[i * max_lesions:(i + 1) * max_lesions], mass_fraction, prng)
        side = "L" if prng.random() < 0.5 else "R"
        density = "abcd"[int(prng.integers(4))]
        pid = f"P{i + 1:04d}"
        for view in ("CC", "MLO") if prng.random() < two_view_fraction else ("CC",):
            items.append(render_mammogram([k for k, _ in specs], view, size, prng, field_of_view_mm,
                                          laterality=side, density=density, params=[p for _, p in specs],
                                          patient_id=pid, key=f"{pid}_{side}_{view}"))
    cohort = LesionSet(tuple(items), tuple(class_names), "mammo_phantom", synthetic=True)
    return cohort.with_patient_splits(val=val, test=test, seed=seed)
