"""Grow a finding's mask to the lesion's extent: HU-aware region growing on the source CT grid.

The detector's probability map, thresholded, marks a lesion's core but under-segments large and
irregular lesions (its receptive field and the training sizes are small). This step grows each
finding's **seed** mask (the network's, on the source grid) to the lesion's extent in HU:

1. **Neighbourhood**: the voxels within ``margin_mm`` of the seed (a bounded box around it, so a
   finding never grows into the rest of the lung), inside the lung mask (which already contains
   juxtapleural tumours; the chest wall outside it is never reached).
2. **Threshold, by principle (half maximum)**: half-way between the lesion's core attenuation (the
   median HU under the seed) and the parenchyma around it (the median HU of the lung voxels of the
   neighbourhood outside the seed grown by ``margin_mm`` / 2). Partial volume blends lesion and
   parenchyma linearly, so the 50 % level is the boundary's best estimate, whatever the lesion's
   own HU (solid or part-solid). When that level falls below ``min_hu`` (a faint ground-glass
   nodule, whose contrast is within a few noise SDs of the parenchyma) the network's mask is kept.
3. **Vessels**: the thresholded voxels are opened (Euclidean, in mm) with a ball of radius
   ``max(opening_mm, opening_fraction x r)``, r = the lesion's inscribed radius around the seed:
   vessels attached to a nodule are narrower than the nodule, so attachments thinner than the
   lesion's radius (at ``opening_fraction`` 0.5) are cut, before connectivity (26-neighbourhood,
   :func:`scipy.ndimage.binary_propagation` from the seed).
4. Holes (cavities, noise) are filled (:func:`scipy.ndimage.binary_fill_holes`). If nothing of
   the seed survives the opening (a nodule thinner than the opening), the network's mask is kept.
5. **Leakage, whatever the seed's size**: a lesion is a compact blob, a leak (along hilar vessels
   and bronchi, a rim along the heart border or the diaphragm) is long or thin. The grown mask's
   **compactness** ``r_in / r_eq`` (its largest inscribed radius, from a Euclidean distance
   transform in mm less half the finest voxel side, over the radius of the sphere of its volume:
   1 for a ball, 0.5 for a prolate 8:1:1 or an oblate 2.8:2.8:1 ellipsoid) below
   ``min_compactness`` (0.5) marks a leak, and the network's mask is kept. The level was set from
   real nodules: 0.5 is about the 10th percentile of the 583 LIDC-IDRI train-split consensus shapes
   of 6 mm or more rasterised on 0.65 x 0.65 x 5 mm voxels (5th percentile 0.47; 0.46-0.49 on 1.25
   and 2.5 mm slices); refusing a good growth costs little (its seed is then the network's mask),
   accepting a leak costs a multiple of the volume. It replaces a grown / seed volume ratio
   (``max_ratio``, kept for old runs, off by default), which threw away the growth of a large
   lesion whose seed was a sliver of it.
6. **A second body below or above the lesion** (the organ under the diaphragm dome that a basal tumour
   touches, with the tumour's own attenuation): the grown mask's cross-section area per slice, walked
   out from the seed's largest slice, must not rise again after it has fallen. For a convex body the
   square root of the area is a concave function of the slice position (Brunn-Minkowski), so its
   profile has one peak; a slice whose area exceeds ``max_slice_rise`` x the smallest since the last
   peak (+ :data:`SLICE_FLOOR_MM2`) starts another body, and it and every slice beyond are dropped
   (never a slice of the network's own, where the seed covers at least :data:`SEED_SHARE` of the grown area;
   a seed's faint tail into the organ does not protect it). At 1.25 the rule cuts 0.2 % of the 1,262 LIDC-IDRI
   train-split consensus shapes of 3 mm or more rasterised on 0.65 x 0.65 x 5 mm voxels (random slice
   phase; 0.8 % on 2.5 mm and 1.3 % on 1.25 mm slices; mean volume lost 0.1-0.3 %); at 1.0 (strict
   unimodality) 1.1 / 2.8 / 12.7 %. The rule was designed after lung2's grown mask was seen reaching
   the organ under the dome (docs/lung_nodules_runs.md): a hindsight-informed rule, its level set on the
   LIDC shapes, not on lung2. Its walk starts at the seed's own widest slice (the slice with the most seed
   area) and the protection needs that share since a full-config network's seed reached 4 slices into lung2's
   organ with a thin tail (hindsight again, docs/lung_nodules_runs.md); neither can add a cut on a one-peak profile.

Example:
    >>> import numpy as np
    >>> ct = np.full((9, 40, 40), -850.0); zz, yy, xx = np.mgrid[:9, :40, :40]
    >>> ct[(((zz - 4) * 2.0) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2) <= 64] = 30.0   # 16 mm sphere
    >>> seed = (zz == 4) & ((yy - 20) ** 2 + (xx - 20) ** 2 <= 4)
    >>> grown = grow_mask(ct, seed, np.ones(ct.shape, bool), spacing=(1.0, 1.0, 2.0))
    >>> int(seed.sum()), int(grown.sum()), int((ct > -400).sum())  # the opening trims the poles
    (13, 933, 1037)
"""

