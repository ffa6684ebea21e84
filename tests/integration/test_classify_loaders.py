"""Each classification loader on a tiny fixture written in its real on-disk format, end to end:
labels as the format defines them, patient-level splits, and a tiny model trained on it.

Formats: MedMNIST ``.npz``, folder + CSV manifest, INbreast (DICOM + OsiriX plist XML +
``INbreast.csv``), LIDC-IDRI (CT DICOM series + reading XML in the ``http://www.nih.gov`` schema).
"""

from __future__ import annotations

import csv
import plistlib
from pathlib import Path

import numpy as np
import pytest

from medanomaly.classify.config import ClassificationConfig
from medanomaly.classify.engine import fit_members, load_data

CLASSES3 = ("benign", "uncertain", "malignant")


# ------------------------------------------------------------------------------ writers
def _save_dicom(path: Path, pixels: np.ndarray, **tags) -> str:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop = tags.pop("SOPInstanceUID", generate_uid())
    sop_class = tags.pop("SOPClassUID", "1.2.840.10008.5.1.4.1.1.2")  # CT Image Storage
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return sop


def _blob(shape, center, radius, value, rng, base=100.0):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = base + rng.normal(0, 5, shape)
    img[(yy - center[1]) ** 2 + (xx - center[0]) ** 2 <= radius**2] += value
    return img


def write_inbreast(root: Path, n_per_class: int = 3) -> dict[str, str]:
    """INbreast layout with 2 views per patient; returns File Name -> expected class."""
    rng = np.random.default_rng(0)
    birads_for = {"benign": ["2", "1"], "uncertain": ["3", "3"], "malignant": ["4c", "5"]}
    rows, expected = [], {}
    fid = 20586900
    for c, cls in enumerate(CLASSES3):
        for p in range(n_per_class):
            phash = f"{c}{p}a1b2c3d4e5f6"
            for v, view in enumerate(("CC", "ML")):
                fid += 1
                img = _blob((64, 48), (24, 30), 6 + 3 * c, 200.0 * (c + 1), rng).astype(np.uint16)
                _save_dicom(root / "AllDICOMs" / f"{fid}_{phash}_MG_L_{view}_ANON.dcm", img,
                            SOPClassUID="1.2.840.10008.5.1.4.1.1.1.2", Modality="MG")
                roi = {"Area": 100.0, "Center": "(24.0, 30.0)", "Dev": 1.0, "IndexInImage": 0, "Max": 1.0,
                       "Mean": 1.0, "Min": 0.0, "Name": "Mass" if c < 2 else "Calcification",
                       "NumberOfPoints": 4, "Point_mm": ["(1.0, 1.0, 0.0)"] * 4,
                       "Point_px": ["(18.0, 24.0)", "(30.0, 24.0)", "(30.0, 36.0)", "(18.0, 36.0)"],
                       "Total": 1.0, "Type": 15}
                (root / "AllXML").mkdir(parents=True, exist_ok=True)
                with (root / "AllXML" / f"{fid}.xml").open("wb") as fh:
                    plistlib.dump({"Images": [{"ImageIndex": 0, "NumberOfROIs": 1, "ROIs": [roi]}]}, fh)
                rows.append(f"removed;removed;L;{view};201001;{fid};2;{birads_for[cls][v]}")
                expected[str(fid)] = cls
    header = "Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads"
    (root / "INbreast.csv").write_text("\n".join([header, *rows]) + "\n")
    return expected


LIDC_XML = """<?xml version="1.0" encoding="UTF-8"?>
<LidcReadMessage xmlns="http://www.nih.gov" uid="1.3.6.1.4.1.14519.5.2.1.6279.6001.1">
  <ResponseHeader>
    <Version>1.8.1</Version>
    <TaskDescription>Second unblinded read</TaskDescription>
    <SeriesInstanceUid>{series}</SeriesInstanceUid>
    <StudyInstanceUID>{study}</StudyInstanceUID>
  </ResponseHeader>
{sessions}
</LidcReadMessage>
"""


