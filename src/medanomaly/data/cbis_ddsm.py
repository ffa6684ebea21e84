"""CBIS-DDSM (Curated Breast Imaging Subset of DDSM, Lee et al. 2017): CSV tables + DICOM.

The public release has four description tables, one row per abnormality::

    mass_case_description_train_set.csv   calc_case_description_train_set.csv
    mass_case_description_test_set.csv    calc_case_description_test_set.csv

with the columns ``patient_id, breast_density`` (``breast density`` in the calc tables),
``left or right breast, image view, abnormality id, abnormality type, mass shape, mass margins``
(``calc type, calc distribution``), ``assessment, pathology, subtlety, image file path, cropped
image file path, ROI mask file path``. The paths name DICOM files below the data folder, e.g.
``Mass-Training_P_00001_LEFT_CC/<study UID>/<series UID>/000000.dcm``; the ROI mask is a binary
DICOM the size of the full mammogram (in some downloads the mask and the cropped image of a
series swap file names: the loader takes the file of the series that has the mammogram's size).

Class of a lesion: ``pathology`` MALIGNANT -> malignant, BENIGN and BENIGN_WITHOUT_CALLBACK ->
benign, except that a BI-RADS ``assessment`` in ``uncertain_assessments`` (default 3: probably
benign) makes it **uncertain**. Finding type: ``mass`` or ``calcification_cluster``.

Rows are grouped by their full mammogram, so an image with two abnormalities has two lesions.
The mass and calc tables point to separate DICOM copies of a view that has both kinds; they stay
separate images of the same patient (a patient-level split keeps them together). Splits:
``split="patient"`` (default) splits all patients anew; ``split="official"`` keeps the release's
test tables as test and splits the rest by patient into train/val, and moves any patient who also
has test images to test (so that no patient is in two splits).

Example:
    >>> lesion_class("BENIGN_WITHOUT_CALLBACK", "4"), lesion_class("MALIGNANT", "5"), lesion_class("BENIGN", "3")
    ('benign', 'malignant', 'uncertain')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from medanomaly.data.bounds import Assessment, Channels, Fraction, ImageSize, MaxSide, Seed, checked
from medanomaly.data.arrays import LabelledImages
from medanomaly.data.lesions2d import CLASSES, LesionImage, LesionSet
from medanomaly.errors import InputError
from medanomaly.io.tables import read_csv
from medanomaly.registry import DATASETS

__all__ = ["TABLES", "lesion_class", "load_cbis_ddsm", "load_cbis_ddsm_lesions", "read_tables"]

#: The release's description tables and their official split.
TABLES = {
    "mass_case_description_train_set.csv": "train",
    "mass_case_description_test_set.csv": "test",
    "calc_case_description_train_set.csv": "train",
    "calc_case_description_test_set.csv": "test",
}
PATHOLOGY = {"MALIGNANT": "malignant", "BENIGN": "benign", "BENIGN_WITHOUT_CALLBACK": "benign"}
REQUIRED = ("patient_id", "left or right breast", "image view", "abnormality type", "pathology", "assessment",
            "image file path", "ROI mask file path")


def lesion_class(pathology: str, assessment: str, uncertain_assessments: Sequence[int] = (3,)) -> str:
    """Class of one abnormality from its pathology and BI-RADS assessment (see the module docstring)."""
    try:
        if int(float(str(assessment).strip())) in set(uncertain_assessments):
            return "uncertain"
    except ValueError:
        pass
    key = str(pathology).strip().upper()
    if key not in PATHOLOGY:
        raise InputError(f"unknown pathology {pathology!r}; expected one of {sorted(PATHOLOGY)}")
    return PATHOLOGY[key]


def read_tables(folder: str | Path) -> list[dict[str, str]]:
    """Every row of the description tables found in ``folder`` (keys stripped, with ``table``
    and ``official_split`` added).

    Raises:
        InputError: no table at all, or a table missing a required column.
    """
    folder = Path(folder)
    rows = []
    for name, official in TABLES.items():
        path = folder / name
        if not path.is_file():
            continue
        with read_csv(path, "CBIS-DDSM table") as reader:
            columns = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in REQUIRED if c not in columns]
            if missing:
                raise InputError(f"missing column(s) {missing}", path)
            for row in reader:
                clean = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
                rows.append({**clean, "table": name, "official_split": official})
    if not rows:
        raise InputError(f"no CBIS-DDSM description table (expected one of {sorted(TABLES)})", folder)
    return rows


def _resolve(data_root: Path, rel: str) -> Path:
    rel = rel.strip().replace("\\", "/")
    for base in (data_root, data_root / "CBIS-DDSM"):
        if (base / rel).is_file():
            return base / rel
    raise InputError("DICOM named in the table not found", data_root / rel)


def _dicom_pixels(path: Path) -> np.ndarray:
    from medanomaly.io import read

    vol = read(path)
    return np.asarray(vol.array[0])


def _mask_for(data_root: Path, row: dict[str, str], shape: tuple[int, int]) -> np.ndarray:
    """The ROI mask of one row: the DICOM of its series with the mammogram's shape."""
    named = _resolve(data_root, row["ROI mask file path"])
    candidates = [named] + sorted(p for p in named.parent.glob("*.dcm") if p != named)
    if row.get("cropped image file path"):
        try:
            candidates.append(_resolve(data_root, row["cropped image file path"]))
        except InputError:
            pass
    for path in candidates:
        pixels = _dicom_pixels(path)
        if pixels.shape == shape:
            return pixels > (pixels.max() / 2.0) if pixels.max() > 0 else np.zeros(shape, dtype=bool)
    raise InputError(f"no ROI mask of the mammogram's size {shape[1]} x {shape[0]} px in its series", named.parent)


