"""Normal-only 2D image sets for anomaly detection: a folder tree or a MedMNIST-style ``.npz``.

Folder layout (PNG, JPEG, BMP, TIFF, or 2D NIfTI/NRRD/DICOM files)::

    ROOT/train/normal/*      normal images only: what the model learns from
    ROOT/val/normal/*        normal images only: thresholds (target false-positive rate), model selection
    ROOT/test/normal/*       normal test images
    ROOT/test/abnormal/*     abnormal test images
    ROOT/test/masks/*        optional: a lesion mask per abnormal image, same file name (or same stem)

A ``train/abnormal`` or ``train/masks`` (or ``val/...``) folder with files is refused: training and
validation are on normal images only.

BMAD's and MVTec AD's layouts are read too (:mod:`medanomaly.data.folder_layouts`).

MedMNIST-style ``.npz``: ``{train,val,test}_images`` (uint8 (N, H, W) or (N, H, W, 3)) and ``{train,val,test}_labels``; ``normal_label`` names the normal class; train and val
images of other labels are **excluded** (counted in :attr:`NormalImageSet.excluded`); an optional
``test_masks`` array (N, H, W) gives pixel truth. 3D images ((N, D, H, W) sets, or a 3D file) are refused.

Images are kept at their own size as (y, x) float32 grey values. Colour (RGB) images are converted
to grey with the ITU-R BT.601 luma weights (0.299 R + 0.587 G + 0.114 B), counted in
:attr:`NormalImageSet.grey_from_rgb`; the anomaly models are 1-channel.

Example:
    >>> grey, colour = to_grey(np.full((1, 2, 2, 3), 100, np.uint8))  # a one-slice RGB picture
    >>> grey.shape, round(float(grey[0, 0]), 3), colour
    ((2, 2), 100.0, True)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medanomaly.data.folder_layouts import IMAGE_SUFFIXES, folder_layout
from medanomaly.errors import InputError
from medanomaly.io.limits import check_least_size
from medanomaly.preprocess.checks import unusable_values
from medanomaly.preprocess.colour import LUMA_WEIGHTS, luma
from medanomaly.types import Volume

log = logging.getLogger(__name__)

__all__ = ["Image2D", "NormalImageSet", "load_normal_images", "to_grey", "IMAGE_SUFFIXES", "LUMA_WEIGHTS"]



@dataclass(frozen=True, eq=False)
class Image2D:
    """One 2D image: ``array`` (y, x) float32 grey; ``mask`` (y, x) bool lesion truth or None; ``path``: its file (a
    folder tree's images; None for an ``.npz`` entry)."""

    name: str
    array: np.ndarray
    abnormal: bool = False
    mask: np.ndarray | None = None
    path: Path | None = None


@dataclass(frozen=True, eq=False)
class NormalImageSet:
    """A normal-only training set with its validation and test images.

    Attributes:
        source: the folder or ``.npz``.
        layout: ``folders``, ``bmad``, ``mvtec`` (:mod:`medanomaly.data.folder_layouts`) or ``npz``.
        train, val: normal images.
        test: normal and abnormal test images (``abnormal`` flag, optional ``mask``).
        grey_from_rgb: how many colour images were converted to grey (luma).
        excluded: train/val images left out because their label is not normal (``npz``), or BMAD's ``valid/Ungood``
            images (labelled anomalies, never used).
        skipped: ``part/name: reason`` of each file left out because it could not be used (unreadable, empty, a 3D
            image, a mask of another size: reported, the rest loaded; ``folders`` only).
    """

    source: Path
    layout: str
    train: tuple[Image2D, ...]
    val: tuple[Image2D, ...]
    test: tuple[Image2D, ...]
    grey_from_rgb: int = 0
    excluded: int = 0
    skipped: tuple[str, ...] = ()


def to_grey(array: np.ndarray) -> tuple[np.ndarray, bool]:
    """A 2D image as (y, x) float32 grey, and whether it was colour (RGB/RGBA, luma weights).

    Accepts (y, x), (1, y, x), (y, x, c) and (1, y, x, c) with c in 1..4 (alpha dropped).

    Raises:
        InputError: a 3D image (several slices) or another channel layout.
    """
    a = np.asarray(array)
    if a.ndim == 4:
        if a.shape[0] != 1:
            raise InputError(f"a 3D image ({a.shape[0]} slices) where a 2D image is expected")
        a = a[0]
    elif a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    elif a.ndim == 3 and a.shape[-1] not in (1, 2, 3, 4):
        raise InputError(f"a 3D image ({a.shape[0]} slices) where a 2D image is expected")
    if a.ndim == 2:
        return a.astype(np.float32), False
    if a.ndim != 3:
        raise InputError(f"not a 2D image (array of shape {np.shape(array)})")
    if a.shape[-1] in (1, 2):  # grey (+ alpha)
        return a[..., 0].astype(np.float32), False
    return luma(a), True


def _read(path: Path, image: Volume | None = None) -> tuple[np.ndarray, bool, Volume]:
    """(grey array, whether it was colour, the volume) of a picture; ``image``: the picture a mask is drawn on."""
    from medanomaly.io import read, read_mask

    volume = read(path) if image is None else read_mask(path, image)
    if not volume.is_2d:
        raise InputError(f"a 3D image ({volume.shape[0]} slices) in a 2D image folder", path)
    check_least_size(volume, path)
    reason = unusable_values(volume.array)  # a NaN picture became an all-zero one: reported and left out now
    if reason:
        raise InputError(reason, path)
    try:
        return (*to_grey(volume.array), volume)
    except InputError as err:
        raise InputError(str(err), path) from None


def _load_folders(root: Path) -> NormalImageSet:
    """Every usable image of the folder tree (ours, BMAD's or MVTec AD's: :func:`folder_layout`); a file that cannot be
    used is logged and left out, as a batch does."""
    layout = folder_layout(root)
    colour = 0
    parts: dict[str, list[Image2D]] = {"train": [], "val": [], "test": []}
    skipped: list[str] = []
    for entry in layout.entries:
        try:
            array, was_rgb, volume = _read(entry.path)
        except InputError as err:
            skipped.append(_skip(root, entry.path, err))
            continue
        colour += was_rgb
        mask = _mask_of(entry.mask, volume, array.shape, root, skipped) if entry.abnormal else None
        parts[entry.split].append(Image2D(entry.name, array, entry.abnormal, mask, entry.path))
    for split in ("train", "val"):
        if not parts[split]:
            raise InputError(f"no usable image in {layout.normal_parts[split]}/ ({len(skipped)} file(s) skipped: "
                             f"{skipped[0]})", root)  # fmt: skip
    return NormalImageSet(root, layout.name, *(tuple(parts[s]) for s in ("train", "val", "test")), grey_from_rgb=colour,
                          excluded=layout.excluded, skipped=tuple(skipped))  # fmt: skip


def _mask_of(path: Path | None, image: Volume, shape: tuple[int, ...], root: Path,
             skipped: list[str]) -> np.ndarray | None:  # fmt: skip
    """The lesion mask of an abnormal image (None: no mask, or one that cannot be used: logged, the image kept)."""
    if path is None:
        return None
    try:
        mask = _read(path, image)[0] > 0
        if mask.shape != shape:
            raise InputError(f"mask {mask.shape} and image {shape} differ in size", path)
    except InputError as err:
        skipped.append(_skip(root, path, err))
        return None
    return mask


def _skip(root: Path, path: Path, err: InputError) -> str:
    """Log a file left out of a folder tree (one line, its path inside the tree, never its content)."""
    where = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
    line = f"{where}: {err.reason}"
    log.warning("skipped %s", line)
    return line


def _load_npz(path: Path, normal_label: int) -> NormalImageSet:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        raise InputError("not a readable .npz file", path) from None
    with data:
        missing = [f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels") if f"{s}_{k}" not in data.files]
        if missing:
            raise InputError(f"not a MedMNIST-style file: missing arrays {missing}", path)
        arrays = {k: np.asarray(data[k]) for k in data.files}
    if arrays["train_images"].ndim == 4 and arrays["train_images"].shape[-1] not in (3, 4):
        raise InputError("3D images (N, D, H, W): this loader takes 2D images", path)
    parts, colour, excluded = {}, 0, 0
    for split in ("train", "val", "test"):
        labels = arrays[f"{split}_labels"].reshape(len(arrays[f"{split}_labels"]), -1)[:, 0]
        normal = labels == normal_label
        test_masks = arrays.get("test_masks") if split == "test" else None
        items = []
        for i, image in enumerate(arrays[f"{split}_images"]):
            if split != "test" and not normal[i]:
                excluded += 1
                continue
            grey, was_rgb = to_grey(image)
            colour += was_rgb
            mask = None if test_masks is None or normal[i] else np.asarray(test_masks[i]) > 0
            items.append(Image2D(f"{split}#{i}", grey, not bool(normal[i]), mask))
        parts[split] = tuple(items)
    if not parts["train"] or not parts["val"]:
        raise InputError(f"no normal (label {normal_label}) images in the train or val split", path)
    return NormalImageSet(path, "npz", parts["train"], parts["val"], parts["test"], colour, excluded)


def load_normal_images(source: str | Path, normal_label: int = 0) -> NormalImageSet:
    """Read a normal-only 2D image set (folder tree or MedMNIST-style ``.npz``; see the module docstring).

    Args:
        source: the root folder or the ``.npz`` file.
        normal_label: the label index of normal images in an ``.npz`` (ignored for folders).

    Raises:
        InputError: missing or empty parts, lesion images or masks among training/validation images,
            a 3D image, or a mask whose size differs from its image (one line naming the file).
    """
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".npz":
        return _load_npz(source, normal_label)
    if not source.is_dir():
        raise InputError("2D anomaly data not found (a folder with train/normal, ... or a .npz file)", source)
    return _load_folders(source)
