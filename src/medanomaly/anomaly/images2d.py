"""2D images on the common grid (``data.domain: folder2d``): normal-only image folders or MedMNIST-style
``.npz`` (:mod:`medanomaly.data.image_folders`) for the same anomaly methods as the 3D slices.

Each image (1-channel; colour converted to grey with luma weights) is scaled to 0..1 and resized to
``size x size`` pixels. Scaling (``data.intensity``): ``dataset`` (default) maps the 0.5th-99.5th
percentiles of all *training* pixels to 0..1 for every image (a fixed window, recorded in ``model.json``:
a bright lesion does not rescale the normal tissue around it); ``image`` uses each image's own
percentiles (:func:`medanomaly.preprocess.intensity.percentile_unit_array`; for sources whose exposure
varies, but a lesion covering more than 0.5 % of the image then rescales the rest); the region is the whole
image (no organ mask) and every image has relative height 0 (one normative bin). Maps come back on
the image's own grid, as a one-slice volume with the input's geometry.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from medanomaly.data.image_folders import Image2D, NormalImageSet, load_normal_images, to_grey
from medanomaly.errors import InputError
from medanomaly.types import Volume

__all__ = ["image_set", "intensity_range", "to_grid", "stack_images", "folder_split", "map_to_image", "predict_image",
           "window_flags"]


@lru_cache(maxsize=2)
def image_set(source: str, normal_label: int) -> NormalImageSet:
    """The image set of a run's ``data.folder`` (cached: train, val and evaluate read it once)."""
    return load_normal_images(source, normal_label)


#: A training image whose 99.5th-percentile grey value is this many times the training set's median one has
#: another bit depth or scaling (16-bit among 8-bit pictures): the dataset window would squash all the others.
#: (A much darker image is left alone: it only loses contrast itself.)
SCALE_MISMATCH = 10.0
#: A test image with more than this share of its pixels outside the training window (widened by half its
#: width on each side) is flagged ``intensity_outside_training_window``: its call is not to be trusted.
OUTSIDE_WINDOW_SHARE = 0.25


def intensity_range(data: Any) -> list[float] | None:
    """``[low, high]``: the 0.5th and 99.5th percentiles of all training pixels (``data.intensity:
    dataset``), or None (``image``: each image's own percentiles).

    Raises:
        InputError: a training image on another grey scale than the rest (:data:`SCALE_MISMATCH`), named.
    """
    if data.intensity != "dataset":
        return None
    found = image_set(data.folder, data.normal_label)
    _refuse_scale_mismatch(found)
    pixels = np.concatenate([im.array.ravel() for im in found.train])
    low, high = np.percentile(pixels, [0.5, 99.5])
    return [float(low), float(high) if high > low else float(low) + 1.0]


def _refuse_scale_mismatch(found: NormalImageSet) -> None:
    """One line naming the first training image whose grey scale is :data:`SCALE_MISMATCH` times the
    median image's (a 16-bit picture among 8-bit ones would squash every other image into a few grey levels)."""
    tops = np.array([float(np.percentile(im.array, 99.5)) for im in found.train])
    typical = float(np.median(tops))
    if typical <= 0:
        return
    for im, top in zip(found.train, tops, strict=True):
        if top > SCALE_MISMATCH * typical:
            where = im.path or found.source
            raise InputError(f"training image {im.name} reaches grey value {top:.0f} where the training images "
                             f"typically reach {typical:.0f} (another bit depth or scaling): convert or remove it, "
                             "or set data.intensity: image", where)  # fmt: skip


def window_flags(array: np.ndarray, window: list[float] | None) -> tuple[str, ...]:
    """``("intensity_outside_training_window",)`` when more than :data:`OUTSIDE_WINDOW_SHARE` of a grey
    image's pixels lie outside the run's training window widened by half its width on each side (another
    modality, bit depth or exposure); ``()`` otherwise or without a dataset window."""
    if window is None:
        return ()
    low, high = window
    margin = 0.5 * (high - low)
    a = np.asarray(array, np.float32)
    outside = float(np.mean((a < low - margin) | (a > high + margin)))
    return ("intensity_outside_training_window",) if outside > OUTSIDE_WINDOW_SHARE else ()


def to_grid(array: np.ndarray, size: int, window: list[float] | None = None) -> np.ndarray:
    """A (y, x) grey image scaled to 0..1 (``window`` [low, high], or its own percentiles when None)
    and resized to (size, size), float32."""
    from skimage.transform import resize

    from medanomaly.preprocess.intensity import percentile_unit_array

    a = np.asarray(array, np.float32)
    scaled = percentile_unit_array(a) if window is None else np.clip((a - window[0]) / (window[1] - window[0]), 0, 1)
    return resize(scaled, (size, size), order=1, anti_aliasing=True).astype(np.float32)


def stack_images(images: tuple[Image2D, ...] | list[Image2D], size: int,
                 window: list[float] | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """Images on the common grid as a split dict (``images``, ``masks`` all True, ``rel_z`` 0)."""
    grid = np.stack([to_grid(im.array, size, window) for im in images])
    return {"images": grid, "masks": np.ones(grid.shape, bool), "rel_z": np.zeros(len(grid), np.float32)}


def folder_split(data: Any, part: str) -> dict[str, np.ndarray]:
    """The normal ``train`` or ``val`` images of ``data.folder`` on the common grid (no augmentation)."""
    from medanomaly.anomaly.data import refuse_lesion_image

    found = image_set(data.folder, data.normal_label)
    images = getattr(found, part)
    for im in images:  # a file named like a mask or a lesion case, or with a mask beside it
        if im.path is not None:
            refuse_lesion_image(im.path)
    return stack_images(images, data.size, intensity_range(data))


def map_to_image(common_map: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A (size, size) common-grid map resized back to the image's (y, x) grid, float32."""
    from skimage.transform import resize

    return resize(common_map, shape, order=1).astype(np.float32)


def predict_image(method: Any, volume: Volume, size: int, sigma: float,
                  window: list[float] | None = None) -> tuple[Volume, float, dict[str, Any], np.ndarray]:  # fmt: skip
    """Anomaly map of one 2D image on its own grid (a one-slice float32 volume), its image score
    (99.9th percentile of the map), the common-grid split and map; ``window`` is the run's
    ``extra.domain.intensity_range`` (None: the image's own percentiles)."""
    from medanomaly.anomaly.pipeline import smooth, volume_score

    if not volume.is_2d:
        raise InputError(f"the anomaly model was trained on 2D images, got a 3D volume ({volume.shape[0]} slices)")
    grey, was_rgb = to_grey(volume.array)
    split = stack_images([Image2D("input", grey)], size, window)
    maps = smooth(method.score(split["images"], split["masks"], split["rel_z"]), sigma)
    full = map_to_image(maps[0], grey.shape)
    grid = Volume(full[None], spacing=volume.spacing, origin=volume.origin, direction=volume.direction,
                  meta={"units": "anomaly score",
                        **({"description": "input RGB converted to grey (ITU-R BT.601 luma)"} if was_rgb else {})})  # fmt: skip
    return grid, volume_score(maps, split["masks"]), split, maps
