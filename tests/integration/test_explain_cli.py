"""``medanomaly explain`` end to end on a classification run and a lung-nodule run directory."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from typer.testing import CliRunner

from medanomaly.cli.app import app
from medanomaly.io import read, write
from medanomaly.types import Volume


def _blob(rng: np.random.Generator, abnormal: bool, size: int = 32):
    """Noise + a bright line (normal anatomy, in every image) + a round blob when abnormal.

    The line keeps the classifier's per-image intensity scaling alike in both classes, so the
    model must find the blob rather than a global contrast shortcut.
    """
    img = rng.normal(0.0, 0.3, (size, size)).astype(np.float32)
    row, col = rng.integers(2, size - 2), rng.integers(2, size - 12)
    img[row, col : col + 10] += 1.5
    mask = np.zeros((size, size), np.uint8)
    if abnormal:
        c = rng.uniform(6, size - 7, 2)
        yy, xx = np.indices((size, size))
        d2 = (yy - c[0]) ** 2 + (xx - c[1]) ** 2
        img += 1.5 * np.exp(-d2 / 8.0).astype(np.float32)
        mask[d2 <= 9] = 1
    return img, mask


@pytest.fixture(scope="module")
def classification_run(tmp_path_factory) -> Path:
    """A real classification run directory (config.yaml, classifier.json, safetensors), tiny model."""
    from medanomaly.classify.config import ClassificationConfig
    from medanomaly.classify.engine import Classifier, build_model, member_weights, save_classifier
    from medanomaly.classify.model import run_info
    from medanomaly.engine import write_finished_run
    from medanomaly.data.arrays import to_model_array

    run = tmp_path_factory.mktemp("cls_run")
    cfg = ClassificationConfig.model_validate({
        "task": "classification",
        "data": {"dataset": {"name": "manifest", "params": {"csv": "none.csv"}}, "image_size": [32, 32],
                 "class_names": ["normal", "abnormal"]},
        "model": {"name": "compact_cnn", "params": {"widths": [8, 16], "hidden": 8, "dropout": 0.0, "stem_stride": 1}},
    })  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg, 2)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(80):
        labels = rng.integers(0, 2, 16)
        xs = np.stack([to_model_array(_blob(rng, bool(k))[0], (32, 32)) for k in labels])
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(xs)), torch.from_numpy(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
    # Re-estimate batch-norm statistics over a few batches (80 steps leave the running means lagging).
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        for _ in range(8):
            labels = rng.integers(0, 2, 32)
            model(torch.from_numpy(np.stack([to_model_array(_blob(rng, bool(k))[0], (32, 32)) for k in labels])))
    model.eval()
    clf = Classifier(models=(model,), class_names=("normal", "abnormal"), image_size=(32, 32), channels=1,
                     synthetic=True)  # fmt: skip
    save_classifier(clf, cfg, run)
    write_finished_run(run, cfg, run_info(clf, member_weights(run, 1)))
    return run


def test_explain_classification_run(classification_run, tmp_path):
    rng = np.random.default_rng(42)
    img, mask = _blob(rng, True)
    image = write(Volume(img, spacing=(0.7, 0.7, 1.0), origin=(5, 6, 0)), tmp_path / "case_image.nrrd")
    lesion = write(Volume(mask, spacing=(0.7, 0.7, 1.0), origin=(5, 6, 0)), tmp_path / "case_label.nrrd")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["explain", str(classification_run), str(image), "--method", "gradcam",
                                      "--out", str(out), "--mask", str(lesion), "--evaluate", "--dicom",
                                      "--target", "1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "explain.json").read_text())
    assert report["run_kind"] == "classification" and report["synthetic_model"] is True
    heat = read(out / "explanation.nii.gz")
    assert heat.same_grid(read(image), tol=1e-3)
    assert report["pointing_hit"] is True
    f = report["faithfulness"]
    assert f["deletion_auc"] < f["random_deletion_auc"]
    dcm = [p for p in report["files"] if p.endswith(".dcm")]
    assert pydicom.dcmread(dcm[0]).Modality == "OT"
    assert (out / "explanation.png").stat().st_size > 10_000


def test_explain_dataset_folder_and_bad_inputs(classification_run, tmp_path):
    rng = np.random.default_rng(7)
    folder = tmp_path / "set"
    for i in range(3):
        img, mask = _blob(rng, True)
        write(Volume(img), folder / f"c{i}_image.nrrd")
        write(Volume(mask), folder / f"c{i}_label.nrrd")
    (folder / "broken_image.nrrd").write_text("not an image")
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["explain", str(classification_run), str(folder), "--method", "occlusion",
                                      "--out", str(out), "--evaluate", "--target", "1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "explain.json").read_text())
    assert report["summary"]["n_images"] == 3 and report["summary"]["pointing_count"] == 3
    assert [s["name"] for s in report["skipped"]] == ["broken_image.nrrd"]

    image = folder / "c0_image.nrrd"
    bad = CliRunner().invoke(app, ["explain", str(classification_run), str(image), "--method", "lime"])
    assert bad.exit_code != 0 and "unknown explainer 'lime'" in str(bad.exception)
    bad = CliRunner().invoke(app, ["explain", str(classification_run), str(image), "--layer", "nope",
                                   "--out", str(tmp_path / "x")])  # fmt: skip
    assert "unknown layer 'nope'; valid layers: 0, 0.0" in str(bad.exception)
    bad = CliRunner().invoke(app, ["explain", str(tmp_path), str(image)])
    assert "not a run folder" in str(bad.exception)
    bad = CliRunner().invoke(app, ["explain", str(classification_run), str(folder), "--out", str(tmp_path / "y")])
    assert "no DICOM images in folder" in str(bad.exception)  # a folder is one DICOM series unless --evaluate
    assert "(a folder of images to evaluate takes --evaluate)" in str(bad.exception)


def test_explain_reads_a_dicom_series_folder_as_one_image(tmp_path):
    """``predict`` and ``detect`` take a DICOM series folder; ``explain`` refused every folder ("a folder or manifest
    is evaluated: add --evaluate"), so a CT series had to be converted first."""
    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.detect.detector import NoduleDetector
    from medanomaly.io.dicom_writer import write_dicom_series
    from medanomaly.models.nodule_unet import nodule_unet

    torch.manual_seed(0)
    det = NoduleDetector(model_params={"filters": [4, 8, 16]})
    det.model_ = nodule_unet(filters=(4, 8, 16)).eval()
    run = save_detector_run(det, tmp_path / "lung_run")
    ct = read(pyradiomics_case("lung1")[0])
    crop = Volume(ct.array[16:32, 128:384, 128:384], spacing=ct.spacing, origin=ct.index_to_physical((128, 128, 16)),
                  meta={"modality": "CT"})  # fmt: skip
    write_dicom_series(crop, tmp_path / "series", series_uid="1.2.826.0.1.3680043.8.498.4")
    centre = [float(v) for v in crop.index_to_physical((128.0, 128.0, 8.0))]
    findings = tmp_path / "findings.json"
    findings.write_text(json.dumps({"findings": [{"center_mm": centre, "score": 0.9, "label": "nodule"}]}))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["explain", str(run), str(tmp_path / "series"), "--findings", str(findings),
                                      "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert read(out / "explanation.nii.gz").same_grid(read(tmp_path / "series"), tol=1e-3)


def save_detector_run(det, run: Path) -> Path:
    """A finished lung_nodule run folder around a detector built in the test."""
    from medanomaly.detect.config import LungNoduleConfig
    from medanomaly.detect.detector import WEIGHTS_FILE
    from medanomaly.detect.model import run_info
    from medanomaly.engine import write_finished_run

    det.save(run)
    return write_finished_run(run, LungNoduleConfig(task="lung_nodule"), run_info(det, WEIGHTS_FILE))


def test_explain_lung_run_on_real_ct(tmp_path):
    """A lung_nodule run directory (detector.json + safetensors) on lung1: findings from a JSON file
    plus the reference lesion; maps land on the CT grid. (Untrained weights: geometry, not accuracy.)"""
    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.detect.detector import NoduleDetector
    from medanomaly.models.nodule_unet import nodule_unet

    torch.manual_seed(0)
    det = NoduleDetector(model_params={"filters": [4, 8, 16]})
    det.model_ = nodule_unet(filters=(4, 8, 16)).eval()
    run = tmp_path / "lung_run"
    save_detector_run(det, run)
    image_path, mask_path = pyradiomics_case("lung1")
    ct = read(image_path)
    lesion = np.argwhere(read(mask_path).array > 0).mean(0)
    centre = [float(v) for v in ct.index_to_physical(lesion[::-1])]
    findings = tmp_path / "findings.json"
    findings.write_text(json.dumps({"findings": [{"center_mm": centre, "score": 0.9, "label": "nodule"}]}))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["explain", str(run), str(image_path), "--findings", str(findings),
                                      "--mask", str(mask_path), "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "explain.json").read_text())
    assert report["run_kind"] == "lung_nodule" and len(report["findings"]) == 2
    assert report["findings"][1]["label"] == "reference lesion"
    heat = read(out / "explanation.nii.gz")
    assert heat.same_grid(ct, tol=1e-3) and heat.array.max() > 0
    assert Path(report["findings"][0]["png"]).is_file()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"score": 1}]))
    result = CliRunner().invoke(app, ["explain", str(run), str(image_path), "--findings", str(bad)])
    assert "a finding needs center_mm" in str(result.exception)


