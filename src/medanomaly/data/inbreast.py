"""INbreast (full-field digital mammograms): DICOM images, OsiriX plist-XML ROIs, BI-RADS labels.

The public INbreast release is laid out as::

    INbreast/
      INbreast.csv            ';'-separated: Patient ID;Patient age;Laterality;View;
                              Acquisition date;File Name;ACR;Bi-Rads
      AllDICOMs/<File Name>_<patient hash>_MG_<L|R>_<CC|ML>_ANON.dcm
      AllXML/<File Name>.xml  OsiriX ROI export (Apple plist XML): {"Images": [{"ImageIndex",
                              "NumberOfROIs", "ROIs": [{"Name": "Mass" | "Calcification" | ...,
                              "Point_px": ["(x, y)", ...], "Center": "(x, y)", ...}]}]}

BI-RADS is mapped to three classes (configurable with ``birads_map``): 1-2 benign, 3 uncertain
(probably benign, short follow-up), 4a-6 malignant (suspicious or proven). The patient is the
hash in the DICOM file name, so both views of one breast (and both breasts) stay in one split.

``mode="image"`` gives one sample per mammogram (resized whole image); ``mode="roi"`` gives one
sample per annotated ROI of the chosen kinds, a square crop around its bounding box (with
``margin`` of its size), labelled with the image's class.

``inbreast_lesions`` (:func:`load_inbreast_lesions`) gives the lesions for detection: a
:class:`~medanomaly.data.lesions2d.LesionSet` with one image per mammogram (spacing from the
DICOM's ImagerPixelSpacing, 0.07 mm in the release) and per lesion its polygon mask, box and the
image's class (INbreast grades BI-RADS per image, so every lesion of an image gets the image's
class). ROI names map to finding types: ``Mass`` and ``Spiculated Region`` -> ``mass``,
``Cluster`` -> ``calcification_cluster``, ``Calcification`` -> ``calcification`` (single points
or small outlines). Individual calcifications are grouped into clusters (``calcifications=
"cluster"``: single linkage within ``cluster_gap_mm``, at least ``min_cluster`` members, those
inside an annotated ``Cluster`` belong to it), kept one by one (``"each"``) or dropped (``"none"``).

Example:
    >>> birads_class("4c"), birads_class("2"), birads_class("3")
    ('malignant', 'benign', 'uncertain')
"""

from __future__ import annotations

import plistlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import Field

from medanomaly.data.bounds import Channels, Fraction, ImageSize, MaxSide, Millimetres, Seed, checked
from medanomaly.data.arrays import LabelledImages, label_index, to_model_array
from medanomaly.data.lesions2d import CLASSES, Lesion2D, LesionImage, LesionSet
from medanomaly.errors import InputError, about_file
from medanomaly.io.tables import read_csv
from medanomaly.registry import DATASETS

#: ROI name (lower case) -> finding type; names not listed are ``other``.
ROI_TYPES = {"mass": "mass", "spiculated region": "mass", "espiculated region": "mass", "spiculated": "mass",
             "cluster": "calcification_cluster", "calcification": "calcification", "calcifications": "calcification"}
#: BI-RADS assessment -> class (keys lower-case, as written in INbreast.csv).
BIRADS_MAP: dict[str, str] = {
    "1": "benign", "2": "benign", "3": "uncertain",
    "4": "malignant", "4a": "malignant", "4b": "malignant", "4c": "malignant",
    "5": "malignant", "6": "malignant",
}
_POINT = re.compile(r"\(\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*(?:,\s*[-+0-9.eE]+\s*)?\)")


def birads_class(birads: str, mapping: Mapping[str, str] = BIRADS_MAP) -> str:
    """Class name of a BI-RADS assessment string (``"4a"``, ``"2"``, ...)."""
    key = str(birads).strip().lower()
    if key not in mapping:
        raise InputError(f"unknown BI-RADS assessment {birads!r}; expected one of {sorted(mapping)}")
    return mapping[key]


def parse_point(text: str) -> tuple[float, float]:
    """``"(x, y)"`` (or ``"(x, y, z)"``) -> (x, y) in pixels."""
    m = _POINT.fullmatch(text.strip())
    if not m:
        raise ValueError(f"not a point: {text!r}")
    return float(m.group(1)), float(m.group(2))


