"""Model-input resize: an image to a fixed number of voxels, keeping the physical box it covers.

Classifiers and fusion models take a fixed array size, whatever the scan's spacing. This is the
one resize of the package: :func:`resize_array` works on channel-first arrays (the hot path of
data loaders), :func:`resize_to_shape` on a Volume (spacing and origin updated so the resized
voxels cover the same box, ``align_corners=False``: a map computed on it resamples straight back
onto the scan), and :func:`channels_first` turns the result into the network's ``(C, *size)``.

The interpolation is ``torch.nn.functional.interpolate`` (bilinear with antialiasing, i.e. area
averaging when shrinking, for 2D; trilinear for 3D), the operator the classifiers were trained
with; torch is imported only when a resize runs.

Example:
    >>> import numpy as np
    >>> from medanomaly.types import Volume
    >>> v = Volume(np.zeros((1, 40, 60), np.float32), spacing=(0.5, 0.5, 1.0))
    >>> out = resize_to_shape(v, (20, 30))
    >>> out.shape, out.spacing
    ((1, 20, 30), (1.0, 1.0, 1.0))
    >>> channels_first(out, 2).shape
    (1, 20, 30)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from medanomaly.errors import InputError
from medanomaly.types import Volume

__all__ = ["MAX_VOXELS", "voxel_count", "resize_array", "resize_array_numpy", "resize_to_shape", "channels_first"]

#: The largest model input a resize may produce, and a config may ask for (voxels per image and channel).
MAX_VOXELS = 2**26


def voxel_count(shape: Sequence[int]) -> int:
    """Voxels of an image of ``shape``, exact (Python integers: ``np.prod(..., dtype=np.int64)`` wrapped [2^40, 2^40]
    to 0, under every limit, and raised OverflowError for a size of 10^30).

    Example:
        >>> voxel_count([2**40, 2**40]) > MAX_VOXELS
        True
    """
    return math.prod(int(s) for s in shape)


def resize_array(array: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize a channel-first array (C, *spatial) to ``size`` (y, x) or (z, y, x), float32.

    Channels are resized independently; an array already of that size comes back unchanged.
    Without torch (an inference-only install) :func:`resize_array_numpy` gives the same values.
    """
    size = tuple(int(s) for s in size)
    if tuple(array.shape[1:]) == size:
        return np.ascontiguousarray(array, dtype=np.float32)
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return resize_array_numpy(array, size)
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    if len(size) == 2:
        out = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True)
    elif len(size) == 3:
        out = F.interpolate(t, size=size, mode="trilinear", align_corners=False)
    else:
        raise ValueError(f"size must be 2D or 3D, got {size}")
    return out[0].numpy()


def _axis_weights(n_in: int, n_out: int, antialias: bool) -> np.ndarray:
    """(n_out, n_in) interpolation weights of torch's linear resize (align_corners=False): the
    antialiased triangle filter of ``F.interpolate(antialias=True)`` or plain linear."""
    scale = n_in / n_out
    w = np.zeros((n_out, n_in), np.float64)
    if antialias:
        support = scale if scale >= 1.0 else 1.0
        inv = 1.0 / scale if scale >= 1.0 else 1.0
        for i in range(n_out):
            centre = scale * (i + 0.5)
            lo = max(int(centre - support + 0.5), 0)
            hi = min(int(centre + support + 0.5), n_in)
            j = np.arange(lo, hi)
            row = np.clip(1.0 - np.abs((j - centre + 0.5) * inv), 0.0, None)
            w[i, lo:hi] = row / row.sum() if row.sum() > 0 else row
        return w
    src = np.maximum((np.arange(n_out) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = src - i0
    np.add.at(w, (np.arange(n_out), i0), 1.0 - lam)
    np.add.at(w, (np.arange(n_out), i1), lam)
    return w


def resize_array_numpy(array: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """:func:`resize_array` in NumPy (no torch): separable weights of torch's bilinear
    (antialiased) and trilinear resize; equal to torch's within float32 rounding."""
    size = tuple(int(s) for s in size)
    if len(size) not in (2, 3):
        raise ValueError(f"size must be 2D or 3D, got {size}")
    out = np.asarray(array, np.float64)
    for axis, n in enumerate(size, start=1):
        w = _axis_weights(out.shape[axis], n, antialias=len(size) == 2)
        out = np.moveaxis(np.tensordot(w, np.moveaxis(out, axis, 0), axes=1), 0, axis)
    return np.ascontiguousarray(out, dtype=np.float32)


def channels_first(volume: Volume, spatial_dims: int) -> np.ndarray:
    """The network's view of a Volume: ``(C, y, x)`` for a 2D model (one slice), else ``(C, z, y, x)``."""
    arr = np.asarray(volume.array)
    arr = np.moveaxis(arr, -1, 0) if arr.ndim == 4 else arr[np.newaxis]
    if spatial_dims == 2:
        if arr.shape[1] != 1:
            raise InputError(f"a 3D image of shape {tuple(arr.shape[1:])} cannot feed a 2D model")
        arr = arr[:, 0]
    return np.ascontiguousarray(arr, dtype=np.float32)


def resize_to_shape(volume: Volume, size: Sequence[int]) -> Volume:
    """Resize a Volume to ``size`` voxels, (y, x) for a 2D model or (z, y, x); float32.

    The output covers the same physical box: spacing scales by ``old / new`` voxels per axis and
    the first voxel centre sits half a new voxel inside the box. Components are kept.

    Raises:
        InputError: a 2D ``size`` for a volume with more than one slice.
    """
    size = tuple(int(s) for s in size)
    if len(size) not in (2, 3) or min(size) < 1:
        raise InputError(f"resize: size must be 2 or 3 positive ints, got {list(size)}")
    data = resize_array(channels_first(volume, len(size)), size)  # (C, *size)
    zyx = (1, *size) if len(size) == 2 else size
    data = data.reshape((data.shape[0], *zyx))
    data = data[0] if volume.array.ndim == 3 else np.moveaxis(data, 0, -1)
    ratio = np.asarray(volume.shape[::-1], float) / np.asarray(zyx[::-1], float)  # x, y, z
    spacing = tuple(float(s) for s in np.asarray(volume.spacing) * ratio)
    origin = tuple(float(o) for o in volume.index_to_physical(0.5 * ratio - 0.5))
    return Volume(data, spacing=spacing, origin=origin, direction=volume.direction, meta=dict(volume.meta))
