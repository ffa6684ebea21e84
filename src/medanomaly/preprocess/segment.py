"""Classical ROI masks (no training): lungs, airways and body from CT, body from MRI
(breast and brain masks: :mod:`medanomaly.preprocess.tissue_masks`).

All functions take a :class:`~medanomaly.types.Volume` and return a ``uint8`` mask ``Volume``
on the same grid (``meta["label"]`` names the ROI). Building blocks are SciPy
(``ndimage.label``, morphology, hole filling, Euclidean distance transforms) and scikit-image
(Otsu threshold, watershed). The recipes themselves (which thresholds, in which order) are
ours: SimpleITK, scikit-image and MONAI have no lung, body, breast or brain-mask function.

Lung labels (LPS): ``1 = right lung`` (the component at smaller LPS x, i.e. towards the
patient's right), ``2 = left lung``.

Example:
    >>> import numpy as np
    >>> from medanomaly.types import Volume
    >>> ct = np.full((4, 64, 64), -1000, np.int16)
    >>> yy, xx = np.mgrid[:64, :64]
    >>> ct[:, (yy - 32) ** 2 + (xx - 32) ** 2 < 28 ** 2] = 40      # body
    >>> for cx in (18, 46):                                          # two lungs
    ...     ct[:, (yy - 32) ** 2 + (xx - cx) ** 2 < 9 ** 2] = -850
    >>> lungs = lung_mask(Volume(ct, spacing=(5.0, 5.0, 5.0), meta={"modality": "CT"}),
    ...                   min_lung_ml=1.0)
    >>> sorted(np.unique(lungs.array).tolist())
    [0, 1, 2]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medanomaly.errors import InputError
from medanomaly.preprocess.checks import require_ct, require_finite, require_scalar
from medanomaly.preprocess.morphology import (
    dilate_in_plane,
    elliptic_disk,
    erode_in_plane,
    in_plane_box,
    open_in_plane,
    physical_disk,
)
from medanomaly.types import Volume

__all__ = [
    "RIGHT_LUNG",
    "LEFT_LUNG",
    "LungStats",
    "body_mask",
    "lung_mask",
    "lung_stats",
    "airway_mask",
]

RIGHT_LUNG = 1
LEFT_LUNG = 2

_IN_PLANE = np.zeros((3, 3, 3), bool)
_IN_PLANE[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]


# --------------------------------------------------------------------------------------- helpers
def _mask_volume(like: Volume, mask: np.ndarray, label: str) -> Volume:
    """An ROI mask of ``like``: its grid, modality and Frame of Reference (a DICOM series written from the mask lies in
    the image's patient coordinate system, so ``read_mask`` takes it back against the image)."""
    meta: dict[str, object] = {"label": label}
    for key in ("modality", "frame_of_reference_uid"):
        if like.meta.get(key) is not None:
            meta[key] = like.meta[key]
    return Volume(
        mask.astype(np.uint8), spacing=like.spacing, origin=like.origin, direction=like.direction, meta=meta
    )


def _largest_component(mask: np.ndarray, structure: np.ndarray | None = None) -> np.ndarray:
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=structure)
    if n == 0:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _fill_holes_per_slice(mask: np.ndarray, max_hole_px: int | None = None) -> np.ndarray:
    """Fill holes in every axial slice (3D hole filling would treat the end slices as border).

    One in-plane labelling of the background for all slices (4-connected, like
    ``ndimage.binary_fill_holes``): background components that do not touch a slice's edge are
    holes. Same result as a per-slice ``binary_fill_holes`` loop, several times faster. Only the
    mask's in-plane box is labelled, framed by one background pixel: outside the box every slice is
    background, joined to the image's edge, so a component reaching the frame is no hole.
    ``max_hole_px`` leaves larger holes open (an organ ringed by lung on one slice).
    """
    from scipy import ndimage

    mask = mask.astype(bool)
    box = in_plane_box(mask)
    if box is None:
        return mask
    background = np.pad(~mask[:, box[0], box[1]], ((0, 0), (1, 1), (1, 1)), constant_values=True)
    labels, n = ndimage.label(background, structure=_IN_PLANE)
    edge = np.unique(np.concatenate([labels[:, 0, :].ravel(), labels[:, -1, :].ravel(),
                                     labels[:, :, 0].ravel(), labels[:, :, -1].ravel()]))  # fmt: skip
    keep = np.zeros(n + 1, bool)
    keep[edge] = True
    keep[0] = True
    if max_hole_px is not None:
        keep |= np.bincount(labels.ravel(), minlength=n + 1) > max_hole_px
    filled = mask.copy()
    filled[:, box[0], box[1]] |= ~keep[labels[:, 1:-1, 1:-1]]
    return filled