def read_rois(xml_path: str | Path) -> list[dict[str, object]]:
    """ROIs of an INbreast XML: ``[{"name": str, "points": (n, 2) array of (x, y) px}, ...]``."""
    xml_path = Path(xml_path)
    try:
        with xml_path.open("rb") as handle:
            tree = plistlib.load(handle)
    except (plistlib.InvalidFileException, ValueError, OSError) as exc:  # ExpatError is a ValueError
        raise InputError(f"not an INbreast plist XML ({exc.__class__.__name__})", xml_path) from None
    rois = []
    for image in tree.get("Images", []):
        for roi in image.get("ROIs", []):
            points = roi.get("Point_px", [])
            try:
                pts = np.array([parse_point(p) for p in points], dtype=np.float64).reshape(-1, 2)
            except ValueError:
                raise InputError("ROI with unreadable Point_px", xml_path) from None
            if len(pts) == 0 and roi.get("Center"):
                pts = np.array([parse_point(str(roi["Center"]))])
            rois.append({"name": str(roi.get("Name", "")), "points": pts})
    return rois


def _table_rows(csv_path: Path) -> list[dict[str, str]]:
    """The rows of ``INbreast.csv`` (';'-separated) that name a file, keyed by lower-cased column name, values
    stripped; the file is read once and must have the 'File Name' and 'Bi-Rads' columns."""
    with read_csv(csv_path, "INbreast.csv", delimiter=";") as reader:  # a missing file: "INbreast.csv not found"
        fields = {f.strip().lower(): f for f in (reader.fieldnames or [])}
        if "file name" not in fields or "bi-rads" not in fields:
            raise InputError("INbreast.csv lacks the 'File Name' or 'Bi-Rads' column", csv_path)
        rows = [{key: (row.get(name) or "").strip() for key, name in fields.items()} for row in reader]
    return [row for row in rows if row["file name"]]


def read_table(csv_path: str | Path) -> dict[str, str]:
    """``File Name -> BI-RADS`` from ``INbreast.csv`` (';'-separated)."""
    return {row["file name"]: row["bi-rads"] for row in _table_rows(Path(csv_path))}


def _read_pixels(path: Path) -> np.ndarray:
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array.astype(np.float32)
    except Exception as exc:  # pydicom raises many types for broken files
        raise InputError(f"unreadable DICOM ({exc.__class__.__name__})", path) from None
    if str(getattr(ds, "PhotometricInterpretation", "")) == "MONOCHROME1":
        pixels = pixels.max() - pixels
    return pixels


