"""BUSI (Breast Ultrasound Images, Al-Dhabyani et al. 2020): PNG images with PNG lesion masks.

The public release is laid out as::

    Dataset_BUSI_with_GT/
      benign/     benign (1).png, benign (1)_mask.png[, benign (1)_mask_1.png ...]
      malignant/  malignant (1).png, malignant (1)_mask.png ...
      normal/     normal (1).png, normal (1)_mask.png (empty masks)

Each ``_mask*.png`` outlines one lesion (white on black); a second lesion of the same image has
its own ``_mask_1.png``. Every lesion takes its folder's class (``benign`` or ``malignant``;
BUSI has no "uncertain" class); ``normal`` images have no lesion.

Two things the release does not give, and what this loader does about them:

* **No pixel spacing.** Images are stored as 8-bit PNG without a scale; the loader uses
  ``pixel_mm`` (default 1.0, and ``spacing_known=False`` in each image's attributes), so
  "mm" boxes of BUSI are pixels unless you know the scale.
* **No patient ids** (600 women, 780 images): each image is its own patient unless you pass
  ``patients`` (a CSV ``key,patient_id`` with keys like ``benign (12)``). Several images of one
  woman may then sit in different splits, which flatters held-out numbers; say so when reporting.

``busi_lesions`` returns a :class:`~medanomaly.data.lesions2d.LesionSet` (detection);
``busi`` the whole images labelled normal / benign / malignant (classification).

Example:
    >>> parse_name("benign (12)_mask_1.png")
    ('benign', 12, 1)
    >>> parse_name("malignant (3).png")
    ('malignant', 3, None)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medanomaly.data.bounds import Channels, Fraction, ImageSize, Millimetres, Seed, checked
from medanomaly.data.arrays import LabelledImages
from medanomaly.data.lesions2d import CLASSES, LesionImage, LesionSet, lesion_from_mask
from medanomaly.errors import InputError
from medanomaly.io.tables import read_csv
from medanomaly.registry import DATASETS
from medanomaly.types import Volume

__all__ = ["FOLDERS", "load_busi", "load_busi_lesions", "parse_name"]

FOLDERS = ("benign", "malignant", "normal")
_NAME = re.compile(r"^(benign|malignant|normal) \((\d+)\)(?:_mask(?:_(\d+))?)?\.png$", re.IGNORECASE)


def parse_name(file_name: str) -> tuple[str, int, int | None] | None:
    """``(class, number, mask index)`` of a BUSI file name (mask index 0 for ``_mask``, None for
    the image itself), or None for a file that is not part of the release."""
    m = _NAME.match(file_name)
    if not m:
        return None
    if "_mask" not in file_name.lower():
        return m.group(1).lower(), int(m.group(2)), None
    return m.group(1).lower(), int(m.group(2)), int(m.group(3) or 0)


def _dataset_root(root: Path) -> Path:
    for candidate in (root / "Dataset_BUSI_with_GT", root):
        if any((candidate / f).is_dir() for f in FOLDERS):
            return candidate
    raise InputError("not a BUSI folder (no Dataset_BUSI_with_GT/ or benign/ malignant/ normal/)", root)


def _read_grey(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"), dtype=np.float32)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise InputError(f"unreadable PNG ({exc.__class__.__name__})", path) from None


def _read_mask(path: Path) -> np.ndarray:
    a = _read_grey(path)
    return a > (a.max() / 2.0) if a.max() > 0 else np.zeros(a.shape, dtype=bool)


def _read_patients(path: str | Path | None) -> dict[str, str]:
    if path is None:
        return {}
    path = Path(path)
    with read_csv(path, "patients CSV") as reader:  # a missing file: "patients CSV not found"
        if not {"key", "patient_id"} <= set(reader.fieldnames or []):
            raise InputError("patients CSV needs the columns key,patient_id", path)
        return {r["key"].strip(): r["patient_id"].strip() for r in reader}


def _load_one(folder: Path, cls: str, number: int, masks: dict[int, Path], pixel_mm: float | None,
              patient: str) -> LesionImage:
    key = f"{cls} ({number})"
    grey = _read_grey(folder / f"{key}.png")
    meta = {"modality": "US", "source_format": "png", "units": "a.u. (8-bit grey)"}
    image = Volume(grey[None], spacing=(pixel_mm or 1.0, pixel_mm or 1.0, 1.0), meta=meta)
    lesions = []
    for index in sorted(masks):
        mask = _read_mask(masks[index])
        if mask.shape != grey.shape:
            raise InputError(f"mask {masks[index].name} is {mask.shape[1]} x {mask.shape[0]} px, the image "
                             f"{grey.shape[1]} x {grey.shape[0]}", folder)
        if cls == "normal":
            if mask.any():
                raise InputError(f"normal image with a non-empty mask {masks[index].name}", folder)
            continue
        if mask.any():
            lesions.append(lesion_from_mask(image, mask, cls, "mass", {"mask_file": masks[index].name}))
    if cls != "normal" and not lesions:
        raise InputError("no lesion in its mask(s)", folder / f"{key}.png")
    return LesionImage(image, tuple(lesions), patient, key, attributes={"spacing_known": pixel_mm is not None,
                                                                        "busi_class": cls})


def _scan(folder: Path, cls: str) -> tuple[dict[int, Path], dict[int, dict[int, Path]]]:
    images: dict[int, Path] = {}
    masks: dict[int, dict[int, Path]] = {}
    for path in folder.glob("*.png"):
        parsed = parse_name(path.name)
        if parsed is None or parsed[0] != cls:
            continue
        if parsed[2] is None:
            images[parsed[1]] = path
        else:
            masks.setdefault(parsed[1], {})[parsed[2]] = path
    return images, masks


@DATASETS.register("busi_lesions")
@checked
def load_busi_lesions(
    root: str | Path,
    pixel_mm: Millimetres | None = None,
    patients: str | Path | None = None,
    include_normal: bool = True,
    class_names: Sequence[str] = CLASSES,
    val: Fraction = 0.15,
    test: Fraction = 0.15,
    seed: Seed = 0,
) -> LesionSet:
    """BUSI images with their lesion masks and boxes, split by patient (see the module docstring).

    Args:
        root: ``Dataset_BUSI_with_GT`` or the folder holding it.
        pixel_mm: pixel size in mm if known (else 1.0, marked ``spacing_known=False``).
        patients: optional CSV ``key,patient_id`` grouping images of one woman.
        include_normal: keep the ``normal`` images (no lesions).
        class_names: lesion classes, least to most severe.
        val, test, seed: patient-level split fractions and seed.

    Returns:
        A :class:`~medanomaly.data.lesions2d.LesionSet`; an unreadable image or mask, a mask of
        another size, or an image without its mask is reported in ``skipped``; the rest is loaded.

    Raises:
        InputError: not a BUSI folder, or no image could be loaded.
    """
    base = _dataset_root(Path(root))
    patient_of = _read_patients(patients)
    items, skipped = [], []
    for cls in FOLDERS if include_normal else FOLDERS[:2]:
        folder = base / cls
        if not folder.is_dir():
            continue
        images, masks = _scan(folder, cls)
        for number in sorted(images):
            key = f"{cls} ({number})"
            if number not in masks:
                skipped.append(f"{key}: no mask file")
                continue
            try:
                items.append(_load_one(folder, cls, number, masks[number], pixel_mm,
                                       patient_of.get(key, f"busi-{cls}-{number}")))
            except InputError as exc:
                skipped.append(f"{key}: {exc.reason}")
        skipped += [f"{cls} ({n}): mask without an image" for n in sorted(set(masks) - set(images))]
    if not items:
        raise InputError("no BUSI image could be loaded" + (f" ({skipped[0]})" if skipped else ""), base)
    return LesionSet(tuple(items), tuple(class_names), "busi", skipped=tuple(skipped)).with_patient_splits(
        val=val, test=test, seed=seed)


@DATASETS.register("busi")
@checked
def load_busi(
    root: str | Path,
    class_names: Sequence[str] | None = None,
    image_size: ImageSize = (128, 128),
    channels: Channels = 1,
    patients: str | Path | None = None,
    val: Fraction = 0.15,
    test: Fraction = 0.15,
    seed: Seed = 0,
) -> LabelledImages:
    """BUSI whole images for classification: ``normal`` / ``benign`` / ``malignant`` (default order),
    split by patient (each image its own patient unless ``patients`` is given)."""
    from medanomaly.data.lesion_samples import image_level_set

    names = tuple(class_names or ("normal", "benign", "malignant"))
    lesions = load_busi_lesions(root, patients=patients, include_normal="normal" in names, val=val, test=test,
                                seed=seed)
    return image_level_set(lesions, names, image_size, channels)
