"""One 2D lesion-annotation type for every breast dataset: an image plus its lesions.

Mammograms and ultrasounds from the phantoms (:mod:`medanomaly.synth.mammo`,
:mod:`medanomaly.synth.ultrasound`) and from the real-format loaders (INbreast, BUSI,
CBIS-DDSM) all arrive as a :class:`LesionSet` of :class:`LesionImage`, so a detector, a lesion
classifier and their evaluation are written once.

* :class:`Lesion2D`: one lesion: its class (``benign`` / ``uncertain`` / ``malignant``), its
  kind (``mass``, ``calcification_cluster``, ``cyst`` ...), its box in pixels **and** in mm, and
  its mask inside that box.
* :class:`LesionImage`: one image (a one-slice :class:`~medanomaly.types.Volume` with its
  spacing in mm), its lesions (none for a normal image), the patient it belongs to and its split.
* :class:`LesionSet`: the images of a dataset, with patient-level splits
  (:meth:`LesionSet.with_patient_splits`); :mod:`medanomaly.data.lesion_samples` turns it into
  lesion crops or whole images for a classifier.

Boxes: ``box_px = (x0, y0, x1, y1)`` in pixel-edge coordinates: pixel column ``i`` covers
``[i, i + 1)``, so ``x1 - x0`` is the width in pixels and ``image[y0:y1, x0:x1]`` is the box.
``box_mm`` is the same rectangle in patient coordinates (LPS mm, in-plane x and y), from the
image's origin, spacing and direction. ``mask`` is boolean, shape ``(y1 - y0, x1 - x0)``: the
lesion within its box (lesions of real mammograms are large, so full-image masks per lesion
would not fit in memory; :meth:`Lesion2D.full_mask` builds one when wanted).

:mod:`medanomaly.data.lesion_store` keeps a set on disk (NRRD images with their spacing, lesion
masks as ``.npz`` crops, two CSV tables); the phantom datasets cache their cohorts so.

Example:
    >>> import numpy as np
    >>> from medanomaly.types import Volume
    >>> img = Volume(np.zeros((1, 8, 10), np.float32), spacing=(0.5, 0.5, 1.0), meta={"modality": "MG"})
    >>> m = np.zeros((8, 10), bool); m[2:5, 3:7] = True
    >>> les = lesion_from_mask(img, m, "malignant", "mass")
    >>> les.box_px, les.box_mm
    ((3, 2, 7, 5), (1.25, 0.75, 3.25, 2.25))
    >>> LesionImage(img, (les,), patient_id="p1", key="a").label
    'malignant'
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import numpy as np

from medanomaly.errors import InputError
from medanomaly.types import Finding, Volume

__all__ = [
    "CLASSES",
    "NORMAL",
    "Lesion2D",
    "LesionImage",
    "LesionSet",
    "lesion_from_crop",
    "lesion_from_mask",
    "image_labels",
    "reduce_crop",
    "reduce_factor",
    "reduce_image",
    "reduce_mask",
]

#: The three lesion classes, least to most severe (an image's label is its most severe lesion).
CLASSES = ("benign", "uncertain", "malignant")
#: The label of an image without lesions.
NORMAL = "normal"


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


# ----------------------------------------------------------------------------- one lesion
@dataclass(frozen=True, eq=False)
class Lesion2D:
    """One annotated lesion of a 2D image.

    Attributes:
        label: class name (``benign``, ``uncertain``, ``malignant``, or a dataset's own class).
        box_px: (x0, y0, x1, y1) pixel-edge coordinates; x1, y1 exclusive.
        box_mm: the same box in LPS mm of the image plane, (x0, y0, x1, y1), x0 < x1, y0 < y1.
        mask: bool (y1 - y0, x1 - x0): the lesion inside its box.
        kind: ``mass``, ``calcification_cluster``, ``calcification``, ``cyst``... (the source's
            finding type, lower case).
        attributes: technical descriptors from the source (BI-RADS, pathology, shape, drawing
            parameters of a phantom); never patient identity.
    """

    label: str
    box_px: tuple[int, int, int, int]
    box_mm: tuple[float, float, float, float]
    mask: np.ndarray = field(repr=False)
    kind: str = "lesion"
    attributes: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        x0, y0, x1, y1 = (int(v) for v in self.box_px)
        if x1 <= x0 or y1 <= y0 or x0 < 0 or y0 < 0:
            raise ValueError(f"box_px must be (x0, y0, x1, y1) with 0 <= x0 < x1, 0 <= y0 < y1, got {self.box_px}")
        mask = np.asarray(self.mask, dtype=bool)
        if mask.shape != (y1 - y0, x1 - x0):
            raise ValueError(f"mask shape {mask.shape} does not fit box {self.box_px}")
        if not str(self.label):
            raise ValueError("a lesion needs a class label")
        object.__setattr__(self, "box_px", (x0, y0, x1, y1))
        object.__setattr__(self, "box_mm", tuple(round(float(v), 4) for v in self.box_mm))
        object.__setattr__(self, "mask", mask)
        object.__setattr__(self, "attributes", _frozen(self.attributes))

    @property
    def width_px(self) -> int:
        return self.box_px[2] - self.box_px[0]

    @property
    def height_px(self) -> int:
        return self.box_px[3] - self.box_px[1]

    @property
    def size_mm(self) -> tuple[float, float]:
        """Box width and height in mm."""
        x0, y0, x1, y1 = self.box_mm
        return (x1 - x0, y1 - y0)

    @property
    def center_px(self) -> tuple[float, float]:
        """Centroid of the mask in continuous pixel-edge coordinates (x, y)."""
        yy, xx = np.nonzero(self.mask)
        if yy.size == 0:
            x0, y0, x1, y1 = self.box_px
            return ((x0 + x1) / 2, (y0 + y1) / 2)
        return (float(xx.mean() + 0.5 + self.box_px[0]), float(yy.mean() + 0.5 + self.box_px[1]))

    @property
    def area_px(self) -> int:
        return int(self.mask.sum())

    def area_mm2(self) -> float:
        """Mask area in mm^2 (pixel area from the box's size in mm and in pixels)."""
        w_mm, h_mm = self.size_mm
        return self.area_px * (w_mm / self.width_px) * (h_mm / self.height_px)

    def full_mask(self, shape: tuple[int, int]) -> np.ndarray:
        """The lesion mask on a (y, x) image grid of ``shape``."""
        out = np.zeros(shape, dtype=bool)
        x0, y0, x1, y1 = self.box_px
        out[y0:y1, x0:x1] = self.mask[: max(shape[0] - y0, 0), : max(shape[1] - x0, 0)]
        return out

    def to_finding(self, image: Volume, score: float = 1.0, with_mask: bool = False) -> Finding:
        """This lesion as a :class:`~medanomaly.types.Finding` on ``image`` (a reference finding
        for detection metrics): centre and 3D box in LPS mm, the slice's thickness as z extent."""
        x0, y0, x1, y1 = self.box_px
        corners = np.array([[x, y, z] for x in (x0 - 0.5, x1 - 0.5) for y in (y0 - 0.5, y1 - 0.5)
                            for z in (-0.5, 0.5)])
        mm = image.index_to_physical(corners)
        cx, cy = self.center_px
        center = image.index_to_physical((cx - 0.5, cy - 0.5, 0.0))
        mask = None
        if with_mask:
            mask = image.with_array(self.full_mask(image.shape[1:3])[None].astype(np.uint8), label=self.label)
        return Finding(tuple(float(c) for c in center), (tuple(mm.min(0).tolist()), tuple(mm.max(0).tolist())),
                       float(score), self.label, mask=mask)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (no mask): label, kind, box_px, box_mm, area_px, attributes."""
        return {"label": self.label, "kind": self.kind, "box_px": list(self.box_px),
                "box_mm": list(self.box_mm), "area_px": self.area_px,
                "attributes": {k: plain_value(v) for k, v in self.attributes.items()}}


def plain_value(value: Any) -> Any:
    """A NumPy scalar or sequence as plain Python (for JSON)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, list)):
        return [plain_value(v) for v in value]
    return value


