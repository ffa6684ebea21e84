"""LIDC-IDRI: CT series with the radiologists' XML reads; nodule malignancy ratings -> classes.

Layout as downloaded from TCIA (one folder per series holding its ``*.dcm`` and one reading XML)::

    LIDC-IDRI/LIDC-IDRI-0001/<study>/<series>/{1-001.dcm, ..., 069.xml}

The XML (namespace ``http://www.nih.gov``) has one ``readingSession`` per radiologist (up to 4);
each ``unblindedReadNodule`` (nodules >= 3 mm) carries ``characteristics/malignancy`` (1 = highly
unlikely ... 5 = highly suspicious) and one ``roi`` per slice (``imageSOP_UID``, ``inclusion``,
``edgeMap`` points ``xCoord``/``yCoord`` in pixels). Nodules < 3 mm have no characteristics and
are skipped.

Reads of the same nodule by different radiologists are grouped by centroid distance
(``cluster_mm``), the median malignancy of the group gives the class (as commonly done, e.g. with
pylidc): median < 3 benign, = 3 uncertain (indeterminate), > 3 malignant. A cube of ``patch_mm``
around the group centroid is resampled (SimpleITK, linear) to ``image_size`` voxels and mapped
to [0, 1] through the lung window (-1000..400 HU, ``intensity="ct_lung"``). The patient is the
DICOM PatientID.

Example:
    >>> malignancy_class([2, 3, 2]), malignancy_class([3, 4]), malignancy_class([3])
    ('benign', 'malignant', 'uncertain')
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medanomaly.data.bounds import Channels, ImageSize, Millimetres, PatchMillimetres, checked
from medanomaly.data.arrays import LabelledImages, label_index, to_model_array
from medanomaly.errors import InputError
from medanomaly.registry import DATASETS

CLASSES = ("benign", "uncertain", "malignant")
NS = {"n": "http://www.nih.gov"}


def malignancy_class(ratings: Sequence[float]) -> str:
    """Class of a nodule from its readers' malignancy ratings (1-5) by their median."""
    if not len(ratings):
        raise ValueError("no ratings")
    med = float(np.median(ratings))
    return "benign" if med < 3 else ("uncertain" if med == 3 else "malignant")


@dataclass(frozen=True)
class NoduleRead:
    """One radiologist's read of one nodule: malignancy and outline points.

    Attributes:
        reader: index of the reading session in the XML.
        malignancy: rating 1..5.
        points: (n, 3) outline points (x px, y px, SOP Instance UID index into ``sops``).
        sops: SOP Instance UIDs of the slices the points lie on.
    """

    reader: int
    malignancy: int
    points: np.ndarray
    sops: tuple[str, ...]


