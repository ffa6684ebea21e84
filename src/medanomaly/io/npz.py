"""MedMNIST-format ``.npz`` archives: ``train_images``/``train_labels``, ``val_*``, ``test_*``.

MedMNIST (v2/v3) stores each dataset as one NumPy archive with uint8 images of shape
(N, H, W) (greyscale), (N, H, W, 3) (colour) or (N, D, H, W) (3D sets), and labels of
shape (N, 1) (class) or (N, K) (multi-label). Archives are loaded with ``allow_pickle=False``.

:func:`load_medmnist` returns every split; :func:`read_npz` (what ``medanomaly.io.read`` uses)
returns one split as a Volume: a 2D set as a stack of N slices, a 3D set's first volume.
MedMNIST stores no spacing, so spacing is 1 (pixel units, not mm).

Example:
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny.npz")
    >>> np.savez(path, train_images=np.zeros((4, 28, 28), np.uint8), train_labels=np.zeros((4, 1), np.uint8))
    >>> load_medmnist(path)["train"].images.shape
    (4, 28, 28)
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.errors import InputError
from medanomaly.io.limits import check_voxel_bytes
from medanomaly.io.limits import max_voxel_bytes as max_voxel_limit
from medanomaly.types import Volume

SPLITS = ("train", "val", "test")


@dataclass(frozen=True, eq=False)
class MedMNISTSplit:
    """One split: ``images`` (N, H, W[, 3]) or (N, D, H, W) uint8 and ``labels`` (N, K)."""

    images: np.ndarray
    labels: np.ndarray

    @property
    def is_3d(self) -> bool:
        return self.images.ndim == 4 and self.images.shape[-1] not in (3,)


def load_medmnist(
    path: str | Path, *, only: str | None = None, max_voxel_bytes: int | None = None
) -> dict[str, MedMNISTSplit]:
    """Every split present in a MedMNIST ``.npz`` (at least one of train/val/test).

    Args:
        path: the archive.
        only: load this split only (the others are not decompressed).
        max_voxel_bytes: with it, the uncompressed size of the loaded members (from the zip
            directory, before decompressing) must be within this limit (:mod:`medanomaly.io.limits`).

    Raises:
        InputError: not a zip/npz, pickled content, no ``<split>_images`` key, labels that do
            not match the images, or members larger than ``max_voxel_bytes``.
    """
    path = Path(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"not a readable .npz archive ({exc.__class__.__name__})", path) from None
    if not hasattr(archive, "files"):
        raise InputError("not an .npz archive (a single .npy array)", path)
    splits: dict[str, MedMNISTSplit] = {}
    try:
        with archive:
            wanted = [s for s in SPLITS if only in (None, s) and f"{s}_images" in archive.files]
            if max_voxel_bytes is not None:
                _check_members(archive, wanted, path, max_voxel_bytes)
            for split in wanted:
                key = f"{split}_images"
                images = archive[key]
                labels = archive[f"{split}_labels"] if f"{split}_labels" in archive.files else None
                if labels is None:
                    raise InputError(f"'{key}' without '{split}_labels'", path)
                labels = labels.reshape(len(labels), -1)
                if images.ndim not in (3, 4) or len(labels) != len(images):
                    raise InputError(
                        f"{split}: images {images.shape} and labels {labels.shape} do not match the MedMNIST layout",
                        path,
                    )
                splits[split] = MedMNISTSplit(images=images, labels=labels)
    except InputError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:  # pickled object arrays, truncated members
        raise InputError(f"unreadable .npz member ({exc.__class__.__name__})", path) from None
    if not splits:
        raise InputError(
            f"no MedMNIST keys (expected train_images/train_labels...; found {', '.join(archive.files) or 'none'})",
            path,
        )
    return splits


def _check_members(archive: Any, splits: list[str], path: Path, limit: int) -> None:
    """Refuse members whose declared uncompressed size exceeds the voxel limit."""
    total = 0
    for split in splits:
        for key in (f"{split}_images", f"{split}_labels"):
            try:
                total += archive.zip.getinfo(f"{key}.npy").file_size
            except KeyError:
                continue
    check_voxel_bytes((total,), 1, path, limit=limit, what=f"{'+'.join(splits)} split data")


def load_medmnist_names(path: Path) -> list[str]:
    """The splits an archive holds (``<split>_images`` members), without decompressing them."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputError(f"not a readable .npz archive ({exc.__class__.__name__})", path) from None
    return [s for s in SPLITS if f"{s}_images.npy" in names]


def read_npz(path: str | Path, split: str | None = None, *, max_voxel_bytes: int | None = None) -> Volume:
    """One split of a MedMNIST archive as a Volume (the first split present by default).

    A 2D set gives (N, H, W[, 3]): one slice per image. A 3D set gives its first volume. Only
    that split is decompressed, after its size was checked against :mod:`medanomaly.io.limits`.
    """
    path = Path(path)
    if split is not None and split not in SPLITS:
        raise InputError(f"unknown split '{split}' (train, val or test)", path)
    present = load_medmnist_names(path)
    if not present:
        load_medmnist(path)  # raises its "no MedMNIST keys" / pickled / not-an-archive error
    name = split or next(s for s in SPLITS if s in present)
    if name not in present:
        raise InputError(f"no '{name}' split (found {', '.join(present)})", path)
    splits = load_medmnist(path, only=name, max_voxel_bytes=max_voxel_limit(max_voxel_bytes))
    data = splits[name]
    meta: dict[str, object] = {"source_format": "npz", "n_frames": int(len(data.images))}
    if data.is_3d:
        array = data.images[0]
        meta["description"] = f"MedMNIST 3D {name} item 0 of {len(data.images)}"
        meta["label"] = data.labels[0].tolist()
    else:
        array = data.images
        meta["description"] = f"MedMNIST {name} split, {len(data.images)} images"
        if array.ndim == 4:
            meta["channels"] = int(array.shape[-1])
    return Volume(np.ascontiguousarray(array), meta=meta)
