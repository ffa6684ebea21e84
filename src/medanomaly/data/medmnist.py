"""MedMNIST ``.npz`` files (2D and 3D), supplied by the user (nothing is downloaded).

A MedMNIST file holds ``{train,val,test}_images`` (uint8; (N, H, W), (N, H, W, 3) or, for the 3D
sets, (N, D, H, W)) and ``{train,val,test}_labels`` ((N, 1) class indices). The official splits are
kept. MedMNIST gives no patient ids, so each image is its own "patient" here: that is the
split the MedMNIST authors published, and it is recorded, not re-done.

Example:
    >>> from medanomaly.registry import DATASETS
    >>> "medmnist" in DATASETS
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medanomaly.data.bounds import Channels, Count, ImageSize, checked
from medanomaly.data.arrays import SPLITS, LabelledImages, to_model_array
from medanomaly.errors import InputError, about_file
from medanomaly.registry import DATASETS

#: Class names of the MedMNIST sets this package documents (from the MedMNIST v2 INFO table).
KNOWN_CLASSES: dict[str, tuple[str, ...]] = {
    "breastmnist": ("malignant", "normal_or_benign"),
    "pneumoniamnist": ("normal", "pneumonia"),
    "nodulemnist3d": ("benign", "malignant"),
    "adrenalmnist3d": ("normal", "hyperplasia"),
    "fracturemnist3d": ("buckle", "nondisplaced", "displaced"),
}


@DATASETS.register("medmnist")
@checked
def load_medmnist(
    path: str | Path,
    class_names: Sequence[str] | None = None,
    image_size: ImageSize = (28, 28),
    channels: Channels = 1,
    max_per_split: Count | None = None,
) -> LabelledImages:
    """Load a MedMNIST ``.npz`` with its official train/val/test splits.

    Args:
        path: the ``.npz`` file (e.g. ``breastmnist.npz``, ``nodulemnist3d.npz``).
        class_names: classes in index order; default from :data:`KNOWN_CLASSES` by file name,
            else ``class_0, class_1, ...``.
        image_size: model input size, (y, x) for 2D sets or (z, y, x) for 3D sets.
        channels: model input channels.
        max_per_split: keep at most this many images per split (quick experiments).

    Raises:
        InputError: not a MedMNIST file, multi-label targets, or a 2D/3D mismatch.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("MedMNIST file not found", path)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        raise InputError("not a readable .npz file", path) from None
    with data:
        missing = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels") if f"{s}_{k}" not in data.files]
        if missing:
            raise InputError(f"not a MedMNIST file: missing arrays {missing}", path)
        parts = {s: (data[f"{s}_images"], data[f"{s}_labels"]) for s in SPLITS}
    images, labels, splits = [], [], []
    for split, (imgs, labs) in parts.items():
        labs = np.asarray(labs)
        if labs.ndim == 2 and labs.shape[1] != 1:
            raise InputError(f"multi-label targets ({labs.shape[1]} columns) are not a classification task", path)
        labs = labs.reshape(-1).astype(np.int64)
        if max_per_split is not None:
            imgs, labs = imgs[:max_per_split], labs[:max_per_split]
        with about_file(path):
            images.extend(to_model_array(im, image_size, channels) for im in imgs)
        labels.append(labs)
        splits.extend([split] * len(labs))
    labels_arr = np.concatenate(labels)
    n_classes = int(labels_arr.max()) + 1 if labels_arr.size else 0
    if class_names is None:
        class_names = KNOWN_CLASSES.get(path.stem.lower(), tuple(f"class_{i}" for i in range(n_classes)))
    if n_classes > len(class_names):
        raise InputError(f"labels go up to {n_classes - 1} but only {len(class_names)} class names given", path)
    keys = np.array([f"{s}#{i}" for s in SPLITS for i in range(int((np.array(splits) == s).sum()))], dtype=object)
    return LabelledImages(
        images=np.stack(images),
        labels=labels_arr,
        patient_ids=np.array([f"{k}" for k in keys]),
        class_names=tuple(class_names),
        splits=np.array(splits),
        keys=keys,
    )
