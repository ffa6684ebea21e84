"""Synthetic anomalies made from normal slices, for label-free model selection (never the test).

Half the slices get one or two lesions: a smooth-edged ellipse whose intensity is set to a random
brain rank (bright or dark, like enhancing tumour or necrosis), or a CutPaste patch copied from
elsewhere in the same slice. Everything made here is SYNTHETIC.
"""

from __future__ import annotations

import numpy as np

from medanomaly.errors import InputError

__all__ = ["make_synthetic", "make_synthetic_3d", "make_blobs", "LESION_MODELS", "OUTLINE_MM"]


def _ellipse(size: int, rng: np.random.Generator, brain: np.ndarray) -> np.ndarray | None:
    ys, xs = np.nonzero(brain)
    if ys.size < 50:
        return None
    k = rng.integers(ys.size)
    cy, cx = ys[k], xs[k]
    ry, rx = rng.uniform(0.04, 0.12, 2) * size
    yy, xx = np.mgrid[:size, :size]
    d = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
    return np.clip(1.5 - d, 0.0, 1.0) * brain  # soft edge, 1 inside


def make_synthetic(images: np.ndarray, masks: np.ndarray, seed: int = 0,
                   fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Insert synthetic lesions into a copy of normal common-grid slices.

    Args:
        images: (N, S, S) normal slices (brain ranks 0..1).
        masks: (N, S, S) brain masks.
        seed: random seed.
        fraction: share of slices that get lesions.

    Returns:
        (images with lesions, (N, S, S) bool lesion masks).
    """
    rng = np.random.default_rng(seed)
    out = images.copy()
    lesions = np.zeros(images.shape, bool)
    size = images.shape[-1]
    for i in np.flatnonzero(rng.random(len(images)) < fraction):
        for _ in range(int(rng.integers(1, 3))):
            weight = _ellipse(size, rng, masks[i])
            if weight is None:
                continue
            if rng.random() < 0.7:
                target = rng.choice([rng.uniform(0.9, 1.0), rng.uniform(0.0, 0.15)])
                patch = np.full(out[i].shape, target, np.float32)
            else:  # CutPaste: the same slice shifted
                shift = rng.integers(-size // 3, size // 3, 2)
                patch = np.roll(images[i], tuple(shift), axis=(0, 1))
            out[i] = (1 - weight) * out[i] + weight * patch
            lesions[i] |= weight > 0.5
    return out.astype(np.float32), lesions


def _blob(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """A soft irregular blob (weight 0..1) inside ``mask``: smoothed white noise at a random scale (2-8 px),
    cut at the quantile that leaves 1-8 % of the mask's pixels above it, its edge softened."""
    from scipy import ndimage

    inside = mask > 0
    if inside.sum() < 50:
        return None
    field = ndimage.gaussian_filter(rng.standard_normal(mask.shape), rng.uniform(2.0, 8.0))
    cut = np.quantile(field[inside], 1.0 - rng.uniform(0.01, 0.08))
    return np.clip(ndimage.gaussian_filter((field >= cut).astype(np.float32), 1.0) * inside, 0.0, 1.0)


def make_blobs(images: np.ndarray, masks: np.ndarray, rng: np.random.Generator,
               fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Training anomalies for a discriminative method (``draem``), another family than the validation's
    :func:`make_synthetic` so that the validation judges how far the learning carries: in ``fraction`` of the
    slices an irregular blob (:func:`_blob`) whose pixels are blended towards another slice of the batch at the
    same place (foreign-patch interpolation, weight 0.3-1) or shifted in intensity by +-0.2..0.6 (ranks,
    clipped to 0..1), half each.

    Args:
        images: (N, S, S) normal slices (0..1).
        masks: (N, S, S) brain masks.
        rng: random generator (a new draw every batch).
        fraction: share of slices that get a blob.

    Returns:
        (slices with blobs, (N, S, S) bool masks of the pixels the blob changed by more than 0.05).
    """
    out = np.asarray(images, np.float32).copy()
    changed = np.zeros(out.shape, bool)
    for i in np.flatnonzero(rng.random(len(out)) < fraction):
        weight = _blob(masks[i], rng)
        if weight is None:
            continue
        if rng.random() < 0.5:
            share = rng.uniform(0.3, 1.0)
            target = share * images[int(rng.integers(len(images)))] + (1 - share) * images[i]
        else:
            target = np.clip(images[i] + rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.6), 0.0, 1.0)
        new = (1 - weight) * images[i] + weight * target
        changed[i] = (weight > 0.5) & (np.abs(new - images[i]) > 0.05)
        out[i] = new
    return out, changed


#: Depth (mm) inside the brain's edge where a lesion "on the outline" is centred (:func:`make_synthetic_3d`).
OUTLINE_MM = 5.0

#: 3D lesion models: ``mixed`` (bright, dark or CutPaste, the 2D recipe) or ``enhancing`` (a tumour on
#: a post-contrast T1: enhancing tissue, solid or a rim around a dark necrotic core).
LESION_MODELS = ("mixed", "enhancing")


def _intensity_at(values: np.ndarray, q: float) -> float:
    """The brain intensity at quantile ``q`` (0..1) of the sorted brain ``values``."""
    return values[min(int(q * values.size), values.size - 1)]


def _enhancing_patch(d: np.ndarray, values: np.ndarray, radii: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A post-contrast tumour's intensities in the ellipsoid of normalised distance ``d`` (1 = its
    surface): enhancing tissue from the top 85-100 % of the brain's intensities, in half the lesions
    as a rim 2-5 mm thick around a necrotic core from the bottom 0-20 % (solid enhancement otherwise)."""
    patch = np.full(d.shape, _intensity_at(values, rng.uniform(0.85, 1.0)), np.float32)
    if rng.random() < 0.5:
        rim_mm = rng.uniform(2.0, 5.0)
        core = np.sqrt(np.maximum(d, 0.0)) < max(0.0, 1.0 - rim_mm / float(radii.min()))
        patch[core] = _intensity_at(values, rng.uniform(0.0, 0.2))
    return patch


def _outline_voxels(brain: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """(n, 3) indices of the brain voxels within :data:`OUTLINE_MM` of the brain's edge (all of them if none);
    the field of view's border is not the brain's outline (:func:`medanomaly.anomaly.atlas.signed_distance_mm`)."""
    from medanomaly.anomaly.atlas import signed_distance_mm

    shell = np.argwhere(brain & (signed_distance_mm(brain, spacing) <= OUTLINE_MM))
    return shell if len(shell) else np.argwhere(brain)


def make_synthetic_3d(volume: np.ndarray, brain: np.ndarray, spacing: tuple[float, float, float], seed: int = 0,
                      n_lesions: int = 6, radius_mm: tuple[float, float] = (4.0, 15.0),
                      model: str = "mixed", confine: np.ndarray | None = None,
                      outline_share: float = 0.0) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Insert SYNTHETIC 3D lesions into a copy of a normal volume, in its own intensities.

    ``model`` ``mixed``: the same recipe as :func:`make_synthetic`, in 3D and in mm: soft-edged
    ellipsoids (semi-axes ``radius_mm``) centred in the brain, filled with a random brain intensity
    from the top (90-100 %) or bottom (0-15 %) of the brain's intensity distribution (bright or dark,
    70 %) or with the same volume shifted by up to a third of its extent (CutPaste, 30 %).
    ``enhancing``: the same ellipsoids filled as a tumour on a post-contrast T1 (:func:`_enhancing_patch`).

    Args:
        volume: (z, y, x) normal intensities.
        brain: (z, y, x) bool brain mask.
        spacing: voxel size (x, y, z), mm.
        seed: random seed.
        n_lesions: lesions inserted.
        radius_mm: range of the ellipsoid semi-axes, mm.
        model: ``mixed`` or ``enhancing`` (:data:`LESION_MODELS`).
        confine: (z, y, x) bool mask the lesions are cut to (default ``brain``). A wider mask
            than ``brain`` (a whole head's rough brain mask) lets a lesion centred in the brain
            cross the brain's outline, as an extra-axial or an outward-growing tumour does.
        outline_share: the share of lesions centred on the brain's outline (brain voxels within
            :data:`OUTLINE_MM` of its edge) rather than anywhere in it; with a wider ``confine`` these
            cross the outline.

    Returns:
        (volume with lesions, bool lesion mask = where the lesion weight is above 0.5).
    """
    if model not in LESION_MODELS:
        raise InputError(f"synthetic lesion model must be one of {LESION_MODELS}, got {model!r}")
    rng = np.random.default_rng(seed)
    out = volume.astype(np.float32).copy()
    lesions = np.zeros(volume.shape, bool)
    values = np.sort(volume[brain])
    confine = brain if confine is None else np.asarray(confine, bool)
    zyx = np.argwhere(brain)
    outline = _outline_voxels(brain, spacing) if outline_share > 0 else zyx
    grid = np.meshgrid(*(np.arange(n) * s for n, s in zip(volume.shape, spacing[::-1])), indexing="ij")
    for _ in range(n_lesions):
        pool = outline if outline_share > 0 and rng.random() < outline_share else zyx
        centre = pool[rng.integers(len(pool))] * np.asarray(spacing[::-1])
        radii = rng.uniform(*radius_mm, 3)
        d = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii))
        weight = np.clip(1.5 - d, 0.0, 1.0) * confine
        if model == "enhancing":
            patch = _enhancing_patch(d, values, radii, rng)
        elif rng.random() < 0.7:
            q = rng.choice([rng.uniform(0.9, 1.0), rng.uniform(0.0, 0.15)])
            patch = np.full(volume.shape, _intensity_at(values, q), np.float32)
        else:  # CutPaste: the same volume shifted
            shift = tuple(int(rng.integers(-n // 3, n // 3 + 1)) for n in volume.shape)
            patch = np.roll(volume, shift, axis=(0, 1, 2)).astype(np.float32)
        out = (1 - weight) * out + weight * patch
        lesions |= weight > 0.5
    return out.astype(np.float32), lesions
