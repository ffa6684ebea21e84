"""`serve --explain METHOD`: each call's explanation map beside it, the map `medanomaly explain` writes.

The service answered a class and its probabilities with nothing to show why; the mission is a tool that explains
every call. A classifier's map is the study's heatmap; an anomaly model's own map stays its heatmap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medanomaly.deploy.service.app import ServiceConfig, create_app
from medanomaly.deploy.service.tokens import new_token
from medanomaly.errors import InputError
from medanomaly.io import read, write
from tests.integration.test_service_api import cls_run, nifti_bytes, post, wait_done  # noqa: F401 - fixture

pytestmark = pytest.mark.xdist_group("service")


def client_for(tmp: Path, models: dict, explain: str | None):
    from fastapi.testclient import TestClient

    tokens = tmp / "tokens.json"
    token = new_token(tokens)
    app = create_app(ServiceConfig(models=models, data_dir=tmp / "data", tokens=tokens, explain=explain))
    client = TestClient(app)
    client.headers["Authorization"] = f"Bearer {token}"
    return client


def test_a_classifiers_call_is_explained_by_the_map_the_explain_command_writes(tmp_path, cls_run, monkeypatch,  # noqa: F811
                                                                                 capsys):  # fmt: skip
    from tests.integration.conftest import run_main

    image = tmp_path / "img.nii.gz"
    image.write_bytes(nifti_bytes(tmp_path, seed=3))
    with client_for(tmp_path, {"cls": cls_run}, "gradcam") as client:
        assert client.get("/v1/models").json()[0]["explanation"] == "gradcam"
        job = wait_done(client, post(client, [image.read_bytes()]).json()["job_id"])
        assert job["status"] == "done", job
        result = client.get(f"/v1/studies/{job['id']}/results").json()
        served = client.get(f"/v1/studies/{job['id']}/heatmap")
    assert result["heatmap"] is True and result["explanation"] == {"method": "gradcam", "class": result["label"]}
    (tmp_path / "served.nii.gz").write_bytes(served.content)
    served_map = read(tmp_path / "served.nii.gz")
    code, _, err = run_main(monkeypatch, capsys, "explain", str(cls_run), str(image), "--method", "gradcam", "-o",
                            str(tmp_path / "cli"))  # fmt: skip
    assert code == 0, err
    (cli_file,) = [p for p in (tmp_path / "cli").rglob("*.nii.gz")]
    cli_map = read(cli_file)
    assert served_map.same_grid(read(image)) and np.ptp(np.asarray(served_map.array)) > 0
    np.testing.assert_allclose(np.asarray(served_map.array), np.asarray(cli_map.array), atol=1e-5)


def test_a_map_that_cannot_be_made_fails_the_explanation_not_the_call(tmp_path, cls_run):  # noqa: F811
    with client_for(tmp_path, {"cls": cls_run}, "gradcam") as client:
        worker = client.app.fastapi.state.workers["cls"]

        def broken(volume):
            raise RuntimeError("planted explainer failure")

        broken.method = "gradcam"
        worker.explainer = broken
        job = wait_done(client, post(client, [nifti_bytes(tmp_path)]).json()["job_id"])
        result = client.get(f"/v1/studies/{job['id']}/results").json()
    assert job["status"] == "done" and set(result["probabilities"]) == {"normal", "abnormal"}
    assert result["explanation"] == {"method": "gradcam", "error": "internal error: RuntimeError: planted explainer "
                                                                   "failure"} and "heatmap" not in result  # fmt: skip


def test_an_anomaly_models_own_map_stays_its_heatmap(tmp_path, tiny_anomaly_run):
    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.engine import load_model

    run = tiny_anomaly_run(tmp_path, "normative")
    brain = Path(write(read(pyradiomics_case("brain1")[0]), tmp_path / "brain1.nii.gz"))
    with client_for(tmp_path, {"anomaly": run}, "gradcam") as client:
        job = wait_done(client, post(client, [brain.read_bytes()]).json()["job_id"], timeout=120)
        result = client.get(f"/v1/studies/{job['id']}/results").json()
        served = client.get(f"/v1/studies/{job['id']}/heatmap").content
    assert job["status"] == "done" and result["heatmap"] is True and "explanation" not in result, result
    (tmp_path / "served.nii.gz").write_bytes(served)
    expected = load_model(run).predict(read(brain)).anomaly_map
    np.testing.assert_allclose(np.asarray(read(tmp_path / "served.nii.gz").array), np.asarray(expected.array),
                               atol=1e-5)  # fmt: skip


def test_a_model_that_cannot_be_explained_stops_the_service_at_its_start_in_one_line(tmp_path):
    class Package:
        task, class_names, info = "classification", ("a", "b"), None

        def explainable(self):
            raise InputError("an exported package cannot explain (no gradients); explain the torch run", "pkg")

    with pytest.raises(InputError) as err:
        create_app(ServiceConfig(models={"pkg": Package()}, data_dir=tmp_path / "data", tokens=tmp_path / "t.json",
                                 explain="gradcam"))  # fmt: skip
    assert str(err.value) == ("--explain gradcam: model 'pkg' cannot be explained: an exported package cannot "
                              "explain (no gradients); explain the torch run")


def test_an_input_too_large_to_explain_is_refused_before_the_work_and_the_call_stands(tmp_path, cls_run,  # noqa: F811
                                                                                         monkeypatch):  # fmt: skip
    from medanomaly.deploy import explanation

    monkeypatch.setattr(explanation, "MAX_EXPLAIN_VOXELS", 100)  # the classifier's 32 x 32 input: 1,024 voxels
    with client_for(tmp_path, {"cls": cls_run}, "gradcam") as client:
        job = wait_done(client, post(client, [nifti_bytes(tmp_path)]).json()["job_id"])
        result = client.get(f"/v1/studies/{job['id']}/results").json()
    assert job["status"] == "done" and "heatmap" not in result
    assert result["explanation"] == {"method": "gradcam", "error": "the model's input is 1,024 voxels, more than the "
                                     "100 a served explanation takes; run `medanomaly explain` on it"}  # fmt: skip


def test_a_fusion_call_is_explained_on_its_modalities_together(tmp_path, monkeypatch, capsys):
    """A fusion model's call sent one field per modality is explained by the map `medanomaly explain RUN T1=...,PD=...`
    writes; with a modality missing, the call stands and says why it has no map."""
    from tests.integration.conftest import run_main, train_tiny_fusion
    from tests.integration.test_service_fusion import slice_nifti, upload

    run = train_tiny_fusion(tmp_path)
    t1, pd = slice_nifti(tmp_path, "T1"), slice_nifti(tmp_path, "PD")
    with client_for(tmp_path, {"fusion": run}, "gradcam") as client:
        both = wait_done(client, upload(client, [("T1", t1.read_bytes()), ("PD", pd.read_bytes())]).json()["job_id"])
        alone = wait_done(client, upload(client, [("T1", t1.read_bytes())]).json()["job_id"])
        results = [client.get(f"/v1/studies/{j['id']}/results").json() for j in (both, alone)]
        (tmp_path / "served.nii.gz").write_bytes(client.get(f"/v1/studies/{both['id']}/heatmap").content)
    assert results[0]["explanation"] == {"method": "gradcam", "class": results[0]["label"]} and results[0]["heatmap"]
    assert results[1]["explanation"] == {"method": "gradcam", "error": "a fusion call is explained with every "
                                         "modality present; PD was not sent"} and "heatmap" not in results[1]  # fmt: skip
    code, _, err = run_main(monkeypatch, capsys, "explain", str(run), f"T1={t1},PD={pd}", "--method", "gradcam", "-o",
                            str(tmp_path / "cli"))  # fmt: skip
    assert code == 0, err
    (cli_file,) = list((tmp_path / "cli").rglob("*.nii.gz"))
    served, cli_map = read(tmp_path / "served.nii.gz"), read(cli_file)
    assert np.ptp(np.asarray(served.array)) > 0
    np.testing.assert_allclose(np.asarray(served.array), np.asarray(cli_map.array), atol=1e-5)