def test_a_failed_explanation_leaves_the_earlier_one_whole(classification_run, tmp_path, monkeypatch, capsys):
    """The PNG overlay was written, then the NIfTI map or the DICOM captures failed (a full disk): a new
    explanation.png stood beside the earlier explain.json. Now every file goes in together or none does."""
    import errno
    import sys

    from medanomaly.cli.app import main
    from medanomaly.explain import dicom_out

    img, _ = _blob(np.random.default_rng(3), True)
    image = write(Volume(img, spacing=(0.7, 0.7, 1.0)), tmp_path / "case_image.nrrd")
    out = tmp_path / "out"
    args = ["explain", str(classification_run), str(image), "--method", "gradcam", "--out", str(out), "--dicom"]
    assert CliRunner().invoke(app, args).exit_code == 0
    before = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dicom_out, "write_secondary_capture", disk_full)
    monkeypatch.setattr(sys, "argv", ["medanomaly", *args, "--method", "occlusion"])
    with pytest.raises(SystemExit) as code:
        main()
    assert code.value.code == 2 and "No space left on device" in capsys.readouterr().err
    after = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before and not [p for p in out.iterdir() if p.name.startswith(".")]


def test_the_dicom_capture_of_a_dicom_input_joins_its_study_and_is_valid(classification_run, tmp_path):
    """``explain --dicom`` of a DICOM image wrote its secondary capture into a new study with an anonymous patient
    (the viewer could not show it beside the image) and dciodvfy reported an error (Laterality, Type 2C, missing).
    Now the capture joins the source's study and patient, invalid copied values (a birth date of ``xx``) are
    cleaned, dciodvfy reports no error, and highdicom's warning quoting a one-component patient name (PHI) is not
    shown; a NRRD input still gets a new anonymous study."""
    from medanomaly.deploy.dicom_out import dciodvfy
    from medanomaly.io.dicom_writer import write_dicom_series

    img, _ = _blob(np.random.default_rng(3), True)
    (source,) = write_dicom_series(Volume(img, spacing=(0.7, 0.7, 1.0), meta={"modality": "CT"}), tmp_path / "src")
    ds = pydicom.dcmread(source)
    ds.PatientID, ds.PatientBirthDate, ds.PatientName = "P-123", "xx", "DOE"
    ds.save_as(source, enforce_file_format=False)
    out = tmp_path / "out"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = CliRunner().invoke(app, ["explain", str(classification_run), str(source), "--out", str(out), "--dicom"])
    assert res.exit_code == 0, res.output
    assert not [w for w in caught if "DOE" in str(w.message)]  # highdicom quoted the patient's name on stderr
    (capture,) = sorted((out / "dicom").glob("*.dcm"))
    sc = pydicom.dcmread(capture)
    assert sc.StudyInstanceUID == ds.StudyInstanceUID and sc.PatientID == "P-123" and sc.PatientBirthDate == ""
    assert dciodvfy(capture).errors == []
    nrrd = write(Volume(img, spacing=(0.7, 0.7, 1.0)), tmp_path / "case.nrrd")
    res = CliRunner().invoke(app, ["explain", str(classification_run), str(nrrd), "--out", str(tmp_path / "o2"),
                                   "--dicom"])  # fmt: skip
    assert res.exit_code == 0, res.output
    (capture,) = sorted((tmp_path / "o2" / "dicom").glob("*.dcm"))
    sc = pydicom.dcmread(capture)
    assert sc.PatientID == "ANONYMOUS" and sc.StudyInstanceUID != ds.StudyInstanceUID
    assert dciodvfy(capture).errors == []