def _lidc_session(nodules: list[tuple[int, list[str], tuple[int, int], int]], small: bool) -> str:
    parts = ["  <readingSession>", "    <annotationVersion>3.12</annotationVersion>",
             "    <servicingRadiologistID>anon</servicingRadiologistID>"]
    for n, (malignancy, sops, (cx, cy), r) in enumerate(nodules):
        parts += ["    <unblindedReadNodule>", f"      <noduleID>{n}</noduleID>", "      <characteristics>",
                  "        <subtlety>4</subtlety><calcification>6</calcification>",
                  f"        <malignancy>{malignancy}</malignancy>", "      </characteristics>"]
        for z, sop in enumerate(sops):
            parts += ["      <roi>", f"        <imageZposition>{-10.0 + 2 * z}</imageZposition>",
                      f"        <imageSOP_UID>{sop}</imageSOP_UID>", "        <inclusion>TRUE</inclusion>"]
            for dx, dy in ((-r, 0), (0, -r), (r, 0), (0, r)):
                parts.append(f"        <edgeMap><xCoord>{cx + dx}</xCoord><yCoord>{cy + dy}</yCoord></edgeMap>")
            parts.append("      </roi>")
        parts.append("    </unblindedReadNodule>")
    if small:  # a < 3 mm nodule: no characteristics, must be skipped
        parts += ["    <unblindedReadNodule>", "      <noduleID>small</noduleID>", "      <roi>",
                  f"        <imageSOP_UID>{nodules[0][1][0]}</imageSOP_UID>", "        <inclusion>TRUE</inclusion>",
                  "        <edgeMap><xCoord>5</xCoord><yCoord>5</yCoord></edgeMap>", "      </roi>",
                  "    </unblindedReadNodule>"]
    parts.append("  </readingSession>")
    return "\n".join(parts)


def write_lidc(root: Path, per_class: int = 3) -> dict[str, str]:
    """LIDC-IDRI layout, one series per patient, one nodule read by two radiologists with
    ratings chosen so the median gives each class; returns PatientID -> expected class."""
    from pydicom.uid import generate_uid

    rng = np.random.default_rng(1)
    ratings = {"benign": (1, 2), "uncertain": (3, 3), "malignant": (4, 5)}
    expected = {}
    k = 0
    for cls in CLASSES3:
        for _ in range(per_class):
            k += 1
            pid = f"LIDC-IDRI-{k:04d}"
            series, study = generate_uid(), generate_uid()
            folder = root / pid / "study" / "series"
            sops = []
            for z in range(8):
                hu = _blob((32, 32), (16, 15), 4 if cls != "malignant" else 6, 900.0, rng, base=-800.0)
                pixels = (hu + 1024).astype(np.int16)
                sops.append(_save_dicom(folder / f"1-{z + 1:03d}.dcm", pixels, Modality="CT", PatientID=pid,
                                        SeriesInstanceUID=series, StudyInstanceUID=study,
                                        ImagePositionPatient=[-16.0, -16.0, -10.0 + 2 * z],
                                        ImageOrientationPatient=[1, 0, 0, 0, 1, 0], PixelSpacing=[1.0, 1.0],
                                        SliceThickness=2.0, RescaleSlope=1, RescaleIntercept=-1024,
                                        InstanceNumber=z + 1))
            # two readers outline the same nodule (centroids 1 px apart): one group
            nod = sops[3:6]
            sessions = [_lidc_session([(ratings[cls][0], nod, (16, 15), 3)], small=True),
                        _lidc_session([(ratings[cls][1], nod, (17, 15), 3)], small=False)]
            (folder / "069.xml").write_text(LIDC_XML.format(series=series, study=study,
                                                            sessions="\n".join(sessions)))
            expected[pid] = cls
    return expected


def write_manifest(root: Path, n_patients: int = 9) -> dict[str, str]:
    """PNG images + ``manifest.csv`` (two images per patient, no split column)."""
    import SimpleITK as sitk

    rng = np.random.default_rng(2)
    rows, expected = [], {}
    for p in range(n_patients):
        label = ("normal", "abnormal")[p % 2]
        for i in range(2):
            img = _blob((24, 24), (12, 12), 4, 120.0 if label == "abnormal" else 0.0, rng)
            name = f"images/p{p}_{i}.png"
            (root / "images").mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(sitk.GetImageFromArray(np.clip(img, 0, 255).astype(np.uint8)), str(root / name))
            rows.append({"path": name, "label": label, "patient_id": f"P{p}"})
            expected[Path(name).name] = label
    with (root / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "label", "patient_id"])
        writer.writeheader()
        writer.writerows(rows)
    return expected