def _disk_closing_per_slice(mask: np.ndarray, radius_mm: float, spacing_yx: tuple[float, float]) -> np.ndarray:
    """Per-slice binary closing with a disk of ``radius_mm`` (mm; the pixels within that physical distance), the
    plane around the image counted as background (the mask is padded, so the closing never meets the image edge).

    At 0.7 mm pixels the 20 mm disk holds about 2,500 pixels, each of which ``ndimage.binary_closing`` would
    visit at every voxel; :mod:`~medanomaly.preprocess.morphology` passes it one row (57) at a time. Same
    masks as the per-slice distance transforms this used before, 1.5-1.7x faster
    (``bench/bench_inplane_morphology.py``).
    """
    disk = physical_disk(radius_mm, *spacing_yx)  # SciPy's EDT arithmetic: the same ties
    ry, rx = disk.shape[1] // 2, disk.shape[2] // 2
    pad = ((0, 0), (ry + 1, ry + 1), (rx + 1, rx + 1))
    closed = erode_in_plane(dilate_in_plane(np.pad(mask, pad), disk), disk)
    return mask | closed[:, ry + 1 : -ry - 1, rx + 1 : -rx - 1]


def _spacing_zyx(volume: Volume) -> tuple[float, float, float]:
    sx, sy, sz = volume.spacing
    return (sz, sy, sx)


# --------------------------------------------------------------------------------------- body
def body_mask(volume: Volume, threshold: float | None = None, opening_mm: float = 3.0) -> Volume:
    """Mask of the patient's body (table, air and clothes excluded), holes filled per slice.

    CT uses ``threshold = -500 HU``; other modalities use Otsu's threshold (scikit-image). An
    in-plane opening of ``opening_mm`` detaches the table, the largest 3D component is kept,
    and holes (lungs, bowel gas) are filled slice by slice.

    Args:
        volume: scalar CT (HU) or MR/other image.
        threshold: intensity separating body from air; default by modality.
        opening_mm: radius of the in-plane opening, mm (0 disables it).

    Returns:
        uint8 Volume, 1 = body.

    Raises:
        InputError: NaNs, multi-component input, or nothing above the threshold.
    """
    require_scalar(volume, "body_mask")
    require_finite(volume, "body_mask")
    arr = np.asarray(volume.array, dtype=np.float32)
    if threshold is None:
        if volume.modality.upper() == "CT" or (volume.modality.upper() == "OT" and arr.min() <= -500):
            threshold = -500.0
        else:
            from skimage.filters import threshold_otsu

            if float(arr.min()) == float(arr.max()):
                raise InputError("body_mask: image is constant, no body to find")
            threshold = float(threshold_otsu(arr))
    fg = arr > threshold
    if opening_mm > 0:
        _, sy, sx = _spacing_zyx(volume)
        opened = open_in_plane(fg, elliptic_disk(opening_mm, sy, sx))
        fg = opened if opened.any() else fg
    if not fg.any():
        raise InputError(f"body_mask: no voxel above {threshold:.1f}; is this an empty image?")
    body = _largest_component(fg)
    body = _fill_holes_per_slice(body)
    return _mask_volume(volume, body, "body")