from __future__ import annotations

import numpy as np

from medanomaly.boxes import padded_box

__all__ = ["SLICE_FLOOR_MM2", "compactness", "drop_second_body", "grow_mask", "slice_rise_or_none"]

#: Per-slice area (mm^2) a slice may exceed ``max_slice_rise`` x the running minimum by (a few voxels of
#: rasterisation noise on a small lesion's end slices).
SLICE_FLOOR_MM2 = 5.0

#: A slice is the network's own, never dropped by the second-body rule, when the seed covers at least this share
#: of the grown area on it: a seed's faint tail into the neighbouring organ (4-6 % of those slices in lung2 with
#: one full-config network) does not vouch for a slice.
SEED_SHARE = 0.5


def _open(
    candidate: np.ndarray, core: np.ndarray, sampling: tuple[float, ...], opening_mm: float, fraction: float
) -> np.ndarray:
    """Euclidean opening (in mm, exact for anisotropic voxels: two distance transforms) with radius
    ``max(opening_mm, fraction x r)``, r = the lesion's inscribed radius (the largest distance
    from a core voxel to the outside of ``candidate``): attachments thinner than ``2 x`` that
    radius, i.e. vessels narrower than the lesion, are cut."""
    from scipy import ndimage

    inner = ndimage.distance_transform_edt(candidate, sampling=sampling)
    radius = max(opening_mm, fraction * float(inner[core].max()))
    if radius <= 0:
        return candidate
    eroded = inner > radius
    if not eroded.any():
        return eroded
    return candidate & (ndimage.distance_transform_edt(~eroded, sampling=sampling) <= radius)


