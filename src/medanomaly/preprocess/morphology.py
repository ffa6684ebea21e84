"""Per-slice binary erosion, dilation and opening by an in-plane disk, exact and fast.

SciPy's ``ndimage.binary_erosion`` / ``binary_dilation`` visit every element of the structuring
element at every voxel: the body mask's 3 mm opening (an 11 x 11 disk) of a 61 x 512 x 512 CT took
2.9 s, a third of a whole lung mask. A disk is *row-convex*: each of its
rows is one run of pixels centred on the middle column. So a voxel survives erosion exactly when,
for every row offset ``dy`` of the disk, the image row ``y + dy`` is foreground for the disk row's
half width on both sides of ``x``; that is one comparison per disk row against the run lengths of
foreground along x (computed once with a cumulative maximum). Dilation is the same with the
distance to the nearest foreground pixel along x. The cost is one pass per disk row instead of
one per disk pixel (11 instead of 81 for the body opening), on the foreground's bounding box.
``bench/bench_inplane_morphology.py`` (same process, identical masks, two runs): that opening 4.6-5.1x
faster, the brain mask's 8 mm erosion 4.3-8.5x and 10 mm dilation 11.4-12.7x, the lung mask's 20 mm closing
1.5-1.7x against the per-slice distance transforms it used; a 3 x 3 cross gains nothing (SciPy stays there).

Results equal SciPy's with ``border_value=0`` (outside the image is background), for any
structuring element that is point-symmetric with centred, contiguous rows (every disk or ellipse
built here; :func:`elliptic_disk`). Own code because neither SciPy nor scikit-image decomposes a
disk this way (scikit-image's ``isotropic_erosion`` thresholds a distance transform, with a different
disk), and OpenCV is not a dependency. ``tests/unit/preprocess/test_morphology.py`` checks
equality with SciPy on random masks and disks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

__all__ = ["elliptic_disk", "physical_disk", "erode_in_plane", "dilate_in_plane", "open_in_plane", "in_plane_box"]

_SLAB_PIXELS = 2**22  # pixels per pass: about 8 MiB per int16 temporary (a few live at once)


def elliptic_disk(radius_mm: float, sy: float, sx: float) -> np.ndarray:
    """In-plane elliptic disk ``(1, 2 ry + 1, 2 rx + 1)`` of ``radius_mm`` (mm) for a (z, y, x) array.

    The radii in pixels are ``radius_mm / spacing`` rounded (at least 1); the disk holds the pixels
    with ``(dy / ry)^2 + (dx / rx)^2 <= 1``.
    """
    ry, rx = max(int(round(radius_mm / sy)), 1), max(int(round(radius_mm / sx)), 1)
    yy, xx = np.mgrid[-ry : ry + 1, -rx : rx + 1]
    return (((yy / ry) ** 2 + (xx / rx) ** 2) <= 1.0)[np.newaxis]


def physical_disk(radius_mm: float, sy: float, sx: float) -> np.ndarray:
    """In-plane disk ``(1, 2 ry + 1, 2 rx + 1)`` of the pixels within ``radius_mm`` (mm) of the centre, on pixels of
    ``sy`` x ``sx`` mm; ``ry``, ``rx`` = ``radius_mm / spacing`` rounded up (outer rows may be empty).

    Distances are compared as SciPy's Euclidean distance transform computes them (square roots), so a closing or
    opening with this disk equals one thresholding that transform at ``radius_mm``, ties included (0.5 mm on 0.1 mm
    pixels: 81 pixels; comparing squared distances would take 73, since (3 x 0.1)^2 + (4 x 0.1)^2 rounds above 0.25).

    Example:
        >>> physical_disk(1.5, 0.8, 0.8)[0].astype(int)
        array([[0, 0, 0, 0, 0],
               [0, 1, 1, 1, 0],
               [0, 1, 1, 1, 0],
               [0, 1, 1, 1, 0],
               [0, 0, 0, 0, 0]])
    """
    ry, rx = max(int(np.ceil(radius_mm / sy)), 0), max(int(np.ceil(radius_mm / sx)), 0)
    yy, xx = np.mgrid[-ry : ry + 1, -rx : rx + 1]
    return (np.sqrt((yy * sy) ** 2 + (xx * sx) ** 2) <= radius_mm)[np.newaxis]


def _row_half_widths(structure: np.ndarray) -> np.ndarray:
    """Half width of each row of an in-plane structuring element (-1 for an empty row).

    Raises:
        ValueError: not 2D (or ``(1, ny, nx)``), an even size, not point-symmetric, or a row that
            is not one run centred on the middle column.
    """
    s = np.asarray(structure, bool)
    if s.ndim == 3 and s.shape[0] == 1:
        s = s[0]
    if s.ndim != 2 or s.shape[0] % 2 == 0 or s.shape[1] % 2 == 0:
        raise ValueError(f"in-plane structuring element must be 2D with odd sizes, got shape {structure.shape}")
    if not np.array_equal(s, s[::-1, ::-1]) or not s.any():
        raise ValueError("in-plane structuring element must be non-empty and point-symmetric")
    centre = s.shape[1] // 2
    widths = np.full(s.shape[0], -1, np.int32)
    for i, row in enumerate(s):
        cols = np.flatnonzero(row)
        if cols.size == 0:
            continue
        half = centre - int(cols[0])
        if half < 0 or int(cols[-1]) != centre + half or cols.size != 2 * half + 1:
            raise ValueError(f"row {i} of the structuring element is not one run centred on its middle column")
        widths[i] = half
    return widths


def _index_type(width: int) -> tuple[type, int]:
    """Integer type for run lengths along a row of ``width`` pixels, and its "no foreground in this row" value
    (int16 halves the memory traffic of the cumulative passes; ``far`` plus ``width`` must not overflow)."""
    return (np.int16, 2**14) if width < 2**14 else (np.int32, 2**30)


def _ones_run_half_width(mask: np.ndarray) -> np.ndarray:
    """Per pixel, the largest ``w`` such that the row holds foreground on ``[x - w, x + w]`` (-1 on background)."""
    kind, _ = _index_type(mask.shape[-1])
    idx = np.arange(mask.shape[-1], dtype=kind)

    def ones_up_to(m: np.ndarray) -> np.ndarray:  # foreground run ending at x, x included (0 on background)
        last_zero = np.where(m, kind(-1), idx)
        np.maximum.accumulate(last_zero, axis=-1, out=last_zero)
        return idx - last_zero

    return np.minimum(ones_up_to(mask), ones_up_to(mask[..., ::-1])[..., ::-1]) - 1


def _nearest_one_along_x(mask: np.ndarray) -> np.ndarray:
    """Per pixel, the distance in pixels along x to the nearest foreground pixel of its row (large if none)."""
    kind, far = _index_type(mask.shape[-1])
    idx = np.arange(mask.shape[-1], dtype=kind)

    def back_to_one(m: np.ndarray) -> np.ndarray:  # x minus the last foreground column at or before x
        last_one = np.where(m, idx, kind(-far))
        np.maximum.accumulate(last_one, axis=-1, out=last_one)
        return idx - last_one

    return np.minimum(back_to_one(mask), back_to_one(mask[..., ::-1])[..., ::-1])


def _structure_rows(widths: np.ndarray, ny: int) -> Iterator[tuple[int, slice, slice]]:
    """Each non-empty structure row within reach of ``ny`` image rows: its half width, the output rows ``y`` and
    the source rows ``y + dy`` that both lie inside the image."""
    centre = widths.size // 2
    for i, width in enumerate(widths):
        dy = i - centre
        if width >= 0 and abs(dy) < ny:
            yield int(width), slice(max(0, -dy), ny - max(0, dy)), slice(max(0, dy), ny + min(0, dy))


def in_plane_box(mask: np.ndarray, margin: tuple[int, int] = (0, 0)) -> tuple[slice, slice] | None:
    """Rows and columns (the last two axes) holding foreground on any slice, widened by ``margin`` pixels and
    clipped to the image; None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=-1).reshape(-1, mask.shape[-2]).any(axis=0))
    cols = np.flatnonzero(mask.any(axis=-2).reshape(-1, mask.shape[-1]).any(axis=0))
    if rows.size == 0:
        return None
    (my, mx), (ny, nx) = margin, mask.shape[-2:]
    return (slice(max(int(rows[0]) - my, 0), min(int(rows[-1]) + my + 1, ny)),
            slice(max(int(cols[0]) - mx, 0), min(int(cols[-1]) + mx + 1, nx)))  # fmt: skip


