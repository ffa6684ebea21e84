"""Measure a label mask: the whole lesion of each label first, its connected parts after.

A mask may hold several labels (1 = tumour, 2 = oedema, ...) and one label may fall into several
connected pieces (pyradiomics' brain1: one tumour in two parts). A label is measured as **one**
lesion first, as pyradiomics measures it (its ``Maximum3DDiameter`` spans both pieces: 69.6 mm on
brain1, where the largest piece alone gives 51.2 mm); when it has more than one connected part
(26-connectivity), each part follows, largest first.

Example:
    >>> import numpy as np
    >>> from medanomaly.types import Volume
    >>> m = np.zeros((3, 9, 9), np.uint8); m[1, 1:3, 1:3] = 1; m[1, 6:8, 6:8] = 1
    >>> rows = [r.to_json() for r in measure_labels(Volume(m))]
    >>> [(r["label_value"], r["part"], r["n_voxels"]) for r in rows]
    [(1, None, 8), (1, 1, 4), (1, 2, 4)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medanomaly.errors import InputError
from medanomaly.jsonio import finite_json
from medanomaly.quantify.measure import SOLID_THRESHOLD_HU, lesion_box, measure, measure_lesions, on_image_grid
from medanomaly.types import Finding, Volume, require_scalar, require_slices

#: A mask with more distinct labels than this is refused (it is not a lesion label map).
MAX_LABELS = 1000
#: A mask whose labels fall into more connected parts than this, all labels together, is refused
#: before anything is measured (a grey image given as a mask: each grey level in thousands of pieces).
MAX_PARTS = 2000

__all__ = ["INTENSITY_STATISTICS", "MAX_LABELS", "MAX_PARTS", "LabelledLesion", "mask_labels", "measure_labels"]


#: What :func:`~medanomaly.types.require_scalar` names when the measured image is not scalar.
INTENSITY_STATISTICS = "intensity statistics"


@dataclass(frozen=True, eq=False)
class LabelledLesion:
    """One measured lesion of a label mask.

    Attributes:
        label_value: the mask value measured (1, 2, ...).
        part: ``None`` for the whole lesion of that label; 1, 2, ... for its connected parts,
            largest first.
        n_parts: how many connected parts the label has (of at least ``min_voxels`` voxels).
        finding: centre, box (LPS mm), mask and :class:`~medanomaly.types.Measurements`.
    """

    label_value: int
    part: int | None
    n_parts: int
    finding: Finding

    @property
    def whole(self) -> bool:
        """True for the whole lesion of a label, False for one of its parts."""
        return self.part is None

    def to_json(self) -> dict[str, Any]:
        """Valid-JSON dict: ``label_value``, ``whole``, ``part``, ``n_parts`` + the finding's keys.

        Values that are not defined (``nan``, e.g. HU statistics without an image) become ``None``.
        """
        head = {"label_value": self.label_value, "whole": self.whole, "part": self.part, "n_parts": self.n_parts}
        return finite_json({**head, **self.finding.to_json()})


def mask_labels(array: np.ndarray, label: int = 0) -> list[int]:
    """The label values to measure: ``[label]``, or every non-zero value when ``label`` is 0.

    Raises:
        InputError: the mask holds non-integer or negative values, more than :data:`MAX_LABELS`
            labels, or no voxel of the requested label.
    """
    arr = np.asarray(array)
    if label:
        if not np.any(arr == label):
            raise InputError(f"mask has no voxel of label {label}")
        return [int(label)]
    values = np.unique(arr[arr != 0])
    if values.size == 0:
        raise InputError("lesion mask is empty")
    if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
        raise InputError("mask values are not integer labels (a probability map? threshold it first)")
    if values[0] < 0:
        raise InputError(f"mask holds negative values (lowest {values[0]:g}): a label mask is 0 (background) "
                         "and positive labels")  # fmt: skip
    if values.size > MAX_LABELS:
        raise InputError(f"mask has {values.size} labels, more than {MAX_LABELS}: not a lesion label map")
    return [int(v) for v in values]


def measure_labels(
    mask: Volume,
    image: Volume | None = None,
    label: int = 0,
    min_voxels: int = 1,
    solid_threshold: float = SOLID_THRESHOLD_HU,
    name: str = "lesion",
) -> list[LabelledLesion]:
    """Measure each label of a mask as one lesion, then its connected parts (when more than one).

    Args:
        mask: label mask on its source grid (0 = background).
        image: the image the mask belongs to (same grid), for intensity statistics; optional.
        label: measure only this value; 0 = every non-zero value, each on its own.
        min_voxels: parts smaller than this are not listed (the whole lesion keeps their voxels).
        solid_threshold: voxels above this count as solid (HU for CT).
        name: the findings' class name.

    Returns:
        Per label (ascending): the whole lesion, then its parts by volume, largest first.

    Raises:
        InputError: empty mask or label, non-integer labels, more than :data:`MAX_PARTS` parts, a
            multi-component (colour) mask or image, a mask not on the image grid, or a cine loop (frames in time).
    """
    require_scalar(mask, "the lesion mask")
    for volume in (mask, image):
        if volume is not None:
            require_slices(volume, "measuring a lesion")
    if image is not None:
        require_scalar(image, INTENSITY_STATISTICS)
    mask = on_image_grid(mask, image)
    parts_of = _parts_per_label(mask.array, mask_labels(mask.array, label), min_voxels)
    out: list[LabelledLesion] = []
    for value, n_parts in parts_of.items():
        binary = np.asarray(mask.array) == value  # again, not kept from the count: one mask per label at a time
        whole_mask = mask.with_array(binary.astype(np.uint8))
        centre, bbox = lesion_box(mask, binary)
        whole = Finding(centre, bbox, 1.0, name, mask=whole_mask,
                        measurements=measure(whole_mask, image, solid_threshold))  # fmt: skip
        out.append(LabelledLesion(value, None, n_parts, whole))
        if n_parts > 1:
            parts = measure_lesions(whole_mask, image, label=name, min_voxels=min_voxels,
                                    solid_threshold=solid_threshold)  # fmt: skip
            out.extend(LabelledLesion(value, i, n_parts, f) for i, f in enumerate(parts, start=1))
    return out


def _parts_per_label(array: np.ndarray, values: list[int], min_voxels: int) -> dict[int, int]:
    """Connected parts per label value, checked against :data:`MAX_PARTS` before any measuring."""
    arr = np.asarray(array)
    counts = {v: _count_parts(arr == v, min_voxels) for v in values}
    total = sum(counts.values())
    if total > MAX_PARTS:
        raise InputError(f"mask has {total} connected parts in {len(values)} label(s), more than {MAX_PARTS}: "
                         "not a lesion label map (an image given as the mask?)")  # fmt: skip
    return counts


def _count_parts(binary: np.ndarray, min_voxels: int) -> int:
    """Connected parts (26-connectivity) of at least ``min_voxels`` voxels."""
    from scipy import ndimage

    labels, n = ndimage.label(binary, structure=np.ones((3,) * binary.ndim, bool))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    return int(np.sum(sizes >= min_voxels))