def _spacing_known(path: Path) -> bool:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return any(k in ds for k in ("PixelSpacing", "ImagerPixelSpacing"))


def _load_image(data_root: Path, rows: list[dict[str, str]], opts: dict[str, object]) -> tuple[LesionImage, list[str]]:
    """One mammogram with its abnormalities; a bad abnormality is reported and left out."""
    from medanomaly.data.lesions2d import lesion_from_crop, reduce_crop, reduce_factor, reduce_image
    from medanomaly.io import read

    first = rows[0]
    path = _resolve(data_root, first["image file path"])
    image = read(path)
    if not image.is_2d or image.n_components != 1:
        raise InputError(f"expected one grey-level mammogram, got shape {image.array.shape}", path)
    shape = image.shape[1:3]
    factor = reduce_factor(shape, opts["max_side"])  # type: ignore[arg-type]
    small = reduce_image(image, factor)
    key = first["image file path"].strip().split("/")[0]
    lesions, problems = [], []
    for row in rows:
        try:
            label = lesion_class(row["pathology"], row["assessment"], opts["uncertain"])  # type: ignore[arg-type]
            mask = _mask_for(data_root, row, shape)
            if not mask.any():
                raise InputError("empty ROI mask")
        except InputError as exc:
            problems.append(f"{key} abnormality {row.get('abnormality id', '?')}: {exc}")
            continue
        ys, xs = np.nonzero(mask)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        rbox, rcrop = reduce_crop(box, mask[box[1]:box[3], box[0]:box[2]], factor)
        kind = "calcification_cluster" if row["abnormality type"].lower().startswith("calc") else "mass"
        attrs = {k.replace(" ", "_"): row[k] for k in ("abnormality id", "pathology", "assessment", "subtlety",
                                                        "mass shape", "mass margins", "calc type", "calc distribution")
                 if row.get(k)}
        lesions.append(lesion_from_crop(small, rbox, rcrop, label, kind, attrs))
    side = {"LEFT": "L", "RIGHT": "R"}.get(first["left or right breast"].upper(), "")
    view = first["image view"].upper()
    density = first.get("breast_density") or first.get("breast density") or ""
    item = LesionImage(small.with_meta(modality="MG", view=view, laterality=side), tuple(lesions),
                       first["patient_id"], key, split=first["official_split"], view=view, laterality=side,
                       attributes={"density": density, "official_split": first["official_split"],
                                   "spacing_known": _spacing_known(path)})
    return item, problems


