"""Attribution maps in patient space: Volume <-> tensor, resampling, patches and chunked 3D attribution.

A map is always returned as a :class:`~medanomaly.types.Volume` on the grid of the image it
explains (same shape, spacing, origin, direction), so it overlays the original scan in any viewer
and measurements such as "map energy inside the lesion" are taken in patient space.

Example:
    >>> import numpy as np
    >>> from medanomaly.types import Volume
    >>> small = Volume(np.ones((4, 8, 8), np.float32), spacing=(2.0, 2.0, 4.0))
    >>> big = Volume(np.zeros((8, 16, 16), np.float32), spacing=(1.0, 1.0, 2.0), origin=(-0.5, -0.5, -1.0))
    >>> resample_to(small, big).shape
    (8, 16, 16)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medanomaly.errors import InputError
from medanomaly.types import Volume

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: CAM maps are normalised to [0, 1] per call: chunked CAM maps are rescaled by the chunk's score.
_NORMALISED_METHODS = frozenset({"gradcam", "gradcampp"})


def volume_to_tensor(volume: Volume, spatial_dims: int = 3) -> torch.Tensor:
    """``(1, C, Z, Y, X)`` (3D) or ``(1, C, Y, X)`` (2D, one-slice volumes) float32 tensor."""
    import torch

    arr = np.asarray(volume.array, dtype=np.float32)
    arr = arr[np.newaxis] if arr.ndim == 3 else np.moveaxis(arr, -1, 0)  # (C, Z, Y, X)
    if spatial_dims == 2:
        if arr.shape[1] != 1:
            raise InputError(f"a 2D model needs a one-slice image, got {arr.shape[1]} slices")
        arr = arr[:, 0]
    return torch.from_numpy(np.ascontiguousarray(arr))[None]


def map_on_grid(array: np.ndarray, grid: Volume, method: str = "") -> Volume:
    """Wrap a spatial map (``(Z, Y, X)`` or ``(Y, X)`` for one-slice grids) as a Volume on ``grid``."""
    arr = np.asarray(array, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.shape != grid.shape:
        raise ValueError(f"map shape {arr.shape} does not match the grid {grid.shape}")
    meta = {k: v for k, v in grid.meta.items() if k in ("modality", "synthetic", "series_uid", "study_uid")}
    meta["description"] = f"{method} attribution map".strip()
    return Volume(arr, spacing=grid.spacing, origin=grid.origin, direction=grid.direction, meta=meta)


def resample_to(map_volume: Volume, reference: Volume, default: float = 0.0) -> Volume:
    """Resample a scalar map onto ``reference``'s grid (SimpleITK linear; ``default`` outside).

    SimpleITK is used instead of array zooming because it honours origin and direction, so a map
    computed on a cropped, resampled or reoriented model grid lands on the right voxels.
    """
    from medanomaly.preprocess.resample import resample_like

    if map_volume.same_grid(reference):
        return map_volume
    source = map_volume.with_array(np.asarray(map_volume.array, dtype=np.float32))
    return resample_like(source, reference, interpolator="linear", default=float(default))


def crop_patch(volume: Volume, center_mm: Sequence[float], size_zyx: Sequence[int],
               fill: float | None = None) -> Volume:  # fmt: skip
    """A ``size_zyx`` patch of ``volume`` centred on ``center_mm`` (LPS), padded with ``fill``.

    The patch keeps its place in the patient (its origin is the physical position of its first
    voxel), so a map computed on it resamples straight back onto the full scan. ``fill`` defaults
    to the volume minimum (air for CT).
    """
    size = tuple(int(s) for s in size_zyx)
    if len(size) != 3 or min(size) < 1:
        raise InputError(f"patch size must be 3 positive integers (z, y, x), got {size_zyx}")
    centre_xyz = np.rint(volume.physical_to_index(center_mm)).astype(int)
    centre_zyx = centre_xyz[::-1]
    start = [int(c) - s // 2 for c, s in zip(centre_zyx, size, strict=True)]
    from medanomaly.preprocess.resample import crop_zyx

    for st, s, n in zip(start, size, volume.shape, strict=True):
        if min(st + s, n) <= max(st, 0):
            raise InputError(f"patch centre {tuple(round(c, 1) for c in center_mm)} mm lies outside the image")
    fill_value = float(np.min(volume.array)) if fill is None else float(fill)
    return crop_zyx(volume, start, np.add(start, size), fill_value)


def _windows(shape: Sequence[int], chunk: Sequence[int], overlap: float) -> list[tuple[slice, ...]]:
    """Start/stop slices of overlapping windows covering ``shape`` (last window flush with the end)."""
    axes = []
    for n, c in zip(shape, chunk, strict=True):
        c = min(int(c), int(n))
        step = max(1, int(round(c * (1.0 - overlap))))
        starts = list(range(0, max(n - c, 0) + 1, step))
        if starts[-1] != n - c:
            starts.append(n - c)
        axes.append([slice(s, s + c) for s in starts])
    return list(itertools.product(*axes))


def chunked_attribute(model: Any, x: torch.Tensor, method: str, chunk: Sequence[int] | int,
                      overlap: float = 0.25, *, target: int | None = None, layer: str | None = None,
                      output_fn: Callable[[Any], Any] | None = None, **options: Any) -> np.ndarray:  # fmt: skip
    """Attribute a large input window by window, so memory follows the window, not the scan.

    For patch-based and fully convolutional models (a detector scoring "lesion anywhere in this
    window"): each window is explained on its own and the maps are averaged where windows overlap.
    Grad-CAM maps, normalised to [0, 1] per call, are first multiplied by the window's target
    probability so a window without a lesion does not shine as brightly as one with a lesion.
    Peak memory is one window's forward/backward pass plus two float32 copies of the map.

    Args:
        chunk: window size in voxels per spatial axis (an int for all axes).
        overlap: fraction of overlap between neighbouring windows, 0..0.9.
    """
    from medanomaly.explain.methods import attribute, scores

    spatial = tuple(int(s) for s in x.shape[2:])
    size = (int(chunk),) * len(spatial) if isinstance(chunk, int) else tuple(int(c) for c in chunk)
    if len(size) != len(spatial) or min(size) < 1:
        raise InputError(f"chunk must give one positive size per spatial axis {spatial}, got {chunk}")
    if not 0.0 <= overlap <= 0.9:
        raise InputError(f"overlap must be in [0, 0.9], got {overlap}")
    total = np.zeros(spatial, np.float32)
    weight = np.zeros(spatial, np.float32)
    for window in _windows(spatial, size, overlap):
        xw = x[(slice(None), slice(None), *window)]
        part = attribute(model, xw, method, target=target, layer=layer, output_fn=output_fn, **options)
        if method in _NORMALISED_METHODS:
            probs = scores(model, xw, output_fn)
            t = 0 if probs.shape[1] == 1 else (int(probs[0].argmax()) if target is None else int(target))
            part = part * float(probs[0, t])
        total[window] += part
        weight[window] += 1.0
    return total / np.maximum(weight, 1.0)


def explain(model: Any, image: Volume, method: str = "gradcam", *, target: int | None = None,
            layer: str | None = None, preprocess: Callable[[Volume], Volume] | None = None,
            output_fn: Callable[[Any], Any] | None = None, chunk: Sequence[int] | int | None = None,
            overlap: float = 0.25, **options: Any) -> Volume:  # fmt: skip
    """Explanation map of ``model`` on ``image``, as a Volume on ``image``'s grid.

    Args:
        model: a torch module (any callable for ``occlusion``) returning class scores or a map.
        image: the scan as read (HU for CT); the map comes back on this grid.
        method: a name in ``EXPLAINERS`` (gradcam, gradcampp, occlusion, integrated_gradients,
            guided_backprop).
        target: class index to explain (default: the predicted class).
        layer: CAM layer name (default: the model's ``explain_layer`` or its last convolution).
        preprocess: Volume -> Volume the model expects (windowing, resampling, cropping); it must
            keep geometry, so the map is resampled back to ``image`` exactly.
        chunk: explain window by window of this size (voxels) when the input is larger.
        **options: passed to the method (e.g. ``mask_size`` for occlusion, ``n_steps`` for IG).

    Example:
        >>> import torch, numpy as np
        >>> net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.AdaptiveMaxPool3d(1), torch.nn.Flatten())
        >>> vol = Volume(np.random.rand(8, 8, 8).astype(np.float32), spacing=(1, 1, 2))
        >>> explain(net, vol, "gradcam").shape
        (8, 8, 8)
    """
    from medanomaly.explain.methods import attribute, spatial_dims_of

    grid = preprocess(image) if preprocess is not None else image
    if not isinstance(grid, Volume):
        raise InputError("preprocess must return a Volume (keeping geometry)")
    dims = spatial_dims_of(model, default=2 if grid.is_2d else 3)
    x = volume_to_tensor(grid, dims)
    spatial = tuple(x.shape[2:])
    if chunk is not None:
        size = (int(chunk),) * len(spatial) if isinstance(chunk, int) else tuple(chunk)
        if any(s > c for s, c in zip(spatial, size, strict=False)):
            arr = chunked_attribute(model, x, method, size, overlap, target=target, layer=layer,
                                    output_fn=output_fn, **options)  # fmt: skip
            return resample_to(map_on_grid(arr, grid, method), image)
    arr = attribute(model, x, method, target=target, layer=layer, output_fn=output_fn, **options)
    return resample_to(map_on_grid(arr, grid, method), image)


#: A map whose finite values span less than this fraction of their magnitude is flat.
FLAT_RTOL = 1e-6


def is_flat(array: np.ndarray, rtol: float = FLAT_RTOL) -> bool:
    """True when a map shows nothing: no finite value, all zeros, or one constant value (within
    ``rtol`` of its magnitude). Such a map has no peak; overlays and reports say so instead of
    marking one (a plateau's centroid would put a fake "peak" in the image centre).

    Example:
        >>> is_flat(np.zeros((2, 3, 3))), is_flat(np.full((2, 3, 3), 0.4)), is_flat(np.eye(3)[None])
        (True, True, False)
    """
    arr = np.asarray(array, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return True
    top, bottom = float(finite.max()), float(finite.min())
    return top - bottom <= rtol * max(abs(top), abs(bottom)) or top == bottom


def peak_index(array: np.ndarray, rtol: float = 1e-4) -> tuple[int, ...]:
    """Index of a map's maximum; on a plateau (ties within ``rtol`` of the range), the plateau
    voxel nearest the plateau's centroid.

    Occlusion with an occluder larger than the lesion gives a flat top; ``np.argmax`` would return
    its first voxel in memory order (a corner), not its middle.
    """
    arr = np.asarray(array, dtype=np.float64)
    top = float(arr.max())
    span = top - float(arr.min())
    ties = np.argwhere(arr >= top - rtol * span) if span > 0 else np.argwhere(arr == top)
    if len(ties) == 1:
        return tuple(int(v) for v in ties[0])
    centre = ties.mean(axis=0)
    best = ties[int(np.argmin(((ties - centre) ** 2).sum(axis=1)))]
    return tuple(int(v) for v in best)


def peak_mm(map_volume: Volume) -> tuple[float, float, float] | None:
    """LPS position (mm) of the map's maximum (plateau-aware, see :func:`peak_index`); None for a
    flat map (:func:`is_flat`), which has no peak."""
    if is_flat(map_volume.array):
        return None
    zyx = peak_index(map_volume.array)
    return tuple(float(v) for v in map_volume.index_to_physical(np.asarray(zyx[::-1], float)))  # type: ignore[return-value]
