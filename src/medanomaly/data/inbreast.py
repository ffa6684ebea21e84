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

Example:
    >>> birads_class("4c"), birads_class("2"), birads_class("3")
    ('malignant', 'benign', 'uncertain')
"""

from __future__ import annotations

import csv
import plistlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from medanomaly.data.arrays import LabelledImages, label_index, to_model_array
from medanomaly.errors import InputError
from medanomaly.registry import DATASETS

CLASSES = ("benign", "uncertain", "malignant")
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


def read_table(csv_path: str | Path) -> dict[str, str]:
    """``File Name -> BI-RADS`` from ``INbreast.csv`` (';'-separated)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InputError("INbreast.csv not found", csv_path)
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, delimiter=";")
        fields = {f.strip().lower(): f for f in (reader.fieldnames or [])}
        if "file name" not in fields or "bi-rads" not in fields:
            raise InputError("INbreast.csv lacks the 'File Name' or 'Bi-Rads' column", csv_path)
        return {row[fields["file name"]].strip(): row[fields["bi-rads"]].strip() for row in reader
                if row.get(fields["file name"])}


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
def load_inbreast(
    root: str | Path,
    mode: str = "image",
    roi_kinds: Sequence[str] = ("Mass", "Calcification", "Cluster", "Spiculated Region"),
    margin: float = 0.25,
    min_roi_px: int = 32,
    birads_map: Mapping[str, str] | None = None,
    class_names: Sequence[str] | None = None,
    image_size: Sequence[int] = (256, 256),
    channels: int = 1,
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
            images.append(to_model_array(crop, image_size, channels))
            labels.append(label)
            patients.append(patient)
            keys.append(f"{file_name}" + (f"#roi{i}" if mode == "roi" else ""))
    if not images:
        raise InputError("no INbreast samples found (no images, or no ROIs of the requested kinds)", root)
    return LabelledImages(np.stack(images), np.array(labels), np.array(patients), names,
                          keys=np.array(keys, dtype=object))