def _box_mm(image: Volume, box_px: tuple[int, int, int, int]) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box_px
    corners = np.array([[x - 0.5, y - 0.5, 0.0] for x in (x0, x1) for y in (y0, y1)])
    mm = image.index_to_physical(corners)
    lo, hi = mm.min(0), mm.max(0)
    return (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))


def lesion_from_mask(
    image: Volume,
    mask: np.ndarray,
    label: str,
    kind: str = "lesion",
    attributes: Mapping[str, Any] | None = None,
    pad_px: int = 0,
) -> Lesion2D:
    """Build a :class:`Lesion2D` from a full-image (y, x) mask on ``image``'s grid.

    Args:
        image: the one-slice image the mask belongs to (its geometry gives ``box_mm``).
        mask: boolean-like (y, x) or (1, y, x) array, non-zero = lesion.
        label: the lesion's class.
        kind: the finding type.
        attributes: descriptors to keep with the lesion.
        pad_px: grow the box by this many pixels on each side (clipped to the image), e.g. for
            calcification clusters whose specks are a few pixels each.

    Raises:
        InputError: an empty mask, or a mask of another shape than the image.
    """
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    h, w = image.shape[1:3]
    if m.shape != (h, w):
        raise InputError(f"lesion mask of shape {m.shape} does not fit the image ({h}, {w})")
    m = m.astype(bool)
    ys, xs = np.nonzero(m)
    if ys.size == 0:
        raise InputError("empty lesion mask")
    box = (max(int(xs.min()) - pad_px, 0), max(int(ys.min()) - pad_px, 0),
           min(int(xs.max()) + 1 + pad_px, w), min(int(ys.max()) + 1 + pad_px, h))
    crop = m[box[1]:box[3], box[0]:box[2]]
    return Lesion2D(label, box, _box_mm(image, box), crop, kind, attributes or {})