def _official_splits(lesions: LesionSet, val: float, seed: int) -> LesionSet:
    """Release test tables -> test (plus every image of a patient who has test images); the rest
    split by patient into train / val."""
    test_patients = {it.patient_id for it in lesions if it.attributes.get("official_split") == "test"}
    rest = LesionSet(tuple(it for it in lesions if it.patient_id not in test_patients), lesions.class_names)
    rest = rest.with_patient_splits(val=val, test=0.0, seed=seed) if len(rest) else rest
    split_of = {it.key: it.split for it in rest}
    items = tuple(it.with_split(split_of.get(it.key, "test")) for it in lesions)
    return replace(lesions, items=items)


@DATASETS.register("cbis_ddsm_lesions")
@checked
def load_cbis_ddsm_lesions(
    root: str | Path,
    data_root: str | Path | None = None,
    abnormalities: Sequence[str] = ("mass", "calcification"),
    uncertain_assessments: Sequence[Assessment] = (3,),
    class_names: Sequence[str] = CLASSES,
    max_side: MaxSide | None = 1024,
    split: str = "patient",
    val: Fraction = 0.15,
    test: Fraction = 0.15,
    seed: Seed = 0,
) -> LesionSet:
    """CBIS-DDSM mammograms with their ROI masks and boxes (detection).

    Args:
        root: the folder with the description CSVs.
        data_root: the folder the CSV paths are relative to (default ``root``; a ``CBIS-DDSM``
            subfolder is also tried).
        abnormalities: which tables to use (``mass``, ``calcification``).
        uncertain_assessments: BI-RADS assessments called ``uncertain`` (default 3).
        class_names: lesion classes, least to most severe.
        max_side: block-average images and masks so the longer side is at most this (None: full).
        split: ``patient`` (new patient-level split) or ``official`` (see the module docstring).
        val, test, seed: split fractions and seed (``test`` is unused with ``split="official"``).

    Returns:
        A :class:`~medanomaly.data.lesions2d.LesionSet`; a missing or unreadable DICOM, or an ROI
        mask of another size, is reported in ``skipped`` and the rest is loaded.
    """
    root = Path(root)
    data_root = Path(data_root) if data_root is not None else root
    if split not in ("patient", "official"):
        raise InputError(f"split must be 'patient' or 'official', got {split!r}")
    wanted = tuple(a.lower()[:4] for a in abnormalities)
    groups: dict[str, list[dict[str, str]]] = {}
    for row in read_tables(root):
        if row["table"][:4] in wanted:
            groups.setdefault(row["image file path"], []).append(row)
    opts = {"max_side": max_side, "uncertain": tuple(uncertain_assessments)}
    items, skipped = [], []
    for rows in groups.values():
        try:
            item, problems = _load_image(data_root, rows, opts)
            items.append(item)
            skipped += problems
        except InputError as exc:
            skipped.append(f"{rows[0]['image file path'].split('/')[0]}: {exc}")
    if not items:
        raise InputError("no CBIS-DDSM image could be loaded" + (f" ({skipped[0]})" if skipped else ""), root)
    lesions = LesionSet(tuple(items), tuple(class_names), "cbis_ddsm", skipped=tuple(skipped))
    if split == "official":
        return _official_splits(lesions, val, seed)
    return lesions.with_patient_splits(val=val, test=test, seed=seed)


@DATASETS.register("cbis_ddsm")
@checked
def load_cbis_ddsm(
    root: str | Path,
    mode: str = "roi",
    class_names: Sequence[str] | None = None,
    image_size: ImageSize = (128, 128),
    channels: Channels = 1,
    **options: object,
) -> LabelledImages:
    """CBIS-DDSM for classification: ``mode="roi"`` one crop per abnormality labelled with its class
    (benign / uncertain / malignant), ``mode="image"`` whole mammograms labelled with their most
    severe abnormality. ``options`` go to :func:`load_cbis_ddsm_lesions`."""
    from medanomaly.data.lesion_samples import image_level_set, lesion_crops

    if mode not in ("roi", "image"):
        raise InputError(f"mode must be 'roi' or 'image', got {mode!r}")
    lesions = load_cbis_ddsm_lesions(root, **options)  # type: ignore[arg-type]
    if mode == "image":
        return image_level_set(lesions, tuple(class_names or lesions.class_names), image_size, channels)
    crops = lesion_crops(lesions, image_size, channels=channels)
    if class_names is not None and tuple(class_names) != crops.class_names:
        raise InputError(f"class_names {list(class_names)} must be the lesion classes {list(crops.class_names)}")
    return crops
