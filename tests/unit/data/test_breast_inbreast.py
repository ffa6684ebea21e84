"""INbreast lesions on a fixture in the release's layout: INbreast.csv (';'), AllDICOMs/ with the
release's file names, AllXML/ OsiriX plist ROIs (polygons, single-point calcifications, clusters)."""

from __future__ import annotations

import plistlib
from pathlib import Path

import numpy as np
import pytest

from medanomaly.data.inbreast import load_inbreast, load_inbreast_lesions
from medanomaly.errors import InputError
from medanomaly.registry import DATASETS

SPACING = 0.07  # ImagerPixelSpacing of the release, mm
H, W = 400, 300


def _save_dicom(path: Path, pixels: np.ndarray) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography, for presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName, ds.PatientID = "MG", "removed", "removed"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.ImagerPixelSpacing = [SPACING, SPACING]
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _roi(name: str, points: list[tuple[float, float]]) -> dict:
    """One ROI as OsiriX writes it (INbreast AllXML)."""
    cx, cy = np.mean(points, axis=0)
    return {"Area": 0.0, "Center": f"({cx:.6f}, {cy:.6f}, 0.000000)", "Dev": 0.0, "IndexInImage": 0, "Max": 0.0,
            "Mean": 0.0, "Min": 0.0, "Name": name, "NumberOfPoints": len(points),
            "Point_mm": [f"({x * SPACING:.6f}, {y * SPACING:.6f}, 0.000000)" for x, y in points],
            "Point_px": [f"({x:.6f}, {y:.6f})" for x, y in points], "Total": 0.0, "Type": 15 if len(points) > 1 else 19}