def lesion_from_crop(
    image: Volume,
    box_px: tuple[int, int, int, int],
    crop: np.ndarray,
    label: str,
    kind: str = "lesion",
    attributes: Mapping[str, Any] | None = None,
) -> Lesion2D:
    """Build a :class:`Lesion2D` from a mask already cut to ``box_px`` (large real images, where
    a full-image mask per lesion would be wasteful); the box is clipped to the image."""
    h, w = image.shape[1:3]
    x0, y0, x1, y1 = (int(v) for v in box_px)
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if cx1 <= cx0 or cy1 <= cy0:
        raise InputError(f"lesion box {box_px} lies outside the {w} x {h} image")
    m = np.asarray(crop, dtype=bool)[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    box = (cx0, cy0, cx1, cy1)
    return Lesion2D(label, box, _box_mm(image, box), m, kind, attributes or {})


# ----------------------------------------------------------------------------- one image
def _severity(label: str, class_names: Sequence[str]) -> int:
    return list(class_names).index(label) if label in class_names else -1


@dataclass(frozen=True, eq=False)
class LesionImage:
    """One 2D image with its lesions.

    Attributes:
        image: a one-slice :class:`~medanomaly.types.Volume` (1, y, x) with spacing in mm.
        lesions: the annotated lesions (empty for a normal image).
        patient_id: pseudonymous patient key (the source's public id or a keyed hash; never a name).
        key: short technical key of the image (file stem, index) for messages.
        split: ``train``, ``val``, ``test`` or ``""``.
        view: ``CC``, ``MLO``, ``ML``... for mammograms, ``""`` otherwise.
        laterality: ``L``, ``R`` or ``""``.
        attributes: image-level descriptors (breast density, BI-RADS, spacing_known...).
    """

    image: Volume
    lesions: tuple[Lesion2D, ...] = ()
    patient_id: str = ""
    key: str = ""
    split: str = ""
    view: str = ""
    laterality: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.image.is_2d:
            raise ValueError(f"a LesionImage holds a one-slice image, got shape {self.image.shape}")
        h, w = self.image.shape[1:3]
        for les in self.lesions:
            if les.box_px[2] > w or les.box_px[3] > h:
                raise ValueError(f"lesion box {les.box_px} outside the {w} x {h} image")
        object.__setattr__(self, "lesions", tuple(self.lesions))
        object.__setattr__(self, "attributes", _frozen(self.attributes))

    @property
    def label(self) -> str:
        """The most severe lesion class (order of :data:`CLASSES`), or ``"normal"``."""
        return self.image_label(CLASSES)

    def image_label(self, class_names: Sequence[str] = CLASSES) -> str:
        """The lesion class ranked last in ``class_names`` among the lesions, or ``"normal"``."""
        if not self.lesions:
            return NORMAL
        return max((les.label for les in self.lesions), key=lambda c: _severity(c, class_names))

    @property
    def synthetic(self) -> bool:
        return bool(self.image.meta.get("synthetic", False))

    @property
    def shape(self) -> tuple[int, int]:
        """(y, x) pixels."""
        return self.image.shape[1], self.image.shape[2]

    def instance_map(self) -> np.ndarray:
        """uint16 (y, x): 0 background, i + 1 where lesion i lies (later lesions drawn on top)."""
        out = np.zeros(self.shape, dtype=np.uint16)
        for i, les in enumerate(self.lesions):
            x0, y0, x1, y1 = les.box_px
            out[y0:y1, x0:x1][les.mask] = i + 1
        return out

    def class_map(self, class_names: Sequence[str] = CLASSES) -> np.ndarray:
        """uint8 (y, x): 0 background, c + 1 for class index c (the more severe lesion wins)."""
        out = np.zeros(self.shape, dtype=np.uint8)
        for les in sorted(self.lesions, key=lambda les: _severity(les.label, class_names)):
            c = _severity(les.label, class_names)
            if c >= 0:
                x0, y0, x1, y1 = les.box_px
                out[y0:y1, x0:x1][les.mask] = c + 1
        return out

    def findings(self) -> tuple[Finding, ...]:
        """The lesions as reference :class:`~medanomaly.types.Finding` (score 1)."""
        return tuple(les.to_finding(self.image) for les in self.lesions)

    def with_split(self, split: str) -> LesionImage:
        return replace(self, split=split)


def image_labels(items: Sequence[LesionImage], class_names: Sequence[str]) -> np.ndarray:
    """(N,) int64 image-level label: 0 normal, c + 1 for the most severe lesion class c."""
    return np.array([_severity(it.image_label(class_names), class_names) + 1 for it in items], dtype=np.int64)


# ----------------------------------------------------------------------------- a data set
@dataclass(frozen=True, eq=False)
class LesionSet:
    """The annotated 2D images of one dataset.

    Attributes:
        items: the images.
        class_names: lesion classes, least to most severe.
        source: dataset name (``mammo_phantom``, ``us_phantom``, ``inbreast``, ``busi``, ``cbis_ddsm``).
        synthetic: True for simulated images (every number measured on them is "synthetic").
        skipped: ``"<key>: <reason>"`` for each source item that could not be used (bad file,
            mask of the wrong size...); the rest was loaded.
    """

    items: tuple[LesionImage, ...]
    class_names: tuple[str, ...] = CLASSES
    source: str = ""
    synthetic: bool = False
    skipped: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", tuple(self.items))
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "skipped", tuple(self.skipped))
        for it in self.items:
            for les in it.lesions:
                if les.label not in self.class_names:
                    raise ValueError(f"image {it.key}: lesion class {les.label!r} not in {self.class_names}")

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[LesionImage]:
        return iter(self.items)

    def __getitem__(self, index: int) -> LesionImage:
        return self.items[index]

    @property
    def patient_ids(self) -> np.ndarray:
        return np.array([it.patient_id for it in self.items], dtype=str)

    @property
    def splits(self) -> np.ndarray:
        return np.array([it.split for it in self.items], dtype="<U5")

    @property
    def image_labels(self) -> np.ndarray:
        """(N,) 0 = normal, c + 1 = most severe lesion class c."""
        return image_labels(self.items, self.class_names)

    def split(self, name: str) -> LesionSet:
        """The images of split ``name``."""
        return replace(self, items=tuple(it for it in self.items if it.split == name))

    def with_patient_splits(self, val: float = 0.15, test: float = 0.15, seed: int = 0) -> LesionSet:
        """Assign train / val / test by patient (stratified by each patient's most severe class);
        no patient is in two splits (checked)."""
        from medanomaly.data.splits import check_patient_splits, patient_split

        if not self.items:
            return self
        splits = patient_split(self.patient_ids, self.image_labels, val=val, test=test, seed=seed)
        check_patient_splits(self.patient_ids, splits)
        return replace(self, items=tuple(it.with_split(str(s)) for it, s in zip(self.items, splits, strict=True)))

    def lesion_counts(self) -> dict[str, dict[str, int]]:
        """Lesions per split and class, plus normal images per split (no ids)."""
        out: dict[str, dict[str, int]] = {}
        for it in self.items:
            row = out.setdefault(it.split or "all", {c: 0 for c in (*self.class_names, "normal_images")})
            for les in it.lesions:
                row[les.label] += 1
            row["normal_images"] += int(not it.lesions)
        return out

    def summary(self) -> dict[str, Any]:
        """Images, patients and lesions per split and class (for reports; no ids)."""
        per_split = {}
        for name in sorted({it.split or "all" for it in self.items}):
            sub = [it for it in self.items if (it.split or "all") == name]
            per_split[name] = {"images": len(sub), "patients": len({it.patient_id for it in sub}),
                               "lesions": sum(len(it.lesions) for it in sub)}
        return {"source": self.source, "synthetic": self.synthetic, "class_names": list(self.class_names),
                "splits": per_split, "lesion_counts": self.lesion_counts(), "skipped": len(self.skipped)}