def _roi_crop(pixels: np.ndarray, points: np.ndarray, margin: float, min_size: int) -> np.ndarray:
    (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
    side = max(x1 - x0, y1 - y0, min_size) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    h, w = pixels.shape
    xa, xb = int(max(cx - side / 2, 0)), int(min(cx + side / 2, w))
    ya, yb = int(max(cy - side / 2, 0)), int(min(cy + side / 2, h))
    return pixels[ya:max(yb, ya + 1), xa:max(xb, xa + 1)]


@DATASETS.register("inbreast")
@checked
def load_inbreast(
    root: str | Path,
    mode: str = "image",
    roi_kinds: Sequence[str] = ("Mass", "Calcification", "Cluster", "Spiculated Region"),
    margin: Annotated[float, Field(ge=0.0, le=10.0)] = 0.25,
    min_roi_px: Annotated[int, Field(ge=1, le=4096)] = 32,
    birads_map: Mapping[str, str] | None = None,
    class_names: Sequence[str] | None = None,
    image_size: ImageSize = (256, 256),
    channels: Channels = 1,
) -> LabelledImages:
    """Load INbreast images (``mode="image"``) or lesion crops (``mode="roi"``) with BI-RADS classes.

    Raises:
        InputError: missing folders/columns, an XML or DICOM that cannot be read, an unknown
            BI-RADS value, or a ``File Name`` without a DICOM.
    """
    root = Path(root)
    if mode not in ("image", "roi"):
        raise InputError(f"mode must be 'image' or 'roi', got {mode!r}")
    mapping = {str(k).lower(): v for k, v in (birads_map or BIRADS_MAP).items()}
    names = tuple(class_names or CLASSES)
    table = read_table(root / "INbreast.csv")
    dicom_dir = root / "AllDICOMs"
    if not dicom_dir.is_dir():
        raise InputError("no AllDICOMs folder", root)
    by_file: dict[str, Path] = {}
    for path in dicom_dir.glob("*.dcm"):
        by_file[path.name.split("_")[0]] = path
    images, labels, patients, keys = [], [], [], []
    for file_name, birads in table.items():
        path = by_file.get(file_name)
        if path is None:
            raise InputError(f"INbreast.csv names file {file_name} but AllDICOMs has no such DICOM", root)
        label = label_index(birads_class(birads, mapping), names, f"file {file_name}", root)
        parts = path.name.split("_")
        patient = parts[1] if len(parts) > 2 else file_name
        pixels = _read_pixels(path)
        if mode == "image":
            crops = [pixels]
        else:
            xml = root / "AllXML" / f"{file_name}.xml"
            rois = read_rois(xml) if xml.is_file() else []
            crops = [_roi_crop(pixels, r["points"], margin, min_roi_px) for r in rois
                     if r["name"] in roi_kinds and len(r["points"])]
        for i, crop in enumerate(crops):
            with about_file(path):
                images.append(to_model_array(crop, image_size, channels))
            labels.append(label)
            patients.append(patient)
            keys.append(f"{file_name}" + (f"#roi{i}" if mode == "roi" else ""))
    if not images:
        raise InputError("no INbreast samples found (no images, or no ROIs of the requested kinds)", root)
    return LabelledImages(np.stack(images), np.array(labels), np.array(patients), names,
                          keys=np.array(keys, dtype=object))


# ----------------------------------------------------------------------------- lesions (detection)
def read_rows(csv_path: str | Path) -> list[dict[str, str]]:
    """Rows of ``INbreast.csv`` with the keys ``file``, ``birads``, ``laterality``, ``view``, ``acr``."""
    return [{"file": row["file name"], "birads": row["bi-rads"], **{k: row.get(k, "") for k in ("laterality", "view", "acr")}}
            for row in _table_rows(Path(csv_path))]  # fmt: skip


def roi_mask(points: np.ndarray, shape: tuple[int, int], point_radius_px: float) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """(box_px, mask crop) of one ROI outline on an image of ``shape`` (y, x); a single point
    becomes a disk of ``point_radius_px``, two points a line; None when it lies outside."""
    from skimage.draw import disk, line, polygon

    h, w = shape
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    pad = int(np.ceil(point_radius_px)) + 1
    x0, y0 = max(int(np.floor(pts[:, 0].min())) - pad, 0), max(int(np.floor(pts[:, 1].min())) - pad, 0)
    x1, y1 = min(int(np.ceil(pts[:, 0].max())) + pad + 1, w), min(int(np.ceil(pts[:, 1].max())) + pad + 1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    crop = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    local = pts - np.array([x0, y0])
    if len(pts) >= 3:
        rr, cc = polygon(local[:, 1], local[:, 0], crop.shape)
    elif len(pts) == 2:
        rr, cc = line(*(int(round(v)) for v in (local[0, 1], local[0, 0], local[1, 1], local[1, 0])))
    else:
        rr, cc = disk((local[0, 1], local[0, 0]), max(point_radius_px, 0.5), shape=crop.shape)
    ok = (rr >= 0) & (rr < crop.shape[0]) & (cc >= 0) & (cc < crop.shape[1])
    crop[rr[ok], cc[ok]] = True
    if not crop.any():
        return None
    ys, xs = np.nonzero(crop)
    box = (x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1)
    return box, crop[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def _union(parts: list[tuple[tuple[int, int, int, int], np.ndarray]], pad: int,
           shape: tuple[int, int]) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """One box and crop covering several (box, crop) parts, grown by ``pad`` pixels."""
    boxes = np.array([b for b, _ in parts])
    x0, y0 = max(int(boxes[:, 0].min()) - pad, 0), max(int(boxes[:, 1].min()) - pad, 0)
    x1, y1 = min(int(boxes[:, 2].max()) + pad, shape[1]), min(int(boxes[:, 3].max()) + pad, shape[0])
    crop = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    for (bx0, by0, bx1, by1), m in parts:
        crop[by0 - y0:by1 - y0, bx0 - x0:bx1 - x0] |= m
    return (x0, y0, x1, y1), crop


def _group_calcifications(calcs: list[tuple[tuple[int, int, int, int], np.ndarray]], clusters: list[tuple[int, int, int, int]],
                          gap_px: float, min_members: int) -> list[list[int]]:
    """Indices of calcifications forming clusters: single linkage within ``gap_px`` between
    centres, at least ``min_members``; calcifications inside an annotated cluster box are left out."""
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial.distance import cdist

    def inside(b: tuple[int, int, int, int]) -> bool:
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        return any(c[0] <= cx <= c[2] and c[1] <= cy <= c[3] for c in clusters)

    free = [i for i, (b, _) in enumerate(calcs) if not inside(b)]
    if not free:
        return []
    centres = np.array([[(calcs[i][0][0] + calcs[i][0][2]) / 2, (calcs[i][0][1] + calcs[i][0][3]) / 2] for i in free])
    _, comp = connected_components(cdist(centres, centres) <= gap_px, directed=False)
    groups = [[free[j] for j in np.flatnonzero(comp == c)] for c in np.unique(comp)]
    return [g for g in groups if len(g) >= min_members]


def _image_lesions(
    rois: list[dict[str, object]], shape: tuple[int, int], spacing_mm: float, opts: dict[str, object],
) -> list[tuple[str, tuple[int, int, int, int], np.ndarray, dict[str, object]]]:
    """(kind, box, crop, attributes) per lesion of one image, on the full-resolution grid."""
    found: dict[str, list[tuple[tuple[int, int, int, int], np.ndarray, str]]] = {}
    for roi in rois:
        name = str(roi["name"]).strip()
        kind = ROI_TYPES.get(name.lower(), "other")
        got = roi_mask(roi["points"], shape, float(opts["point_radius_mm"]) / spacing_mm)  # type: ignore[arg-type]
        if got is not None:
            found.setdefault(kind, []).append((got[0], got[1], name))
    out = [(k, b, m, {"roi_name": n}) for k in ("mass", "calcification_cluster", "other") for b, m, n in found.get(k, [])]
    calcs = [(b, m) for b, m, _ in found.get("calcification", [])]
    mode = opts["calcifications"]
    if mode == "each":
        out += [("calcification", b, m, {"roi_name": "Calcification"}) for b, m in calcs]
    elif mode == "cluster" and calcs:
        boxes = [b for b, _, _ in found.get("calcification_cluster", [])]
        for group in _group_calcifications(calcs, boxes, float(opts["cluster_gap_mm"]) / spacing_mm,
                                           int(opts["min_cluster"])):
            box, crop = _union([calcs[i] for i in group], int(round(1.0 / spacing_mm)), shape)
            out.append(("calcification_cluster", box, crop, {"roi_name": "Calcification", "n_calcifications": len(group)}))
    return [(k, b, m, a) for k, b, m, a in out if k in opts["kinds"]]


def _load_one(path: Path, row: dict[str, str], label: str, root: Path, opts: dict[str, object]) -> LesionImage:
    from medanomaly.data.lesions2d import lesion_from_crop, reduce_crop, reduce_factor, reduce_image
    from medanomaly.io import read

    image = read(path)
    if not image.is_2d or image.n_components != 1:
        raise InputError(f"expected one grey-level mammogram, got shape {image.array.shape}", path)
    xml = root / "AllXML" / f"{row['file']}.xml"
    rois = read_rois(xml) if xml.is_file() else []
    shape = image.shape[1:3]
    lesions = _image_lesions(rois, shape, float(image.spacing[0]), opts)
    factor = reduce_factor(shape, opts["max_side"])  # type: ignore[arg-type]
    small = reduce_image(image, factor)
    annotated: list[Lesion2D] = []
    for kind, box, crop, attrs in lesions:
        rbox, rcrop = reduce_crop(box, crop, factor)
        annotated.append(lesion_from_crop(small, rbox, rcrop, label, kind, {**attrs, "birads": row["birads"]}))
    parts = path.name.split("_")
    view = {"ML": "MLO"}.get(row["view"].upper(), row["view"].upper())
    return LesionImage(small.with_meta(view=view, laterality=row["laterality"].upper()), tuple(annotated),
                       patient_id=parts[1] if len(parts) > 2 else row["file"], key=row["file"], view=view,
                       laterality=row["laterality"].upper(), attributes={"birads": row["birads"], "acr": row["acr"]})


@DATASETS.register("inbreast_lesions")
@checked
def load_inbreast_lesions(
    root: str | Path,
    calcifications: str = "cluster",
    cluster_gap_mm: Millimetres = 5.0,
    min_cluster: Annotated[int, Field(ge=1, le=1000)] = 3,
    kinds: Sequence[str] = ("mass", "calcification_cluster"),
    point_radius_mm: Millimetres = 0.25,
    birads_map: Mapping[str, str] | None = None,
    class_names: Sequence[str] = CLASSES,
    max_side: MaxSide | None = 1024,
    val: Fraction = 0.15,
    test: Fraction = 0.15,
    seed: Seed = 0,
) -> LesionSet:
    """INbreast mammograms with lesion masks and boxes (detection), split by patient.

    Args:
        root: the INbreast folder (``INbreast.csv``, ``AllDICOMs/``, ``AllXML/``).
        calcifications: ``cluster``, ``each`` or ``none`` (see the module docstring).
        cluster_gap_mm, min_cluster: the clustering of single calcifications.
        kinds: finding types to keep (``mass``, ``calcification_cluster``, ``calcification``, ``other``).
        point_radius_mm: radius of the disk drawn for a single-point ROI.
        birads_map: BI-RADS -> class (default :data:`BIRADS_MAP`: 1-2 benign, 3 uncertain, 4-6 malignant).
        class_names: lesion classes, least to most severe.
        max_side: block-average images (and masks) so the longer side is at most this many
            pixels (None: full resolution, 3328 x 4084; spacing follows).
        val, test, seed: patient-level split fractions and seed.

    Returns:
        A :class:`~medanomaly.data.lesions2d.LesionSet`; a DICOM or XML that cannot be read is
        reported in ``skipped`` and the rest is loaded.

    Raises:
        InputError: a missing ``INbreast.csv``/``AllDICOMs``, an unknown BI-RADS value, or no image at all.
    """
    root = Path(root)
    if calcifications not in ("cluster", "each", "none"):
        raise InputError(f"calcifications must be 'cluster', 'each' or 'none', got {calcifications!r}")
    mapping = {str(k).lower(): v for k, v in (birads_map or BIRADS_MAP).items()}
    rows = read_rows(root / "INbreast.csv")
    dicom_dir = root / "AllDICOMs"
    if not dicom_dir.is_dir():
        raise InputError("no AllDICOMs folder", root)
    by_file = {path.name.split("_")[0]: path for path in dicom_dir.glob("*.dcm")}
    opts = {"calcifications": calcifications, "cluster_gap_mm": cluster_gap_mm, "min_cluster": min_cluster,
            "kinds": tuple(kinds), "point_radius_mm": point_radius_mm, "max_side": max_side}
    items, skipped = [], []
    for row in rows:
        label = birads_class(row["birads"], mapping)
        if label not in class_names:
            raise InputError(f"BI-RADS {row['birads']} maps to {label!r}, not in {list(class_names)}", root / "INbreast.csv")
        path = by_file.get(row["file"])
        if path is None:
            skipped.append(f"{row['file']}: INbreast.csv names it but AllDICOMs has no such DICOM")
            continue
        try:
            items.append(_load_one(path, row, label, root, opts))
        except InputError as exc:
            skipped.append(f"{row['file']}: {exc.reason}")
    if not items:
        raise InputError("no INbreast image could be loaded" + (f" ({skipped[0]})" if skipped else ""), root)
    return LesionSet(tuple(items), tuple(class_names), "inbreast", skipped=tuple(skipped)).with_patient_splits(
        val=val, test=test, seed=seed)