def write_medmnist(path: Path, three_d: bool) -> None:
    rng = np.random.default_rng(3)
    shape = (10, 8, 8) if three_d else (28, 28)
    arrays = {}
    for split, n in (("train", 12), ("val", 6), ("test", 6)):
        arrays[f"{split}_labels"] = (np.arange(n) % 2)[:, None].astype(np.uint8)
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, *shape)).astype(np.uint8)
    np.savez(path, **arrays)


# ------------------------------------------------------------------------------ helpers
def _config(dataset: str, params: dict, size: list[int], class_names=None) -> ClassificationConfig:
    return ClassificationConfig.model_validate({
        "task": "classification", "seed": 0,
        "data": {"dataset": {"name": dataset, "params": params}, "image_size": size,
                 "class_names": class_names, "val_fraction": 0.34, "test_fraction": 0.34},
        "model": {"name": "compact_cnn", "params": {"widths": [4, 8], "hidden": 0}},
        "train": {"epochs": 1, "batch_size": 8, "progress": False},
    })


def _train_tiny(cfg: ClassificationConfig, data) -> None:
    import torch

    models, results, _ = fit_members(cfg, data, None, progress=False)
    assert results[0].epochs_run == 1
    x = torch.from_numpy(data.images[:2])
    assert models[0](x).shape == (2, len(data.class_names))


def _assert_patient_level(data) -> None:
    for pid in np.unique(data.patient_ids):
        assert len(set(data.splits[data.patient_ids == pid].tolist())) == 1
    assert set(data.splits.tolist()) == {"train", "val", "test"}


# ------------------------------------------------------------------------------ tests
def test_classify_loader_inbreast(tmp_path: Path) -> None:
    expected = write_inbreast(tmp_path)
    cfg = _config("inbreast", {"root": str(tmp_path)}, [16, 16])
    data = load_data(cfg)
    assert data.class_names == CLASSES3 and len(data) == 18
    for key, label in zip(data.keys, data.labels, strict=True):
        assert data.class_names[label] == expected[key]
    assert len(np.unique(data.patient_ids)) == 9  # patient = the hash in the file name
    _assert_patient_level(data)
    _train_tiny(cfg, data)
    rois = load_data(_config("inbreast", {"root": str(tmp_path), "mode": "roi"}, [16, 16]))
    assert len(rois) == 18 and rois.keys[0].endswith("#roi0")


def test_classify_loader_lidc(tmp_path: Path) -> None:
    expected = write_lidc(tmp_path)
    cfg = _config("lidc", {"root": str(tmp_path), "patch_mm": 16.0}, [8, 16, 16])
    data = load_data(cfg)
    assert len(data) == 9  # one nodule per series: two reads grouped, the < 3 mm one skipped
    for pid, label in zip(data.patient_ids, data.labels, strict=True):
        assert data.class_names[label] == expected[pid]
    assert data.images.shape[1:] == (1, 8, 16, 16)
    centre = data.images[0, 0, 4, 6:10, 6:10].mean()
    assert centre > data.images[0, 0, 4, :2, :2].mean()  # the nodule is in the middle of its patch
    _assert_patient_level(data)
    _train_tiny(cfg, data)


def test_classify_loader_manifest(tmp_path: Path) -> None:
    expected = write_manifest(tmp_path)
    cfg = _config("manifest", {"csv": str(tmp_path / "manifest.csv")}, [16, 16], ["normal", "abnormal"])
    data = load_data(cfg)
    for key, label in zip(data.keys, data.labels, strict=True):
        assert data.class_names[label] == expected[key]
    _assert_patient_level(data)
    _train_tiny(cfg, data)


@pytest.mark.parametrize("three_d", [False, True])
def test_classify_loader_medmnist(tmp_path: Path, three_d: bool) -> None:
    path = tmp_path / ("nodulemnist3d.npz" if three_d else "breastmnist.npz")
    write_medmnist(path, three_d)
    cfg = _config("medmnist", {"path": str(path)}, [8, 8, 8] if three_d else [16, 16])
    data = load_data(cfg)
    assert len(data) == 24 and data.spatial_dims == (3 if three_d else 2)
    assert data.class_names == (("benign", "malignant") if three_d else ("malignant", "normal_or_benign"))
    assert (data.splits == "train").sum() == 12  # official splits kept
    np.testing.assert_array_equal(data.split("val").labels, np.arange(6) % 2)
    _train_tiny(cfg, data)