def test_explain_takes_one_label_of_a_mask_or_one_roi_of_a_structure_set(classification_run, tmp_path):
    """A structure set's ROIs overlap as a rule (BODY holds the lesion): explain --mask RS.dcm was refused with
    "--label N", an option explain had not. ``--label`` reads one ROI, or one label of a label map."""
    from tests.unit.io.conftest import write_structure_set
    from tests.unit.io.test_io_rtstruct import contours_of

    img, mask = _blob(np.random.default_rng(42), True)
    image_volume = Volume(img, spacing=(0.7, 0.7, 1.0), origin=(5, 6, 0))
    image = write(image_volume, tmp_path / "case_image.nrrd")
    body = np.ones_like(mask)
    rs = write_structure_set(tmp_path / "rs.dcm", [(1, "BODY", contours_of(body[None], image_volume)),
                                                   (2, "GTV", contours_of(mask[None], image_volume))])  # fmt: skip
    labels = write(Volume(body + mask, spacing=(0.7, 0.7, 1.0), origin=(5, 6, 0)), tmp_path / "labels.nrrd")

    def explain(*extra: str) -> tuple[int, str, dict]:
        out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
        result = CliRunner().invoke(app, ["explain", str(classification_run), str(image), "--out", str(out),
                                          "--target", "1", *extra])  # fmt: skip
        report = json.loads((out / "explain.json").read_text()) if result.exit_code == 0 else {}
        return result.exit_code, str(result.exception or result.output), report  # InputError: exit 2 under main

    code, err, _ = explain("--mask", str(rs))
    assert code != 0 and "ROIs 1 and 2 overlap" in err and "--label N" in err
    for path in (rs, labels):
        code, err, report = explain("--mask", str(path), "--label", "2")
        assert code == 0 and report["pointing_hit"] is True, err
    code, err, _ = explain("--mask", str(labels), "--label", "5")
    assert code != 0 and "no voxel of label 5 in the mask" in err
    code, err, _ = explain("--label", "2")
    assert code != 0 and "--label picks a label of --mask" in err