# ----------------------------------------------------------------------------- resampling
def reduce_factor(shape: tuple[int, int], max_side: int | None) -> int:
    """The integer block size that brings the longer side of ``shape`` to at most ``max_side``."""
    if not max_side or max(shape) <= max_side:
        return 1
    return int(np.ceil(max(shape) / max_side))


def reduce_image(image: Volume, factor: int) -> Volume:
    """Block-average a one-slice image by ``factor`` in x and y (edge-padded to a multiple);
    spacing and origin follow, so millimetres stay right."""
    if factor <= 1:
        return image
    a = np.asarray(image.array[0], dtype=np.float32)
    h, w = a.shape
    a = np.pad(a, ((0, -h % factor), (0, -w % factor)), mode="edge")
    a = a.reshape(a.shape[0] // factor, factor, a.shape[1] // factor, factor).mean(axis=(1, 3))
    sx, sy, sz = image.spacing
    shift = image.direction @ (np.array([sx, sy, 0.0]) * (factor - 1) / 2.0)
    return replace(image, array=a[None], spacing=(sx * factor, sy * factor, sz),
                   origin=tuple((np.asarray(image.origin) + shift).tolist()))


def reduce_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """Block-reduce a (y, x) mask by ``factor``: a block is lesion when any of its pixels is."""
    m = np.asarray(mask, dtype=bool)
    if factor <= 1:
        return m
    h, w = m.shape
    m = np.pad(m, ((0, -h % factor), (0, -w % factor)))
    return m.reshape(m.shape[0] // factor, factor, m.shape[1] // factor, factor).any(axis=(1, 3))


def reduce_crop(box_px: tuple[int, int, int, int], crop: np.ndarray,
                factor: int) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """A lesion crop (and its box) on the grid of :func:`reduce_image` with the same ``factor``."""
    if factor <= 1:
        return box_px, np.asarray(crop, dtype=bool)
    x0, y0, x1, y1 = box_px
    bx0, by0 = (x0 // factor) * factor, (y0 // factor) * factor
    bx1, by1 = -(-x1 // factor) * factor, -(-y1 // factor) * factor
    grown = np.zeros((by1 - by0, bx1 - bx0), dtype=bool)
    grown[y0 - by0:y1 - by0, x0 - bx0:x1 - bx0] = crop
    return (bx0 // factor, by0 // factor, bx1 // factor, by1 // factor), reduce_mask(grown, factor)