def read_lidc_xml(path: str | Path) -> tuple[str, list[NoduleRead]]:
    """(series instance UID, nodule reads with a malignancy rating) of one LIDC XML."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise InputError(f"not a readable LIDC XML ({exc.__class__.__name__})", path) from None
    if not root.tag.endswith("LidcReadMessage"):
        raise InputError("not an LIDC reading XML (root is not LidcReadMessage)", path)
    series = root.findtext("n:ResponseHeader/n:SeriesInstanceUid", default="", namespaces=NS).strip()
    reads: list[NoduleRead] = []
    for r, session in enumerate(root.findall("n:readingSession", NS)):
        for nodule in session.findall("n:unblindedReadNodule", NS):
            rating = nodule.findtext("n:characteristics/n:malignancy", default="", namespaces=NS).strip()
            if not rating:
                continue  # < 3 mm nodules carry no characteristics
            sops: list[str] = []
            pts: list[tuple[float, float, int]] = []
            for roi in nodule.findall("n:roi", NS):
                if roi.findtext("n:inclusion", default="TRUE", namespaces=NS).strip().upper() != "TRUE":
                    continue
                sop = roi.findtext("n:imageSOP_UID", default="", namespaces=NS).strip()
                sops.append(sop)
                for edge in roi.findall("n:edgeMap", NS):
                    pts.append((float(edge.findtext("n:xCoord", namespaces=NS)),
                                float(edge.findtext("n:yCoord", namespaces=NS)), len(sops) - 1))
            if pts:
                reads.append(NoduleRead(r, int(float(rating)), np.array(pts), tuple(sops)))
    return series, reads


def cluster_reads(centroids_mm: np.ndarray, readers: Sequence[int], cluster_mm: float) -> list[list[int]]:
    """Group reads whose centroids are within ``cluster_mm`` (single linkage); one read per reader
    per group is not enforced (the median absorbs duplicates)."""
    n = len(centroids_mm)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            if np.linalg.norm(centroids_mm[i] - centroids_mm[j]) <= cluster_mm:
                parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def _read_series(folder: Path, series_uid: str):
    """(Volume in HU, SOP UID -> slice index, PatientID) of one series folder."""
    import pydicom
    import SimpleITK as sitk

    from medanomaly.io.itk import itk_path
    from medanomaly.types import Volume

    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(itk_path(folder), series_uid) if series_uid else ()
    if not files:
        files = reader.GetGDCMSeriesFileNames(itk_path(folder))
    if not files:
        raise InputError("no DICOM series next to the LIDC XML", folder)
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError:
        raise InputError("unreadable DICOM series", folder) from None
    sop_index: dict[str, int] = {}
    patient = ""
    for z, name in enumerate(files):  # GDCM sorts the files along the slice normal
        ds = pydicom.dcmread(name, stop_before_pixels=True)
        sop_index[str(ds.SOPInstanceUID)] = z
        patient = patient or str(getattr(ds, "PatientID", ""))
    return Volume.from_sitk(image, modality="CT"), sop_index, patient or folder.name


def _patch(volume, center_mm: np.ndarray, patch_mm: float, size: Sequence[int]) -> np.ndarray:
    """A cube of ``patch_mm`` around ``center_mm`` resampled to ``size`` (z, y, x) voxels, in HU."""
    from medanomaly.preprocess.resample import resample_like
    from medanomaly.types import Volume

    size_xyz = [int(s) for s in size][::-1]
    spacing = [patch_mm / s for s in size_xyz]
    direction = volume.direction
    origin = center_mm - direction @ (np.array(spacing) * (np.array(size_xyz) - 1) / 2)
    ref = Volume(np.zeros(tuple(size), np.uint8), spacing=tuple(spacing), origin=tuple(float(v) for v in origin),
                 direction=direction)  # fmt: skip
    return resample_like(volume, ref, "linear", default=-1000.0, dtype=np.float32).array


@DATASETS.register("lidc")
@checked
def load_lidc(
    root: str | Path,
    patch_mm: PatchMillimetres = 48.0,
    cluster_mm: Millimetres = 10.0,
    class_names: Sequence[str] | None = None,
    image_size: ImageSize = (32, 32, 32),
    channels: Channels = 1,
) -> LabelledImages:
    """One 3D patch per nodule (reads grouped across radiologists), labelled by median malignancy.

    Raises:
        InputError: no XML under ``root``, an unreadable XML or series, a 2D ``image_size``.
    """
    root = Path(root)
    if len(image_size) != 3:
        raise InputError("LIDC patches are 3D: image_size needs 3 sizes (z, y, x)")
    xmls = sorted(root.rglob("*.xml"))
    if not xmls:
        raise InputError("no LIDC reading XML found", root)
    names = tuple(class_names or CLASSES)
    images, labels, patients, keys = [], [], [], []
    for xml in xmls:
        series_uid, reads = read_lidc_xml(xml)
        if not reads:
            continue
        volume, sop_index, patient = _read_series(xml.parent, series_uid)
        centroids = []
        for read in reads:
            missing = [s for s in read.sops if s not in sop_index]
            if missing:
                raise InputError(f"XML refers to {len(missing)} slice(s) not in the series", xml)
            z = np.array([sop_index[read.sops[int(k)]] for k in read.points[:, 2]], dtype=float)
            idx = np.stack([read.points[:, 0], read.points[:, 1], z], axis=1)
            centroids.append(volume.index_to_physical(idx.mean(axis=0)))
        centroids_arr = np.array(centroids)
        for g, group in enumerate(cluster_reads(centroids_arr, [r.reader for r in reads], cluster_mm)):
            label = malignancy_class([reads[i].malignancy for i in group])
            center = centroids_arr[group].mean(axis=0)
            patch = _patch(volume, center, patch_mm, image_size)
            images.append(to_model_array(patch, image_size, channels, intensity="ct_lung"))
            labels.append(label_index(label, names, f"{xml.name} nodule {g}", xml))
            patients.append(patient)
            keys.append(f"{xml.parent.name}#{g}")
    if not images:
        raise InputError("no rated nodules (>= 3 mm) in the LIDC XMLs", root)
    return LabelledImages(np.stack(images), np.array(labels), np.array(patients), names,
                          keys=np.array(keys, dtype=object), intensity="ct_lung")
