"""Export of a 2D breast ``detection`` run (tiny, trained here) and its use: ``detect`` and
``predict`` on the package give the torch run's findings, and batch inference (``predict RUN
ARCHIVE/``) and the service work for the run and for the package."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medanomaly.cli.app import app
from medanomaly.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "breast_mammo_detect_tiny.yaml"
runner = CliRunner()


def _mammograms(folder: Path) -> list[Path]:
    """Three MG phantom images as NRRD (modality kept in the header)."""
    from medanomaly.io import write
    from medanomaly.synth.mammo import render_mammogram

    folder.mkdir(parents=True, exist_ok=True)
    return [Path(write(render_mammogram([kind], size=96, seed=seed).image, folder / f"mg{seed}.nrrd"))
            for seed, kind in ((3, "malignant"), (5, "malignant"), (6, "benign"))]  # fmt: skip


@pytest.fixture(scope="module")
def breast(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[Path]]:
    """(tiny trained breast run, its package, MG images). The sliding window is 48 px, smaller
    than the images on the grid (96 px), so the NumPy window placement and blending are exercised."""
    import torch
    import yaml

    from medanomaly.deploy.export import export_run
    from medanomaly.engine import train_run

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("breast")
    cfg = yaml.safe_load(TINY.read_text())
    cfg["infer"]["roi_size"] = [1, 48, 48]
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    run = train_run(root / "cfg.yaml", root / "run")
    return run, export_run(run, root / "pkg"), _mammograms(root / "img")


def test_package_heatmaps_and_findings_match_torch(breast: tuple[Path, Path, list[Path]]) -> None:
    from medanomaly.detect.regions import search_region
    from medanomaly.engine import load_model
    from medanomaly.io import read

    run, pkg, images = breast
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert manifest["task"] == "detection" and manifest["findings_match"] is True
    assert {"model.onnx", "lesion_classifier.onnx", "model.json"} == set(manifest["sha256"])
    assert manifest["fp32_max_abs_diff"] <= 1e-4 and manifest["classifier_max_abs_diff"] <= 1e-4
    a, b = load_model(run), load_model(pkg)
    assert type(b).__name__ == "OnnxHeatmapDetectionModel" and b.class_names == a.class_names
    n_findings = 0
    for path in images:
        image = read(path)
        det = a.detector
        region, _ = search_region(det.region, image, det.spacing_mm, det.region_margin_mm)
        ha, hb = np.asarray(det.heatmap(image, region).array), np.asarray(b.detector.heatmap(image, region).array)
        assert ha.max() > 0.05 and np.abs(ha - hb).max() <= 1e-4  # a real map, not an empty one
        pa, pb = a.predict(image), b.predict(image)
        assert len(pa.findings) == len(pb.findings)
        assert (pa.label, pa.abstained, pa.flags) == (pb.label, pb.abstained, pb.flags)
        for fa, fb in zip(pa.findings, pb.findings, strict=True):
            assert fa.bbox_mm == fb.bbox_mm and fa.label == fb.label and abs(fa.score - fb.score) <= 1e-4
        assert np.abs(np.subtract(pa.scores, pb.scores)).max() <= 1e-4
        n_findings += len(pa.findings)
    assert n_findings >= 1  # the comparison covered findings and their classes


def test_detect_and_predict_cli_on_the_package(breast: tuple[Path, Path, list[Path]], tmp_path: Path) -> None:
    run, pkg, images = breast
    docs = []
    for name, model in (("run", run), ("pkg", pkg)):
        res = runner.invoke(app, ["detect", str(model), str(images[0]), "--out", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
        docs.append(json.loads((tmp_path / name / "findings.json").read_text())["findings"])
    assert len(docs[0]) == len(docs[1]) >= 1
    for fa, fb in zip(*docs, strict=True):
        assert fa["bbox_mm"] == fb["bbox_mm"] and fa["label"] == fb["label"] and abs(fa["score"] - fb["score"]) <= 1e-4
    preds = [json.loads(runner.invoke(app, ["predict", str(m), str(images[0]), "--json"]).output) for m in (run, pkg)]
    assert preds[0]["label"] == preds[1]["label"] and preds[0]["flags"] == preds[1]["flags"]
    assert max(abs(preds[0]["probabilities"][k] - preds[1]["probabilities"][k]) for k in preds[0]["probabilities"]) <= 1e-4


def test_int8_heatmap_behind_the_cpm_guard_and_package_runs_without_torch(
        breast: tuple[Path, Path, list[Path]], tmp_path: Path, predict_without_torch) -> None:  # fmt: skip
    from medanomaly.deploy.export import export_run
    from medanomaly.deploy.package import load_package
    from medanomaly.deploy.quantise import MAX_CPM_DROP
    from medanomaly.io import read

    run, pkg, images = breast
    out = export_run(run, tmp_path / "int8", int8=True, calibration=8, force=True)
    guard = json.loads((out / "manifest.json").read_text())["int8"]
    assert "model.int8.onnx" in json.loads((out / "manifest.json").read_text())["sha256"]
    assert guard["metric"] == "cpm" and guard["calibration_split"] == "validation" and guard["calibration_items"] >= 1
    drop = guard["fp32"]["cpm"] - guard["int8"]["cpm"]
    assert guard["cpm_drop"] == pytest.approx(drop, abs=1e-6) and guard["passed"] == (drop <= MAX_CPM_DROP)
    int8 = load_package(out, precision="int8")
    assert int8.graph == "model.int8.onnx"
    image = read(images[0])
    heat = np.asarray(int8.detector.heatmap(image, None).array)
    ref = np.asarray(load_package(out, precision="fp32").detector.heatmap(image, None).array)
    assert 0 < np.abs(heat - ref).max() < 0.5  # quantised: close to fp32, not the same graph
    got = predict_without_torch(pkg, images[0], timeout=120)
    assert got["label"] in ("benign", "uncertain", "malignant", "none")


def test_int8_refused_when_the_guard_fails(breast: tuple[Path, Path, list[Path]], tmp_path: Path, monkeypatch) -> None:
    import medanomaly.deploy.export_detection as ed
    from medanomaly.deploy.export import export_run

    run, _pkg, _images = breast
    cpms = iter([0.9, 0.5])  # fp32, then int8: a drop of 0.4
    monkeypatch.setattr(ed, "_validation_cpm", lambda *a: next(cpms))
    with pytest.raises(InputError, match=r"int8 refused by the accuracy guard: validation CPM drops by 0\.4000"):
        export_run(run, tmp_path / "int8", int8=True, calibration=4)
    assert not (tmp_path / "int8").exists() and not list(tmp_path.glob(".int8.*"))


def _archive(folder: Path, images: list[Path]) -> Path:
    """A folder of 2D MG images: one DICOM MG series per patient, and one NRRD file."""
    import shutil

    from medanomaly.io import read
    from medanomaly.io.dicom_writer import write_dicom_series

    for i, path in enumerate(images[:2]):
        write_dicom_series(read(path), folder / f"patient{i}" / "mg")
    shutil.copyfile(images[2], folder / "patient2.nrrd")
    return folder


def test_batch_over_a_folder_of_mammograms(breast: tuple[Path, Path, list[Path]], tmp_path: Path) -> None:
    import csv

    run, pkg, images = breast
    archive = _archive(tmp_path / "archive", images)
    rows = {}
    for name, model in (("run", run), ("pkg", pkg)):
        res = runner.invoke(app, ["predict", str(model), str(archive), "--out", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
        with (tmp_path / name / "results.csv").open() as fh:
            rows[name] = sorted(csv.DictReader(fh), key=lambda r: r["series_id"])
    assert len(rows["run"]) == 3 and all(r["status"] == "done" and r["task"] == "detection" for r in rows["run"])
    assert {r["modality"] for r in rows["run"]} == {"MG"}
    for ra, rb in zip(rows["run"], rows["pkg"], strict=True):
        assert (ra["label"], ra["n_findings"]) == (rb["label"], rb["n_findings"]) and rb["status"] == "done"
    assert any(int(r["n_findings"]) > 0 for r in rows["run"])
    assert list((tmp_path / "run" / "dicom").rglob("sr.dcm"))  # findings of a DICOM MG series as SR + SEG


def test_service_answers_an_mg_upload_for_run_and_package(breast: tuple[Path, Path, list[Path]], tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from medanomaly.deploy.service.app import ServiceConfig, create_app
    from medanomaly.deploy.service.ingest import IngestLimits
    from medanomaly.deploy.service.tokens import new_token
    from medanomaly.io import read
    from medanomaly.io.dicom_writer import write_dicom_series

    run, pkg, images = breast
    dicom = write_dicom_series(read(images[0]), tmp_path / "upload")[0].read_bytes()
    tokens = tmp_path / "tokens.json"
    token = new_token(tokens)
    limits = IngestLimits(max_body_bytes=4 << 20, max_files=10, max_zip_members=100, max_unzipped_bytes=16 << 20)
    app_ = create_app(ServiceConfig(models={"breast": run, "breast_onnx": pkg}, data_dir=tmp_path / "data",
                                    tokens=tokens, limits=limits, queue_size=4))  # fmt: skip
    results = {}
    with TestClient(app_) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        assert {m["name"]: m["task"] for m in client.get("/v1/models").json()} == {"breast": "detection",
                                                                                   "breast_onnx": "detection"}
        for name in ("breast", "breast_onnx"):
            r = client.post(f"/v1/studies?model={name}", files=[("files", ("mg.dcm", dicom))])
            assert r.status_code == 202, r.text
            job_id = r.json()["job_id"]
            deadline = time.time() + 60
            while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] not in ("done", "failed"):
                assert time.time() < deadline
                time.sleep(0.1)
            assert job["status"] == "done", job
            results[name] = client.get(f"/v1/studies/{job_id}/results").json()
    a, b = results["breast"], results["breast_onnx"]
    assert a["task"] == "detection" and len(a["findings"]) == len(b["findings"]) >= 1 and a["label"] == b["label"]
    assert [f["bbox_mm"] for f in a["findings"]] == [f["bbox_mm"] for f in b["findings"]]


@pytest.mark.parametrize(("file", "edit", "words"), [
    ("lesion_classifier.json", lambda d: d["params"].update(crop_size=[0, 24]), "crop_size must be 2 sizes of 1..4096"),
    ("lesion_classifier.json", lambda d: d["params"].update(crop_size=[10**30, 24]), "crop_size must be 2 sizes"),
    ("lesion_classifier.json", lambda d: d["params"].update(crop_size=[24]), "crop_size must be 2 sizes"),
    ("lesion_classifier.json", lambda d: d["params"].update(class_names=["benign", ""]),
     "lesion class names must be distinct non-empty names"),
    ("model.json", lambda d: d.update(class_names=["benign"]), "class names ['benign'] are not the lesion classifier's"),
])  # fmt: skip
def test_recorded_lesion_classifier_values_that_do_not_fit_are_one_line(breast, tmp_path: Path, file: str, edit,
                                                                        words: str) -> None:  # noqa: ANN001
    """A recorded crop of 0, 10^30 or one side (torch's interpolate, a C++ trace), an empty lesion class name or a
    model.json naming fewer classes than the lesion classifier were tracebacks at the first finding; now one line
    naming the file when the run is loaded."""
    import shutil

    from medanomaly.engine import load_model

    run = shutil.copytree(breast[0], tmp_path / "run")
    doc = json.loads((run / file).read_text())
    edit(doc)
    (run / file).write_text(json.dumps(doc))
    with pytest.raises(InputError, match=re.escape(words)) as err:
        load_model(run)
    assert err.value.path == run / file and "\n" not in str(err.value)


def test_a_lesion_classifier_whose_weights_overflow_is_refused_not_read_as_no_classifier(breast, tmp_path: Path) -> None:
    """Lesion classifier weights of 1e30 gave NaN probabilities, which the model read as "no classifier" and reported
    as three equal scores of 0.53 with a class called; now one InputError about the classifier's outputs."""
    import shutil

    from safetensors.numpy import load_file, save_file

    from medanomaly.engine import load_model
    from medanomaly.io import read

    run = shutil.copytree(breast[0], tmp_path / "run")
    state = load_file(str(run / "lesion_classifier.safetensors"))
    save_file({k: np.full_like(v, 1e30) if v.dtype.kind == "f" and v.ndim > 1 else v for k, v in state.items()},
              str(run / "lesion_classifier.safetensors"))  # fmt: skip
    model = load_model(run)
    images = [read(p) for p in breast[2]]
    found = [model.detector.detect(im) for im in images]
    assert any(found), "no finding to classify in the fixture images"
    image = images[next(i for i, f in enumerate(found) if f)]
    with pytest.raises(InputError, match=r"NaN or infinite value\(s\) in the lesion classifier's probabilities"):
        model.predict(image)