# --------------------------------------------------------------------------------------- airways
def airway_mask(ct: Volume, body: np.ndarray | None = None, lumen_hu: float = -950.0) -> Volume:
    """Trachea and main bronchi, grown in 3D from the trachea found in the top slices.

    The seed is the most circular air component of 1-8 cm^2 within the middle third (in x) of
    the body in the most cranial slices; the airway is the 3D component of ``HU < lumen_hu``
    that contains it. If that component leaks into the lungs (> 250 mL) the threshold is
    lowered in 25 HU steps. Returns an empty mask when no trachea is visible (basal scans).

    Args:
        ct: CT in HU.
        body: optional body mask array (z, y, x) to search within.
        lumen_hu: upper HU of the airway lumen.

    Returns:
        uint8 Volume, 1 = airway.
    """
    from scipy import ndimage

    require_ct(ct, "airway_mask")
    hu = np.asarray(ct.array)
    if body is None:
        body = body_mask(ct).array > 0
    sz, sy, sx = _spacing_zyx(ct)
    # "Cranial" = larger LPS z (superior); find which array end that is.
    z_dir = float(ct.direction[2, 2]) if abs(ct.direction[2, 2]) > 0.5 else 1.0
    order = range(hu.shape[0] - 1, -1, -1) if z_dir > 0 else range(hu.shape[0])
    seed = None
    for n_checked, z in enumerate(order):
        if n_checked >= max(3, hu.shape[0] // 4):
            break
        air = (hu[z] < -900) & body[z]
        if not air.any():
            continue
        ys, xs = np.nonzero(body[z])
        x_lo, x_hi = np.percentile(xs, 33), np.percentile(xs, 67)
        labels, n = ndimage.label(air)
        best, best_score = None, 0.0
        for idx, sl in enumerate(ndimage.find_objects(labels), start=1):
            comp = labels[sl] == idx
            area = comp.sum() * sy * sx
            if not 100.0 <= area <= 800.0:
                continue
            cy, cx = ndimage.center_of_mass(comp)
            cx += sl[1].start
            if not x_lo <= cx <= x_hi:
                continue
            h, w = (sl[0].stop - sl[0].start) * sy, (sl[1].stop - sl[1].start) * sx
            circ = area / (np.pi / 4 * max(h, w) ** 2)  # 1 for a disk
            if circ > best_score:
                best, best_score = (z, int(cy) + sl[0].start, int(cx)), circ
        if best is not None and best_score > 0.5:
            seed = best
            break
    airway = np.zeros(hu.shape, bool)
    if seed is None:
        return _mask_volume(ct, airway, "airway")
    for thr in (lumen_hu, lumen_hu - 25, lumen_hu - 50, lumen_hu - 75):
        if hu[seed] >= thr:
            continue
        labels, _ = ndimage.label((hu < thr) & body)
        cand = labels == labels[seed]
        if cand.sum() * ct.voxel_volume_mm3 / 1000.0 <= 250.0:
            airway = cand
            break
    return _mask_volume(ct, airway, "airway")


# --------------------------------------------------------------------------------------- lungs
def _split_two(component: np.ndarray, max_iter: int = 12) -> np.ndarray:
    """Split one connected lung blob into two labels by in-plane erosion + watershed."""
    from scipy import ndimage
    from skimage.segmentation import watershed

    eroded = component.copy()
    for _ in range(max_iter):
        eroded = ndimage.binary_erosion(eroded, structure=_IN_PLANE)
        labels, n = ndimage.label(eroded)
        if n >= 2:
            sizes = np.bincount(labels.ravel())
            sizes[0] = 0
            a, b = np.argsort(sizes)[::-1][:2]
            if sizes[b] >= 0.1 * sizes.sum():  # the smaller piece is a lung, not a crumb
                markers = np.zeros(component.shape, np.int32)
                markers[labels == a] = 1
                markers[labels == b] = 2
                dist = ndimage.distance_transform_edt(component)
                return watershed(-dist, markers, mask=component)
    return np.zeros(component.shape, np.int32)


def lung_mask(
    ct: Volume,
    threshold_hu: float = -320.0,
    closing_mm: float = 20.0,
    min_lung_ml: float = 20.0,
    max_hole_cm2: float = 25.0,
    lesion_completion: bool = True,
) -> Volume:
    """Left and right lung mask from a CT in HU, nodules and juxtapleural tumours included.

    Recipe: body mask (air outside the patient and the table removed) -> ``HU < threshold_hu``
    inside the body -> trachea/main bronchi removed (:func:`airway_mask`) -> 3D components,
    keeping the lung-sized ones (bowel gas is smaller) -> split into two lungs (erosion +
    watershed if they touch, midline as a last resort) -> per lung and per axial slice, holes
    filled and a disk closing of ``closing_mm`` so solid nodules and tumours touching the
    pleura or mediastinum are inside the mask (a rolling ball along the lung boundary).

    Args:
        ct: CT in HU (modality CT, or unlabelled with an HU-like range).
        threshold_hu: air/tissue threshold, HU.
        closing_mm: radius of the in-plane closing ball, mm.
        min_lung_ml: smallest air component kept as lung, mL.
        max_hole_cm2: largest in-slice hole filled, cm^2 (a 5.6 cm disk: nodules and tumours
            ringed by lung are filled; the spleen or liver dome ringed by the lung base is not).
        lesion_completion: grow dense tumours filled only partly by the closing out to their
            pleural side (see :func:`_complete_lesions`).

    Returns:
        uint8 Volume on ``ct``'s grid: 0 background, 1 right lung, 2 left lung (LPS: right =
        smaller x). A scan showing only one lung returns only that label.

    Raises:
        InputError: not a CT in HU, NaNs, or no lung-sized air region inside the body.
    """
    require_ct(ct, "lung_mask")
    body = body_mask(ct).array > 0
    two = _two_air_regions(ct, body, threshold_hu, min_lung_ml)
    mapping = _sides(ct, two, body)
    out = _closed_lungs(ct, two, mapping, body, closing_mm, max_hole_cm2)
    if lesion_completion:
        out = _complete_lesions(ct, out, two > 0, body, threshold_hu)
    return _mask_volume(ct, out, "lung")


def _two_air_regions(ct: Volume, body: np.ndarray, threshold_hu: float, min_lung_ml: float) -> np.ndarray:
    """Air below ``threshold_hu`` inside the body, airways removed, as one or two lung-sized
    components labelled 1 and 2 (touching lungs split by :func:`_split_two`); unsided yet."""
    from scipy import ndimage

    hu = np.asarray(ct.array)
    cand = (hu < threshold_hu) & body
    airway = airway_mask(ct, body=body).array > 0
    if airway.any():
        cand &= ~ndimage.binary_dilation(airway, structure=_IN_PLANE)
    cand = ndimage.binary_opening(cand, structure=_IN_PLANE)
    labels, n = ndimage.label(cand)
    if n == 0:
        raise InputError("lung_mask: no air inside the body below the threshold; is this a chest CT?")
    sizes = np.bincount(labels.ravel()).astype(float) * (ct.voxel_volume_mm3 / 1000.0)
    sizes[0] = 0.0
    order = np.argsort(sizes)[::-1]
    if sizes[order[0]] < min_lung_ml:
        raise InputError(
            f"lung_mask: largest air region is {sizes[order[0]]:.1f} mL (< {min_lung_ml} mL); no lungs found"
        )
    keep = [int(i) for i in order[:2] if sizes[i] >= max(min_lung_ml, 0.15 * sizes[order[0]])]
    two = np.zeros(hu.shape, np.int32)
    if len(keep) == 2:
        two[labels == keep[0]] = 1
        two[labels == keep[1]] = 2
        return two
    blob = labels == keep[0]
    two = _split_two(blob)
    return two if two.any() else blob.astype(np.int32)  # one lung, or two we could not split: sided later


def _sides(ct: Volume, two: np.ndarray, body: np.ndarray) -> dict[int, int]:
    """Component label -> RIGHT_LUNG / LEFT_LUNG by the physical x of its centroid (LPS: +x =
    patient left); a single lung is sided against the body's centroid."""
    from scipy import ndimage

    centroids = {}
    for lab in (1, 2):
        if (two == lab).any():
            zyx = np.array(ndimage.center_of_mass(two == lab))
            centroids[lab] = float(ct.index_to_physical(zyx[::-1])[0])
    if len(centroids) == 2:
        right = min(centroids, key=centroids.get)
        return {right: RIGHT_LUNG, 3 - right: LEFT_LUNG}
    (lab,) = centroids
    body_x = float(ct.index_to_physical(np.array(ndimage.center_of_mass(body))[::-1])[0])
    return {lab: RIGHT_LUNG if centroids[lab] < body_x else LEFT_LUNG}


def _closed_lungs(ct: Volume, two: np.ndarray, mapping: dict[int, int], body: np.ndarray, closing_mm: float,
                  max_hole_cm2: float) -> np.ndarray:  # fmt: skip
    """Per lung and axial slice: holes up to ``max_hole_cm2`` filled and a disk closing of
    ``closing_mm`` (mm); where two closings overlap, the raw threshold label wins."""
    _, sy, sx = _spacing_zyx(ct)
    max_hole = int(max_hole_cm2 * 100.0 / (sy * sx))
    out = np.zeros(two.shape, np.uint8)
    filled = {}
    for lab, target in mapping.items():
        lung = _fill_holes_per_slice(two == lab, max_hole)
        if closing_mm > 0:
            lung = _disk_closing_per_slice(lung, closing_mm, (sy, sx))
            lung = _fill_holes_per_slice(lung, max_hole)
        filled[target] = lung & body
    for target, lung in filled.items():
        out[lung & (out == 0)] = target
    for lab, target in mapping.items():
        out[(two == lab)] = target
    return out


def _complete_lesions(
    ct: Volume,
    labels: np.ndarray,
    raw: np.ndarray,
    body: np.ndarray,
    threshold_hu: float,
    seed_thickness_mm: float = 6.0,
    min_seed_ml: float = 2.0,
    dense_hu: float = -60.0,
    grow_mm: float = 25.0,
    shadow_mm: float = 35.0,
    reach_mm: float = 12.0,
    rim_mm: float = 3.0,
    min_depth_ratio: float = 0.5,
) -> np.ndarray:
    """Grow dense tumours that the closing filled only partly out to their pleural side.

    Seeds are the *thick* part of the closing additions: dense voxels (mean above
    ``dense_hu``) at least ``seed_thickness_mm`` inside a filled region on their slice, in 3D
    components of at least ``min_seed_ml`` (a tumour pressed into the lung; the thin crescents
    the closing adds along the heart and hilum never qualify). Each seed grows through dense
    soft tissue (``dense_hu`` .. 200 HU: not bone, not fat) no further than ``grow_mm``, no
    further than ``reach_mm`` in-plane from the seed's axial footprint, and only under the lung's "shadow" (voxels that are lung within ``shadow_mm`` above or 10 mm
    below), so the growth follows a basal or juxtapleural tumour into the costophrenic or
    paravertebral recess. A ``rim_mm`` in-plane rim adds the lesion's partial-volume edge.
    A seed flatter than ``min_depth_ratio`` (its craniocaudal extent over the equivalent
    diameter of its widest slice) is not a tumour but the cap of an organ under the lung base
    (spleen, stomach, liver dome) cut tangentially by the slices, and is not grown.
    Own code: no library offers juxtapleural-lesion inclusion.
    """
    from scipy import ndimage

    hu = np.asarray(ct.array)
    sz, sy, sx = _spacing_zyx(ct)
    closed = labels > 0
    additions = closed & ~raw & (hu > threshold_hu)
    if not additions.any():
        return labels
    thick = np.zeros(hu.shape, bool)
    rows, cols = in_plane_box(additions, (1, 1))  # a background frame: every nearest background pixel is in it
    for z in np.nonzero(additions.reshape(hu.shape[0], -1).any(axis=1))[0]:
        depth = ndimage.distance_transform_edt(additions[z, rows, cols], sampling=(sy, sx))
        thick[z, rows, cols] = depth >= seed_thickness_mm
    seeds, n = ndimage.label(thick & (hu > dense_hu))
    if n == 0:
        return labels
    voxel_ml = ct.voxel_volume_mm3 / 1000.0
    sizes = np.bincount(seeds.ravel()) * voxel_ml
    z_up = 1 if float(ct.direction[2, 2]) >= 0 else -1
    shadow = closed.copy()
    for k in range(1, max(int(round(shadow_mm / sz)), 1) + 1):
        if z_up > 0:
            shadow[:-k] |= closed[k:]
        else:
            shadow[k:] |= closed[:-k]
    for k in range(1, max(int(round(10.0 / sz)), 1) + 1):
        if z_up > 0:
            shadow[k:] |= closed[:-k]
        else:
            shadow[:-k] |= closed[k:]
    dense = (hu > dense_hu) & (hu < 200) & body
    out = labels.copy()
    pad = (int(np.ceil(grow_mm / sz)) + 1, int(np.ceil(grow_mm / sy)) + 1, int(np.ceil(grow_mm / sx)) + 1)
    for k, sl in enumerate(ndimage.find_objects(seeds), start=1):
        if sl is None or sizes[k] < min_seed_ml or _depth_ratio(seeds[sl] == k, (sz, sy, sx)) < min_depth_ratio:
            continue
        box = tuple(
            slice(max(s.start - p, 0), min(s.stop + p, dim)) for s, p, dim in zip(sl, pad, hu.shape, strict=True)
        )
        seed = seeds[box] == k
        near = ndimage.distance_transform_edt(~seed, sampling=(sz, sy, sx)) <= grow_mm
        # and within reach_mm (in-plane) of the seed's axial footprint: a tumour continues
        # above/below itself, an organ under the lung base lies beside it
        footprint = ndimage.distance_transform_edt(~seed.any(axis=0), sampling=(sy, sx)) <= reach_mm
        near &= footprint[np.newaxis]
        cc, _ = ndimage.label((dense[box] & near & shadow[box]) | seed)
        ids = np.unique(cc[seed])
        grown = np.isin(cc, ids[ids > 0])
        if rim_mm > 0:
            iters = max(int(round(rim_mm / min(sy, sx))), 1)
            grown |= ndimage.binary_dilation(grown, structure=_IN_PLANE, iterations=iters) & body[box]
        owner = np.bincount(out[box][seed].ravel(), minlength=3)[1:]
        target = out[box]
        target[grown & (target == 0)] = int(np.argmax(owner)) + 1
    return out


def _depth_ratio(seed: np.ndarray, spacing_zyx: tuple[float, float, float]) -> float:
    """Craniocaudal extent of a 3D seed (slices it touches x slice spacing, mm) over the
    equivalent-circle diameter of its largest axial cross-section (mm): about 1 for a
    roughly round lesion, well under 1 for a pancake."""
    sz, sy, sx = spacing_zyx
    per_slice = seed.reshape(seed.shape[0], -1).sum(axis=1)
    depth_mm = np.count_nonzero(per_slice) * sz
    diameter_mm = 2.0 * np.sqrt(per_slice.max() * sy * sx / np.pi)
    return float(depth_mm / diameter_mm)


@dataclass(frozen=True)
class LungStats:
    """Lung volumes of a lung mask, mL."""

    right_ml: float
    left_ml: float

    @property
    def total_ml(self) -> float:
        return self.right_ml + self.left_ml


def lung_stats(mask: Volume) -> LungStats:
    """Right/left lung volumes (mL) of a :func:`lung_mask` result."""
    voxel_ml = mask.voxel_volume_mm3 / 1000.0
    arr = np.asarray(mask.array)
    return LungStats(
        right_ml=float(np.count_nonzero(arr == RIGHT_LUNG) * voxel_ml),
        left_ml=float(np.count_nonzero(arr == LEFT_LUNG) * voxel_ml),
    )


# --------------------------------------------------------------------------------------- breast