def compactness(mask: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """``r_in / r_eq`` of a non-empty mask (z, y, x; spacing mm, x/y/z): largest inscribed radius (mm,
    Euclidean distance transform less half the finest voxel side) over the equivalent sphere's radius.

    Example:
        >>> zz, yy, xx = np.mgrid[:40, :40, :40]
        >>> ball = (zz - 20) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2 <= 15**2
        >>> rod = (np.abs(yy - 20) <= 2) & (np.abs(xx - 20) <= 2)
        >>> round(compactness(ball, (1.0, 1.0, 1.0)), 2), round(compactness(rod, (1.0, 1.0, 1.0)), 2)
        (0.97, 0.4)
    """
    from scipy import ndimage

    sampling = tuple(float(s) for s in spacing[::-1])
    r_in = float(ndimage.distance_transform_edt(mask, sampling=sampling).max()) - 0.5 * min(sampling)
    r_eq = (3.0 * float(mask.sum()) * float(np.prod(sampling)) / (4.0 * np.pi)) ** (1.0 / 3.0)
    return r_in / r_eq


def slice_rise_or_none(value: float | None) -> float | None:
    """A ``max_slice_rise`` for :func:`drop_second_body` as a float of at least 1, or None (rule off).

    Raises:
        ValueError: below 1 or not a number (a hand-edited detector file; the config refuses it first).
    """
    if value is None:
        return None
    rise = float(value)
    if not rise >= 1.0:
        raise ValueError(f"grow_max_slice_rise must be at least 1, got {value!r}")
    return rise


def _unimodal_slices(areas: np.ndarray, start: int, protected: np.ndarray, rise: float) -> np.ndarray:
    """Slices kept (boolean per slice) by walking out of ``start`` in both directions until an area rises
    above ``rise`` x the smallest since the last peak + :data:`SLICE_FLOOR_MM2`, or the mask ends; the
    ``protected`` slices (boolean per slice) are always kept."""
    keep = np.zeros(len(areas), bool)
    keep[start] = True
    for step in (-1, 1):
        peak = low = float(areas[start])
        k = start + step
        while 0 <= k < len(areas) and areas[k] > 0:
            a = float(areas[k])
            if not protected[k] and low < peak and a > rise * low + SLICE_FLOOR_MM2:
                break
            peak, low = (a, a) if a >= peak else (peak, min(low, a))
            keep[k] = True
            k += step
    return keep | protected


def drop_second_body(grown: np.ndarray, seed: np.ndarray, sampling: tuple[float, ...], rise: float) -> np.ndarray:
    """``grown`` without the slices of a second body beyond the lesion (rule 6 of the module docstring):
    the per-slice area (mm^2, slices along axis 0; ``sampling`` = voxel size z, y, x in mm) walked out of
    the seed's largest slice must not rise above ``rise`` x its running minimum after a fall; what stays
    connected (26-neighbourhood) to ``seed`` is returned.

    Example:
        >>> grown = np.zeros((7, 20, 20), bool); grown[0:3, 2:18, 2:18] = True   # an organ, 16 x 16
        >>> grown[3, 8:12, 8:12] = grown[6, 8:12, 8:12] = True                    # a lesion on it:
        >>> grown[4:6, 6:14, 6:14] = True                                          # areas 16, 64, 64, 16
        >>> seed = np.zeros_like(grown); seed[4:6, 8:12, 8:12] = True
        >>> int(drop_second_body(grown, seed, (5.0, 1.0, 1.0), 1.25).sum()), int(grown.sum())
        (160, 928)
    """
    from scipy import ndimage

    pixel_mm2 = float(sampling[1] * sampling[2])
    areas, seed_areas = grown.sum(axis=(1, 2)) * pixel_mm2, seed.sum(axis=(1, 2)) * pixel_mm2
    start = int(np.argmax(seed_areas))
    keep = _unimodal_slices(areas, start, (seed_areas > 0) & (seed_areas >= SEED_SHARE * areas), rise)
    if keep[areas > 0].all():
        return grown
    trimmed = grown & keep[:, None, None]
    return ndimage.binary_propagation(trimmed & seed, structure=np.ones((3, 3, 3), bool), mask=trimmed)


def grow_mask(
    ct_hu: np.ndarray,
    seed: np.ndarray,
    lung: np.ndarray,
    spacing: tuple[float, float, float],
    margin_mm: float = 30.0,
    opening_mm: float = 2.0,
    min_hu: float = -700.0,
    opening_fraction: float = 0.5,
    min_compactness: float = 0.5,
    max_ratio: float | None = None,
    max_slice_rise: float | None = None,
) -> np.ndarray:
    """The seed mask grown to the lesion's extent (see the module docstring); same shape as ``seed``.

    Args:
        ct_hu: CT in HU (z, y, x) on the source grid.
        seed: the finding's mask (boolean, z, y, x), e.g. the network's thresholded probability.
        lung: lung mask (boolean, z, y, x); growth never leaves it.
        spacing: voxel spacing (mm, x/y/z).
        margin_mm: the farthest (mm) a grown voxel may lie from the seed.
        opening_mm: smallest radius (mm) of the opening that detaches vessels (0 with
            ``opening_fraction`` 0 = none).
        opening_fraction: the opening's radius as a fraction of the lesion's inscribed radius.
        min_hu: lowest growing threshold (HU); below it the seed is returned unchanged.
        min_compactness: lowest :func:`compactness` of the grown mask (0 = no leakage test).
        max_ratio: largest grown / seed volume ratio (None = off; the rule of runs before the
            compactness test).
        max_slice_rise: largest rise of the per-slice area after a fall, as a factor of the running
            minimum (:func:`drop_second_body`; None = off, the rule of runs before it).

    Returns:
        Boolean mask; the seed itself when growing is not possible (empty seed, faint lesion,
        nothing left after the opening, a leak: compactness below ``min_compactness``).
    """
    from scipy import ndimage

    seed = np.asarray(seed, bool)
    if not seed.any():
        return seed
    box = padded_box(seed, margin_mm, spacing[::-1])
    ct, core, inside = np.asarray(ct_hu[box], np.float32), seed[box], np.asarray(lung[box], bool)
    sampling = tuple(float(s) for s in spacing[::-1])
    dist = ndimage.distance_transform_edt(~core, sampling=sampling)
    background = inside & (dist > 0.5 * margin_mm)
    if not background.any():
        return seed
    level = 0.5 * (float(np.median(ct[core])) + float(np.median(ct[background])))
    if level < min_hu:
        return seed
    candidate = (ct >= level) & inside & (dist <= margin_mm)
    candidate = _open(candidate, core, sampling, opening_mm, opening_fraction)
    start = candidate & core
    if not start.any():
        return seed
    grown = ndimage.binary_propagation(start, structure=np.ones((3, 3, 3), bool), mask=candidate)
    grown = ndimage.binary_fill_holes(grown)
    if max_slice_rise is not None:
        grown = drop_second_body(grown, start, sampling, max_slice_rise)
    if compactness(grown, spacing) < min_compactness:
        return seed
    if max_ratio is not None and grown.sum() > max_ratio * seed.sum():
        return seed
    out = np.zeros_like(seed)
    out[box] = grown
    return out
