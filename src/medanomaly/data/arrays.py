"""In-memory labelled image sets for classification, and the one function that turns an image into
model input.

Every classification dataset loader (manifest, MedMNIST, INbreast, LIDC-IDRI, phantoms) returns a
:class:`LabelledImages`: images already resized to one grid, channel-first, float32, with a label
index, a patient id and (optionally) a split per image. Small cohorts (the ones this package is
tested on, and MedMNIST-sized sets) fit in memory; that keeps the training loop as fast as a
plain PyTorch loop (see ``bench/bench_train_throughput.py``).

Example:
    >>> import numpy as np
    >>> x = to_model_array(np.arange(16, dtype=float).reshape(4, 4), (2, 2), channels=1)
    >>> x.shape, bool(0.0 <= x.min() < x.max() <= 1.0)
    ((1, 2, 2), True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from medanomaly.errors import InputError
from medanomaly.preprocess.checks import unusable_values
from medanomaly.preprocess.intensity import INTENSITY_WINDOWS_HU, percentile_unit_array, window_array
from medanomaly.preprocess.resize import resize_array

#: Split names used everywhere ("" = not assigned yet).
SPLITS = ("train", "val", "test")


#: Per-image robust percentile scaling to [0, 1] (the ``percentile`` intensity mode).
normalise_intensity = percentile_unit_array


#: Channel-first resize to a fixed size (:func:`medanomaly.preprocess.resize.resize_array`).
resize = resize_array


#: Intensity mappings to [0, 1]: per-image robust percentiles, or fixed CT windows in HU
#: (:data:`medanomaly.preprocess.intensity.INTENSITY_WINDOWS_HU`).
INTENSITY_MODES = ("percentile", *INTENSITY_WINDOWS_HU)


def map_intensity(array: np.ndarray, mode: str = "percentile") -> np.ndarray:
    """Map one channel to [0, 1]: ``"percentile"`` (see :func:`normalise_intensity`) or a fixed CT
    window in HU (``"ct_lung"`` -1000..400, ``"ct_soft"`` -160..240), which keeps absolute HU
    differences (ground glass vs solid) that per-image scaling would erase."""
    if mode == "percentile":
        return percentile_unit_array(array)
    if mode not in INTENSITY_WINDOWS_HU:
        raise InputError(f"unknown intensity mode {mode!r}; valid: {', '.join(INTENSITY_MODES)}")
    return window_array(array, *INTENSITY_WINDOWS_HU[mode])


def to_model_array(image: np.ndarray, size: Sequence[int], channels: int = 1,
                   intensity: str = "percentile") -> np.ndarray:
    """Turn one image into model input: (channels, *size) float32 in [0, 1].

    Args:
        image: a 2D (y, x) or 3D (z, y, x) array, or a :class:`medanomaly.types.Volume` array with
            a trailing component axis (z, y, x, c); a one-slice volume is treated as 2D when
            ``size`` is 2D.
        size: target spatial size, (y, x) or (z, y, x), voxels.
        channels: number of channels the model expects; an image with another number of
            channels is an error (never silently converted). RGBA loses its alpha for 3 channels.
        intensity: how intensities map to [0, 1] (see :func:`map_intensity`).

    Raises:
        InputError: when the image dimension or channel count cannot match, or it holds NaN / infinite values
            or values float32 cannot hold (:func:`medanomaly.preprocess.checks.unusable_values`).
    """
    a = np.asarray(image)
    reason = unusable_values(a)  # a NaN image became an all-zero one and was trained on without a word
    if reason:
        raise InputError(reason)
    comps = 1
    if a.ndim == 4 or (a.ndim == 3 and len(size) == 2 and a.shape[-1] in (3, 4) and a.shape[0] != 1):
        comps = a.shape[-1]
        a = np.moveaxis(a, -1, 0)  # (c, ..., )
    else:
        a = a[None]
    spatial = a.shape[1:]
    if len(size) == 2 and len(spatial) == 3:
        if spatial[0] != 1:
            raise InputError(f"a 3D image of shape {tuple(spatial)} cannot feed a 2D model")
        a = a[:, 0]
    elif len(size) == 3 and len(spatial) == 2:
        raise InputError(f"a 2D image of shape {tuple(spatial)} cannot feed a 3D model")
    if comps == 4 and channels == 3:  # RGBA: drop alpha
        a, comps = a[:3], 3
    if comps != channels:
        raise InputError(
            f"image has {comps} channel(s), the config expects {channels} (set data.channels to {comps})"
        )
    a = np.stack([map_intensity(c, intensity) for c in a])
    return resize_array(a, size)


@dataclass(frozen=True, eq=False)
class LabelledImages:
    """A labelled image set held in memory.

    Attributes:
        images: (N, C, *spatial) float32 model inputs (see :func:`to_model_array`).
        labels: (N,) int64 class indices into ``class_names``.
        patient_ids: (N,) patient identifiers (pseudonymous; never printed).
        class_names: names of the classes, index order.
        splits: (N,) split names ("train", "val", "test" or "" when not given by the source).
        keys: (N,) a short key per image (file name or index) for error messages.
        synthetic: True when the images are simulated (reports say "synthetic").
        intensity: how the loader mapped intensities (``predict`` applies the same mapping).
    """

    images: np.ndarray
    labels: np.ndarray
    patient_ids: np.ndarray
    class_names: tuple[str, ...]
    splits: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype="<U5"))
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    synthetic: bool = False
    intensity: str = "percentile"

    def __post_init__(self) -> None:
        n = len(self.images)
        object.__setattr__(self, "images", np.ascontiguousarray(self.images, dtype=np.float32))
        object.__setattr__(self, "labels", np.asarray(self.labels, dtype=np.int64))
        object.__setattr__(self, "patient_ids", np.asarray(self.patient_ids).astype(str))
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        splits = np.asarray(self.splits).astype(str) if len(self.splits) else np.full(n, "", dtype="<U5")
        object.__setattr__(self, "splits", splits)
        keys = np.asarray(self.keys, dtype=object) if len(self.keys) else np.array([str(i) for i in range(n)], object)
        object.__setattr__(self, "keys", keys)
        for name in ("labels", "patient_ids", "splits", "keys"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {n} images")
        if self.images.ndim not in (4, 5):
            raise ValueError(f"images must be (N, C, y, x) or (N, C, z, y, x), got {self.images.shape}")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise ValueError("label index out of range of class_names")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def spatial_dims(self) -> int:
        return self.images.ndim - 2

    @property
    def image_size(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.images.shape[2:])

    def subset(self, index: np.ndarray | Sequence[int]) -> LabelledImages:
        """The images at ``index`` (a boolean mask or integer indices)."""
        idx = np.asarray(index)
        return replace(
            self,
            images=self.images[idx],
            labels=self.labels[idx],
            patient_ids=self.patient_ids[idx],
            splits=self.splits[idx],
            keys=self.keys[idx],
        )

    def split(self, name: str) -> LabelledImages:
        """The images assigned to split ``name``."""
        return self.subset(self.splits == name)

    def with_splits(self, splits: np.ndarray) -> LabelledImages:
        return replace(self, splits=np.asarray(splits).astype(str))

    def class_counts(self) -> np.ndarray:
        """Images per class, index order."""
        return np.bincount(self.labels, minlength=len(self.class_names))


def label_index(label: object, class_names: Sequence[str], key: str, source: object = None) -> int:
    """Index of ``label`` in ``class_names``; an unknown label is an :class:`InputError`.

    Integer labels are accepted when they index ``class_names``.
    """
    text = str(label).strip()
    if text in class_names:
        return list(class_names).index(text)
    try:
        as_int = int(float(text))
    except ValueError:
        as_int = None
    if as_int is not None and float(text) == as_int and 0 <= as_int < len(class_names) and not any(
        c.isdigit() for c in class_names
    ):
        return as_int
    raise InputError(f"{key}: unknown label {text!r}; expected one of {list(class_names)}", source)


def check_array_memory(n_items: int, item_shape: Sequence[int], path: object, fix: str,
                       available: int | None = None) -> None:  # fmt: skip
    """Refuse, before any image is read, ``n_items`` model arrays of ``item_shape`` (float32, held twice while they
    are stacked) that would take more than 80 % of the memory available (a million rows at 224 x 224 need 400 GB);
    the message names ``path`` and says how to ``fix`` it."""
    import math

    from medanomaly.io.limits import format_bytes, memory_shortfall

    need = 2 * n_items * math.prod(item_shape) * 4
    available = memory_shortfall(need, 0.8, available)
    if available is not None:
        shape = " x ".join(str(v) for v in item_shape)
        raise InputError(f"{n_items:,} images of {shape} need about {format_bytes(need)} of memory but "
                         f"{format_bytes(available)} is available: {fix}", path)  # fmt: skip
