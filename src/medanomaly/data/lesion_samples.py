"""Classification samples from annotated 2D images: lesion crops and whole images.

A :class:`~medanomaly.data.lesions2d.LesionSet` (phantoms, INbreast, BUSI, CBIS-DDSM) feeds a
classifier in two ways, both keeping each image's patient and split:

* :func:`lesion_crops`: one square crop per lesion, labelled with the lesion's class (the second
  stage of a detect-then-classify pipeline);
* :func:`image_level_set`: one sample per image, labelled with its most severe lesion class
  (``normal`` when it has none).

Example:
    >>> from medanomaly.synth.ultrasound import make_us_cohort
    >>> crops = lesion_crops(make_us_cohort(6, (96, 96), seed=1, normal_fraction=0.0), (32, 32))
    >>> crops.images.shape[1:], crops.synthetic
    ((1, 32, 32), True)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medanomaly.data.arrays import LabelledImages, label_index, to_model_array
from medanomaly.data.lesions2d import LesionSet
from medanomaly.errors import InputError, about_file

__all__ = ["image_level_set", "lesion_crops"]


def lesion_crops(
    lesions: LesionSet,
    image_size: Sequence[int] = (64, 64),
    margin: float = 0.25,
    min_side_mm: float = 8.0,
    channels: int = 1,
) -> LabelledImages:
    """One square crop per lesion, labelled with its class (index into ``lesions.class_names``).

    The crop is centred on the lesion's mask, its side the longer box side in mm times
    ``1 + 2 * margin`` and at least ``min_side_mm``; it is clipped at the image border.
    """
    images, labels, patients, splits, keys = [], [], [], [], []
    for it in lesions:
        arr = np.asarray(it.image.array[0])
        sx, sy = it.image.spacing[0], it.image.spacing[1]
        for i, les in enumerate(it.lesions):
            side_mm = max(*les.size_mm, min_side_mm) * (1 + 2 * margin)
            cx, cy = les.center_px
            hx, hy = side_mm / sx / 2, side_mm / sy / 2
            xa, xb = int(max(round(cx - hx), 0)), int(min(round(cx + hx), arr.shape[1]))
            ya, yb = int(max(round(cy - hy), 0)), int(min(round(cy + hy), arr.shape[0]))
            crop = arr[ya:max(yb, ya + 1), xa:max(xb, xa + 1)]
            with about_file(it.key):
                images.append(to_model_array(crop, image_size, channels))
            labels.append(lesions.class_names.index(les.label))
            patients.append(it.patient_id)
            splits.append(it.split)
            keys.append(f"{it.key}#lesion{i}")
    if not images:
        raise InputError(f"dataset {lesions.source or '(unnamed)'} has no lesions to crop")
    return LabelledImages(np.stack(images), np.array(labels), np.array(patients), lesions.class_names,
                          splits=np.array(splits), keys=np.array(keys, dtype=object), synthetic=lesions.synthetic)


def image_level_set(lesions: LesionSet, class_names: Sequence[str], image_size: Sequence[int],
                    channels: int = 1) -> LabelledImages:
    """One sample per image, labelled with its most severe lesion class (``normal`` without
    lesions); images whose label is not in ``class_names`` are left out."""
    names = tuple(class_names)
    items = [it for it in lesions if it.image_label(lesions.class_names) in names]
    if not items:
        raise InputError(f"no image of {lesions.source or '(unnamed)'} has a class in {list(names)}")
    images = np.stack([to_model_array(it.image.array, image_size, channels) for it in items])
    labels = [label_index(it.image_label(lesions.class_names), names, it.key) for it in items]
    return LabelledImages(images, np.array(labels), np.array([it.patient_id for it in items]), names,
                          splits=np.array([it.split for it in items]),
                          keys=np.array([it.key for it in items], dtype=object), synthetic=lesions.synthetic)
