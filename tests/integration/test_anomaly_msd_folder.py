"""``evaluate.folder``: a 3D anomaly run scored on the user's own labelled scans in the Medical Segmentation Decathlon's
layout (BraTS as MSD Task01 ships it: 4D multi-contrast NIfTI, label maps), written here from the real brain2 scan and
its expert mask; the case is scored as the named brain2 case is, named by its place in the listing."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from medanomaly.data.sources import pyradiomics_case
from medanomaly.engine import evaluate_run
from medanomaly.errors import ConfigError, InputError
from medanomaly.io import read

from .conftest import train_tiny_anomaly


def write_msd_task(root: Path) -> Path:
    """An MSD Task01-style folder of one case: brain2 as channel 2 (t1gd) of a 4D NIfTI, its tumour as label 3."""
    image_path, mask_path = pyradiomics_case("brain2")
    image, mask = read(image_path), read(mask_path)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ image.affine_lps  # LPS -> RAS, as NIfTI stores it
    t1gd = np.asarray(image.array, np.float32).transpose(2, 1, 0)
    channels = np.stack([t1gd * 0.5, t1gd[::-1], t1gd, np.sqrt(np.abs(t1gd))], axis=-1)  # FLAIR, T1w, t1gd, T2w
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    nib.save(nib.Nifti1Image(channels, affine), root / "imagesTr" / "BRATS_001.nii.gz")
    labels = (np.asarray(mask.array) > 0).astype(np.uint8).transpose(2, 1, 0) * 3
    nib.save(nib.Nifti1Image(labels, affine), root / "labelsTr" / "BRATS_001.nii.gz")
    listing = {"name": "BRATS", "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
               "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
               "training": [{"image": "./imagesTr/BRATS_001.nii.gz", "label": "./labelsTr/BRATS_001.nii.gz"}],
               "test": []}  # fmt: skip
    (root / "dataset.json").write_text(json.dumps(listing))
    return root


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return train_tiny_anomaly(tmp_path_factory.mktemp("msd"), "normative")


def _evaluate_with(run: Path, evaluate: dict) -> dict:
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["evaluate"] = {"n_bootstrap": 20, **evaluate}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return evaluate_run(run)


def test_an_msd_folder_case_is_scored_as_the_named_case(tiny_run, tmp_path) -> None:
    task = write_msd_task(tmp_path / "Task01_BrainTumour")
    named = _evaluate_with(tiny_run, {"cases": ["brain2"]})
    folder = _evaluate_with(tiny_run, {"cases": [], "folder": {"root": str(task), "channel": 2}})
    assert [c["case"] for c in folder["cases"]] == ["test_001"]
    # the same scan and mask, through a NIfTI header whose geometry is float32 (the NRRD's is float64)
    assert folder["pixel_auroc"] == pytest.approx(named["pixel_auroc"], abs=0.01)
    assert folder["cases"][0]["tumour_ml"] == pytest.approx(named["cases"][0]["tumour_ml"], rel=1e-4)
    assert folder["test_data"] == ("1 labelled case(s) of an MSD-layout folder (volume 2 (t1gd); lesion = every label "
                                   "above 0)")  # fmt: skip
    text = (tiny_run / "metrics.json").read_text() + (tiny_run / "report.html").read_text()
    assert "BRATS_001" not in text and str(task) not in text  # no file or folder names in the results
    only_edema = _evaluate_with(tiny_run, {"cases": [], "folder": {"root": str(task), "channel": 2, "labels": [1]}})
    assert only_edema["cases"][0]["tumour_ml"] == 0.0  # the tumour is label 3: no voxel of label 1


def test_an_msd_folder_without_its_channel_or_with_a_bad_listing_is_one_line(tiny_run, tmp_path) -> None:
    task = write_msd_task(tmp_path / "task")
    with pytest.raises(InputError, match=r"BRATS_001.nii.gz: 4D image \(4 volumes, 0..3\): set evaluate.folder.channel"):
        _evaluate_with(tiny_run, {"cases": [], "folder": {"root": str(task)}})
    with pytest.raises(InputError, match=r"BRATS_001.nii.gz: evaluate.folder.channel 7: the 4D image has 4 volumes"):
        _evaluate_with(tiny_run, {"cases": [], "folder": {"root": str(task), "channel": 7}})
    listing = json.loads((task / "dataset.json").read_text())
    listing["training"].append({"image": "../../etc/passwd", "label": "./labelsTr/BRATS_001.nii.gz"})
    (task / "dataset.json").write_text(json.dumps(listing))
    with pytest.raises(InputError, match="training entry 2's image is not a path inside the folder"):
        _evaluate_with(tiny_run, {"cases": [], "folder": {"root": str(task), "channel": 2}})


def test_the_config_takes_a_folder_for_brain_runs_only(tmp_path) -> None:
    from medanomaly.config import load_config

    base = {"task": "anomaly", "data": {"train": ["ch2"], "val": ["mni152"]}}
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump({**base, "evaluate": {"cases": [], "folder": {"root": "x"}}}))
    assert load_config(tmp_path / "ok.yaml").evaluate.folder.max_cases == 20
    chest = {"task": "anomaly", "data": {"domain": "chest_ct", "train": ["lung1"], "val": ["lung1"]},
             "evaluate": {"cases": ["lung2"], "folder": {"root": "x"}}}
    (tmp_path / "chest.yaml").write_text(yaml.safe_dump(chest))
    with pytest.raises(ConfigError, match="evaluate.folder .* is for 3D brain runs, not chest_ct"):
        load_config(tmp_path / "chest.yaml")


def test_explain_takes_the_frame_of_a_4d_image_and_of_its_4d_mask(tiny_run, tmp_path, monkeypatch, capsys) -> None:
    """explain --frame N read volume N of a 4D image but refused a 4D --mask ("take one with --frame N", given): the
    mask's volume N is the reference now."""
    from .conftest import run_main

    task = write_msd_task(tmp_path / "task")
    image = task / "imagesTr" / "BRATS_001.nii.gz"
    label = nib.load(task / "labelsTr" / "BRATS_001.nii.gz")
    per_volume = np.zeros((*label.shape, 4), np.uint8)
    per_volume[..., 2] = np.asarray(label.dataobj) > 0  # the tumour drawn on the t1gd volume only
    nib.save(nib.Nifti1Image(per_volume, label.affine), tmp_path / "masks.nii.gz")
    code, out, err = run_main(monkeypatch, capsys, "explain", str(tiny_run), str(image), "--frame", "2", "--mask",
                              str(tmp_path / "masks.nii.gz"), "-o", str(tmp_path / "explained"))  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "explained" / "explain.json").read_text())
    assert report["method"] == "anomaly_map" and isinstance(report["pointing_hit"], bool)