def _by_slabs(mask: np.ndarray, structure: np.ndarray, grow: bool,
              rows_op: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:  # fmt: skip
    """Apply ``rows_op(slab, half_widths)`` to the mask's in-plane box (widened by the structure when the result
    ``grow``s past the mask), a slab of slices at a time, so the integer temporaries stay near ``_SLAB_PIXELS``
    whatever the number of slices; background outside the box."""
    mask = np.asarray(mask, bool)
    widths = _row_half_widths(structure)
    out = np.zeros(mask.shape, bool)
    box = in_plane_box(mask, (widths.size // 2, int(widths.max())) if grow else (0, 0))
    if box is None:
        return out
    stack, result = mask.reshape(-1, *mask.shape[-2:]), out.reshape(-1, *mask.shape[-2:])
    rows, cols = box
    step = max(1, _SLAB_PIXELS // ((rows.stop - rows.start) * (cols.stop - cols.start)))
    for z in range(0, stack.shape[0], step):
        result[z : z + step, rows, cols] = rows_op(stack[z : z + step, rows, cols], widths)
    return out


def _erode_rows(slab: np.ndarray, widths: np.ndarray) -> np.ndarray:
    ny, centre = slab.shape[-2], widths.size // 2
    if any(abs(i - centre) >= ny for i in np.flatnonzero(widths >= 0)):
        return np.zeros(slab.shape, bool)  # a structure row reaches past every image row: outside is background
    half_run = _ones_run_half_width(slab)
    eroded = np.ones(slab.shape, bool)
    for width, dst, src in _structure_rows(widths, ny):
        eroded[..., dst, :] &= half_run[..., src, :] >= width
        eroded[..., : dst.start, :] = False  # rows whose neighbour ``y + dy`` is outside the image
        eroded[..., dst.stop :, :] = False
    return eroded


def _dilate_rows(slab: np.ndarray, widths: np.ndarray) -> np.ndarray:
    nearest = _nearest_one_along_x(slab)
    dilated = np.zeros(slab.shape, bool)
    for width, dst, src in _structure_rows(widths, slab.shape[-2]):
        dilated[..., dst, :] |= nearest[..., src, :] <= width
    return dilated


def erode_in_plane(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """Binary erosion of every slice (the last two axes) by an in-plane ``structure``; outside is background.

    Equal to ``ndimage.binary_erosion(mask, structure)`` for a ``(1, ny, nx)`` or ``(ny, nx)`` structure that
    is point-symmetric with centred, contiguous rows (any disk).
    """
    return _by_slabs(mask, structure, False, _erode_rows)


def dilate_in_plane(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """Binary dilation of every slice by an in-plane ``structure`` (same conditions as :func:`erode_in_plane`)."""
    return _by_slabs(mask, structure, True, _dilate_rows)


def open_in_plane(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """Binary opening (erosion, then dilation) of every slice by an in-plane ``structure``: removes the parts
    of the foreground the structure does not fit in. Equal to ``ndimage.binary_opening(mask, structure)``."""
    return dilate_in_plane(erode_in_plane(mask, structure), structure)