def _write_xml(path: Path, rois: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tree = {"Images": [{"ImageHeight": H, "ImageIndex": 0, "ImageWidth": W, "NumberOfROIs": len(rois), "ROIs": rois}]}
    with path.open("wb") as handle:
        plistlib.dump(tree, handle)


MASS = [(100.0, 100.0), (160.0, 100.0), (160.0, 140.0), (100.0, 140.0)]  # 61 x 41 px rectangle outline
CALCS = [(60.0, 300.0), (70.0, 305.0), (80.0, 298.0), (66.0, 290.0)]  # within ~1.5 mm: one cluster
LONE = [(250.0, 50.0)]  # > 5 mm from the others: not a cluster on its own
CLUSTER = [(180.0, 250.0), (230.0, 250.0), (230.0, 290.0), (180.0, 290.0)]
INSIDE = [(200.0, 270.0), (210.0, 265.0)]  # calcifications inside the annotated cluster


def write_inbreast(root: Path) -> dict[str, tuple[str, str]]:
    """Three patients, two views each; returns File Name -> (class, patient hash)."""
    rng = np.random.default_rng(0)
    cases = [  # (file, hash, laterality, view, acr, birads, rois)
        ("20586908", "6c613a14b80a8591", "R", "CC", "2", "4c",
         [_roi("Mass", MASS)] + [_roi("Calcification", [p]) for p in CALCS + LONE]),
        ("20586934", "6c613a14b80a8591", "R", "MLO", "2", "5", [_roi("Spiculated Region", MASS)]),
        ("22614097", "0ddc2cf4e7e2c4e6", "L", "CC", "1", "3",
         [_roi("Cluster", CLUSTER)] + [_roi("Calcification", [p]) for p in INSIDE]),
        ("22614127", "0ddc2cf4e7e2c4e6", "L", "MLO", "1", "3", [_roi("Asymmetry", MASS)]),
        ("24055274", "f4b2d377f43ba0bd", "L", "CC", "3", "2", [_roi("Mass", MASS)]),
        ("24055355", "f4b2d377f43ba0bd", "L", "MLO", "3", "1", []),
    ]
    lines = ["Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads"]
    expected = {}
    for file, phash, lat, view, acr, birads, rois in cases:
        img = (1000 + 50 * rng.standard_normal((H, W))).clip(0, 4095)
        dcm_view = "ML" if view == "MLO" else view
        _save_dicom(root / "AllDICOMs" / f"{file}_{phash}_MG_{lat}_{dcm_view}_ANON.dcm", img)
        if rois:
            _write_xml(root / "AllXML" / f"{file}.xml", rois)
        lines.append(f"removed;removed;{lat};{view};201001;{file};{acr};{birads}")
        expected[file] = ({"1": "normal", "2": "benign", "3": "uncertain"}.get(birads, "malignant"), phash)
    (root / "INbreast.csv").write_text("\n".join(lines) + "\n")
    return expected


@pytest.fixture()
def inbreast(tmp_path: Path) -> tuple[Path, dict]:
    return tmp_path, write_inbreast(tmp_path)


def test_lesions_boxes_masks_and_birads_classes(inbreast):
    root, expected = inbreast
    s = load_inbreast_lesions(root, max_side=None)
    assert s.source == "inbreast" and not s.synthetic and s.skipped == ()
    items = {it.key: it for it in s}
    assert set(items) == set(expected)
    cc = items["20586908"]
    assert cc.image.spacing[:2] == pytest.approx((SPACING, SPACING)) and cc.image.modality == "MG"
    assert (cc.view, cc.laterality, cc.attributes["birads"], cc.attributes["acr"]) == ("CC", "R", "4c", "2")
    assert [(les.kind, les.label) for les in cc.lesions] == [("mass", "malignant"), ("calcification_cluster", "malignant")]
    mass, cluster = cc.lesions
    assert mass.box_px == (100, 100, 161, 141) and mass.mask.all()
    assert mass.box_mm == pytest.approx(tuple((np.array(mass.box_px) - 0.5) * SPACING))
    assert cluster.attributes["n_calcifications"] == 4  # the lone calcification is not a cluster
    x0, y0, x1, y1 = cluster.box_px
    assert x0 <= 60 - 3 and x1 >= 80 + 3 and y0 <= 290 - 3 and y1 >= 305 + 3 and x1 < 200
    assert items["20586934"].lesions[0].kind == "mass" and items["20586934"].view == "MLO"
    unc = items["22614097"]
    assert [(les.kind, les.label) for les in unc.lesions] == [("calcification_cluster", "uncertain")]
    assert unc.lesions[0].box_px == (180, 250, 231, 291)  # the annotated cluster absorbs its calcifications
    assert items["22614127"].lesions == ()  # asymmetry is not a default kind
    assert items["24055274"].label == "benign" and items["24055355"].lesions == ()
    for key, (cls, phash) in expected.items():
        assert items[key].patient_id == phash
        assert items[key].label == (cls if items[key].lesions else "normal")


def test_calcification_modes_kinds_and_patient_splits(inbreast):
    root, _ = inbreast
    each = {it.key: it for it in load_inbreast_lesions(root, calcifications="each", max_side=None,
                                                        kinds=("mass", "calcification", "other"))}
    calcs = [les for les in each["20586908"].lesions if les.kind == "calcification"]
    assert len(calcs) == 5 and all(les.area_px <= 50 for les in calcs)  # point ROIs: 0.25 mm disks
    assert [les.kind for les in each["22614127"].lesions] == ["other"]
    none = {it.key: it for it in load_inbreast_lesions(root, calcifications="none")}
    assert [les.kind for les in none["20586908"].lesions] == ["mass"]
    s = load_inbreast_lesions(root, val=0.34, test=0.34, seed=1)
    split_of: dict[str, set] = {}
    for it in s:
        split_of.setdefault(it.patient_id, set()).add(it.split)
    assert all(len(v) == 1 for v in split_of.values()) and len(split_of) == 3
    assert DATASETS.create("inbreast_lesions", root=root).source == "inbreast"


def test_downsampling_keeps_millimetres(inbreast):
    root, _ = inbreast
    full = {it.key: it for it in load_inbreast_lesions(root, max_side=None)}
    small = {it.key: it for it in load_inbreast_lesions(root, max_side=100)}
    a, b = full["20586908"], small["20586908"]
    assert max(b.shape) <= 100 and b.image.spacing[0] == pytest.approx(4 * SPACING)
    for la, lb in zip(a.lesions, b.lesions, strict=True):
        assert np.allclose(la.box_mm, lb.box_mm, atol=4 * SPACING)
        if la.kind == "mass":
            assert lb.area_mm2() == pytest.approx(la.area_mm2(), rel=0.15)
        else:  # specks grow to whole blocks, never vanish
            assert lb.area_mm2() >= la.area_mm2() and lb.area_px >= 1


def test_bad_files_are_reported_and_the_rest_loaded(inbreast):
    root, _ = inbreast
    bad = next((root / "AllDICOMs").glob("24055274_*"))
    bad.write_bytes(b"not a dicom at all" * 20)
    next((root / "AllDICOMs").glob("24055355_*")).unlink()
    s = load_inbreast_lesions(root)
    assert len(s) == 4 and len(s.skipped) == 2
    assert any(m.startswith("24055355: ") and "no such DICOM" in m for m in s.skipped)
    assert any(m.startswith("24055274: ") for m in s.skipped)
    with pytest.raises(InputError, match="calcifications"):
        load_inbreast_lesions(root, calcifications="some")
    (root / "INbreast.csv").write_text((root / "INbreast.csv").read_text().replace(";4c\n", ";7\n"))
    with pytest.raises(InputError, match="BI-RADS"):
        load_inbreast_lesions(root)


def test_classification_modes_still_load(inbreast):
    root, _ = inbreast
    rois = load_inbreast(root, mode="roi", image_size=(16, 16))
    assert len(rois) >= 3 and set(rois.class_names) == {"benign", "uncertain", "malignant"}
