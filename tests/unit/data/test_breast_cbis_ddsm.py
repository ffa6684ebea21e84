"""CBIS-DDSM on a fixture in the release layout: the description CSVs (their real column names,
``breast_density`` vs ``breast density``, ROI paths ending in a newline) and DICOM files at the
paths they name (``<case>/<study UID>/<series UID>/00000x.dcm``), full mammogram, cropped image
and binary ROI mask per abnormality."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from medanomaly.data.cbis_ddsm import load_cbis_ddsm_lesions, read_tables
from medanomaly.errors import InputError
from medanomaly.registry import DATASETS

H, W = 80, 60
MASS_HEADER = ["patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
               "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
               "image file path", "cropped image file path", "ROI mask file path"]
CALC_HEADER = ["patient_id", "breast density", "left or right breast", "image view", "abnormality id",
               "abnormality type", "calc type", "calc distribution", "assessment", "pathology", "subtlety",
               "image file path", "cropped image file path", "ROI mask file path"]
UID = "1.3.6.1.4.1.9590.100.1.2."


def _save_dicom(path: Path, pixels: np.ndarray) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture, as the release
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "MG", path.parts[-4].split("_", 1)[1]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    bits = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


class Writer:
    """Writes abnormalities of the release into ``data`` and collects their CSV rows."""

    def __init__(self, data: Path) -> None:
        self.data, self.rows, self.n = data, {}, 0
        self.rng = np.random.default_rng(0)

    def uid(self) -> str:
        self.n += 1
        return f"{UID}{1000 + self.n}"

    def full(self, case: str) -> str:
        rel = f"{case}/{self.uid()}/{self.uid()}/000000.dcm"
        _save_dicom(self.data / rel, (2000 + 100 * self.rng.standard_normal((H, W))).clip(0, 65535).astype(np.uint16))
        return rel

    def abnormality(self, table: str, full_rel: str, idx: int, box: tuple[int, int, int, int], values: dict,
                    swapped: bool = False, missing: bool = False) -> None:
        case = full_rel.split("/")[0]
        folder = f"{case}_{idx}/{self.uid()}/{self.uid()}"
        x0, y0, x1, y1 = box
        mask = np.zeros((H, W), np.uint8)
        mask[y0:y1, x0:x1] = 255
        crop = np.full((y1 - y0 + 4, x1 - x0 + 4), 1500, np.uint16)
        crop_name, mask_name = ("000001.dcm", "000000.dcm") if swapped else ("000000.dcm", "000001.dcm")
        if not missing:
            _save_dicom(self.data / folder / crop_name, crop)
            _save_dicom(self.data / folder / mask_name, mask)
        side, view = case.split("_")[-2:]
        header = CALC_HEADER if table.startswith("calc") else MASS_HEADER
        row = dict.fromkeys(header, "")
        row.update({"patient_id": "P_" + case.split("_P_")[1][:5], header[1]: "3", "left or right breast": side,
                    "image view": view, "abnormality id": str(idx), "subtlety": "4", **values,
                    "image file path": full_rel, "cropped image file path": f"{folder}/000000.dcm",
                    "ROI mask file path": f"{folder}/000001.dcm\n"})  # the release's trailing newline
        self.rows.setdefault(table, []).append(row)

    def tables(self, folder: Path) -> None:
        for table, rows in self.rows.items():
            with (folder / table).open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)


MASS = {"abnormality type": "mass", "mass shape": "IRREGULAR", "mass margins": "SPICULATED"}
CALC = {"abnormality type": "calcification", "calc type": "PLEOMORPHIC", "calc distribution": "CLUSTERED"}


def write_cbis(root: Path) -> None:
    w = Writer(root / "CBIS-DDSM")
    a = w.full("Mass-Training_P_00001_LEFT_CC")
    w.abnormality("mass_case_description_train_set.csv", a, 1, (10, 20, 30, 45),
                  {**MASS, "assessment": "4", "pathology": "MALIGNANT"})
    w.abnormality("mass_case_description_train_set.csv", a, 2, (35, 50, 50, 70),
                  {**MASS, "assessment": "4", "pathology": "BENIGN"})
    b = w.full("Mass-Training_P_00004_RIGHT_MLO")
    w.abnormality("mass_case_description_train_set.csv", b, 1, (5, 5, 25, 15),
                  {**MASS, "assessment": "2", "pathology": "BENIGN_WITHOUT_CALLBACK"}, swapped=True)
    c = w.full("Mass-Training_P_00009_LEFT_CC")
    w.abnormality("mass_case_description_train_set.csv", c, 1, (20, 20, 40, 40),
                  {**MASS, "assessment": "3", "pathology": "BENIGN"})
    d = w.full("Mass-Training_P_00011_RIGHT_CC")
    w.abnormality("mass_case_description_train_set.csv", d, 1, (20, 20, 40, 40),
                  {**MASS, "assessment": "4", "pathology": "MALIGNANT"}, missing=True)
    (root / "CBIS-DDSM" / d).unlink()  # a full image the table names but the download lacks
    e = w.full("Calc-Test_P_00001_LEFT_CC")
    w.abnormality("calc_case_description_test_set.csv", e, 1, (12, 22, 28, 40),
                  {**CALC, "assessment": "5", "pathology": "MALIGNANT"})
    f = w.full("Calc-Test_P_00020_RIGHT_MLO")
    w.abnormality("calc_case_description_test_set.csv", f, 1, (30, 10, 50, 30),
                  {**CALC, "assessment": "4", "pathology": "BENIGN_WITHOUT_CALLBACK"}, missing=True)
    w.tables(root)


@pytest.fixture()
def cbis(tmp_path: Path) -> Path:
    write_cbis(tmp_path)
    return tmp_path


def test_tables_are_read_with_both_density_spellings(cbis):
    rows = read_tables(cbis)
    assert len(rows) == 7 and {r["official_split"] for r in rows} == {"train", "test"}
    assert all(not r["ROI mask file path"].endswith("\n") for r in rows)
    calc = [r for r in rows if r["table"].startswith("calc")][0]
    assert calc["breast density"] == "3" and "breast_density" not in calc


def test_lesions_classes_kinds_boxes_and_swapped_series(cbis):
    s = load_cbis_ddsm_lesions(cbis, max_side=None)
    items = {it.key: it for it in s}
    assert set(items) == {"Mass-Training_P_00001_LEFT_CC", "Mass-Training_P_00004_RIGHT_MLO",
                          "Mass-Training_P_00009_LEFT_CC", "Calc-Test_P_00001_LEFT_CC", "Calc-Test_P_00020_RIGHT_MLO"}
    two = items["Mass-Training_P_00001_LEFT_CC"]
    assert [(les.label, les.kind, les.box_px) for les in two.lesions] == [
        ("malignant", "mass", (10, 20, 30, 45)), ("benign", "mass", (35, 50, 50, 70))]
    assert two.lesions[0].mask.all() and two.lesions[0].attributes["mass_margins"] == "SPICULATED"
    assert (two.view, two.laterality, two.patient_id, two.attributes["density"]) == ("CC", "L", "P_00001", "3")
    assert two.image.modality == "MG" and two.image.shape == (1, H, W)
    swapped = items["Mass-Training_P_00004_RIGHT_MLO"]
    assert swapped.lesions[0].box_px == (5, 5, 25, 15) and swapped.lesions[0].label == "benign"
    assert items["Mass-Training_P_00009_LEFT_CC"].lesions[0].label == "uncertain"  # BI-RADS 3
    calc = items["Calc-Test_P_00001_LEFT_CC"].lesions[0]
    assert (calc.kind, calc.label, calc.attributes["calc_type"]) == ("calcification_cluster", "malignant", "PLEOMORPHIC")
    assert items["Calc-Test_P_00020_RIGHT_MLO"].lesions == ()  # its mask is missing: reported, image kept
    assert len(s.skipped) == 2
    assert any(m.startswith("Mass-Training_P_00011_RIGHT_CC: ") and "not found" in m for m in s.skipped)
    assert any(m.startswith("Calc-Test_P_00020_RIGHT_MLO abnormality 1: ") for m in s.skipped)
    masses = load_cbis_ddsm_lesions(cbis, abnormalities=("mass",))
    assert all(it.key.startswith("Mass") for it in masses)
    no_uncertain = load_cbis_ddsm_lesions(cbis, uncertain_assessments=())
    assert {les.label for it in no_uncertain for les in it.lesions} == {"benign", "malignant"}


def test_patient_and_official_splits_never_share_a_patient(cbis):
    for split in ("patient", "official"):
        s = load_cbis_ddsm_lesions(cbis, split=split, val=0.3, test=0.3, seed=0)
        of: dict[str, set] = {}
        for it in s:
            of.setdefault(it.patient_id, set()).add(it.split)
        assert all(len(v) == 1 for v in of.values()), split
    official = {it.key: it.split for it in load_cbis_ddsm_lesions(cbis, split="official", val=0.5)}
    assert official["Calc-Test_P_00001_LEFT_CC"] == official["Calc-Test_P_00020_RIGHT_MLO"] == "test"
    assert official["Mass-Training_P_00001_LEFT_CC"] == "test"  # same patient as an official test image
    assert {official["Mass-Training_P_00004_RIGHT_MLO"], official["Mass-Training_P_00009_LEFT_CC"]} <= {"train", "val"}


def test_downsampling_registry_and_bad_input(cbis):
    small = {it.key: it for it in load_cbis_ddsm_lesions(cbis, max_side=40)}
    les = small["Mass-Training_P_00001_LEFT_CC"].lesions[0]
    assert small["Mass-Training_P_00001_LEFT_CC"].image.shape == (1, 40, 30)
    assert les.box_px == (5, 10, 15, 23) and les.box_mm == pytest.approx((9.5, 19.5, 29.5, 45.5))
    crops = DATASETS.create("cbis_ddsm", root=cbis, image_size=(16, 16), channels=1)
    assert crops.class_names == ("benign", "uncertain", "malignant") and len(crops) == 5
    assert sorted(crops.class_names[i] for i in crops.labels) == ["benign", "benign", "malignant", "malignant",
                                                                  "uncertain"]
    with pytest.raises(InputError, match="no CBIS-DDSM description table"):
        load_cbis_ddsm_lesions(cbis / "CBIS-DDSM")
    with pytest.raises(InputError, match="split"):
        load_cbis_ddsm_lesions(cbis, split="random")
    table = cbis / "mass_case_description_train_set.csv"
    table.write_text(table.read_text().replace("pathology", "diagnosis", 1))
    with pytest.raises(InputError, match="missing column"):
        load_cbis_ddsm_lesions(cbis)
