"""Folder + CSV manifest dataset: ``path,label,patient_id[,split]``.

The CSV names one image per row; ``path`` is relative to the CSV's folder (or ``root``). Images
are read with :func:`medanomaly.io.read` (DICOM, NIfTI, NRRD, PNG, ...), so geometry-aware formats
all work. Every problem is found before training starts: a missing file, an unreadable image,
an unknown label or a missing column is an :class:`~medanomaly.errors.InputError` naming the file
and row (never a patient).

Example CSV::

    path,label,patient_id,split
    images/case001.png,benign,P001,train
    images/case002.png,malignant,P002,test
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medanomaly.data.bounds import Channels, ImageSize, checked
from medanomaly.data.arrays import SPLITS, LabelledImages, check_array_memory, label_index, to_model_array
from medanomaly.errors import InputError, about_file
from medanomaly.io.limits import check_least_size
from medanomaly.io.tables import read_csv
from medanomaly.registry import DATASETS

REQUIRED_COLUMNS = ("path", "label", "patient_id")


def read_manifest(csv_path: str | Path) -> list[dict[str, str]]:
    """Rows of a manifest CSV, checked for the required columns and non-empty values."""
    csv_path = Path(csv_path)
    with read_csv(csv_path, "manifest CSV") as reader:  # a missing file: "manifest CSV not found"
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise InputError(f"manifest lacks column(s) {missing}; needs path,label,patient_id[,split]", csv_path)
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    if not rows:
        raise InputError("manifest has no rows", csv_path)
    for i, row in enumerate(rows, start=2):
        for column in REQUIRED_COLUMNS:
            if not row.get(column):
                raise InputError(f"row {i}: empty {column!r}", csv_path)
        split = row.get("split", "")
        if split and split not in SPLITS:
            raise InputError(f"row {i}: unknown split {split!r}; expected one of {list(SPLITS)}", csv_path)
    return rows


@DATASETS.register("manifest")
@checked
def load_manifest(
    csv: str | Path,
    root: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    image_size: ImageSize = (128, 128),
    channels: Channels = 1,
    synthetic: bool = False,
    intensity: str = "percentile",
) -> LabelledImages:
    """Load every image a manifest names, resized to ``image_size``.

    Args:
        csv: the manifest CSV (``path,label,patient_id[,split]``).
        root: folder the paths are relative to (default: the CSV's folder).
        class_names: the classes in index order; default: the sorted labels found.
        image_size: (y, x) or (z, y, x) voxels of the model input.
        channels: model input channels.
        synthetic: mark the set as simulated data.
        intensity: intensity mapping (``percentile``, or a CT window ``ct_lung`` / ``ct_soft`` for
            images in HU; see :func:`medanomaly.data.arrays.map_intensity`).

    Raises:
        InputError: missing file, unreadable image, unknown label, bad column.
    """
    from medanomaly.io import read

    csv = Path(csv)
    rows = read_manifest(csv)
    base = Path(root) if root is not None else csv.parent
    names = tuple(class_names) if class_names else tuple(sorted({r["label"] for r in rows}))
    labels = [label_index(r["label"], names, f"row {i}", csv) for i, r in enumerate(rows, start=2)]
    paths = [base / r["path"] for r in rows]
    absent = [str(Path(r["path"]).name) for r, p in zip(rows, paths, strict=True) if not p.exists()]
    if absent:
        shown = ", ".join(absent[:3]) + (f" and {len(absent) - 3} more" if len(absent) > 3 else "")
        raise InputError(f"{len(absent)} file(s) named in the manifest do not exist: {shown}", csv)
    check_array_memory(len(paths), (*image_size, channels), csv, "use fewer rows or a smaller data.image_size")
    images = []
    for path in paths:
        volume = read(path)
        check_least_size(volume, path)  # a 1 x 160 picture was resized up to the grid and trained on
        with about_file(path):  # a channel count or dimension that does not fit names its file
            images.append(to_model_array(volume.array, image_size, channels, intensity))
    return LabelledImages(
        images=np.stack(images),
        labels=np.array(labels),
        patient_ids=np.array([r["patient_id"] for r in rows]),
        class_names=names,
        splits=np.array([r.get("split", "") for r in rows]),
        keys=np.array([Path(r["path"]).name for r in rows], dtype=object),
        synthetic=synthetic,
        intensity=intensity,
    )
