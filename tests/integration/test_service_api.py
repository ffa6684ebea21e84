"""The service API through FastAPI's TestClient: tokens, limits, content checks, zips, restart."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from medanomaly.deploy.service.app import ServiceConfig, create_app
from medanomaly.deploy.service.ingest import IngestLimits
from medanomaly.deploy.service.store import JobStore
from medanomaly.deploy.service.tokens import new_token
from medanomaly.io import write
from medanomaly.types import Volume

pytestmark = pytest.mark.xdist_group("service")


def make_classification_run(run: Path) -> Path:
    """A finished 2D classification run (tiny untrained CNN): the API, not accuracy, is tested."""
    from medanomaly.classify.config import ClassificationConfig
    from medanomaly.classify.engine import Classifier, build_model, member_weights, save_classifier
    from medanomaly.classify.model import run_info
    from medanomaly.engine import write_finished_run

    cfg = ClassificationConfig.model_validate({
        "task": "classification",
        "data": {"dataset": {"name": "manifest", "params": {"csv": "none.csv"}}, "image_size": [32, 32],
                 "class_names": ["normal", "abnormal"]},
        "model": {"name": "compact_cnn", "params": {"widths": [8, 16], "hidden": 8, "dropout": 0.0, "stem_stride": 1}},
    })  # fmt: skip
    torch.manual_seed(0)
    clf = Classifier(models=(build_model(cfg, 2).eval(),), class_names=("normal", "abnormal"), image_size=(32, 32),
                     channels=1, synthetic=True)  # fmt: skip
    save_classifier(clf, cfg, run)
    write_finished_run(run, cfg, run_info(clf, member_weights(run, 1)))
    return run


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory) -> Path:
    return make_classification_run(tmp_path_factory.mktemp("svc") / "cls")


def nifti_bytes(tmp: Path, seed: int = 0) -> bytes:
    """A small 2D NIfTI image as bytes."""
    arr = np.random.default_rng(seed).normal(0, 1, (1, 32, 32)).astype(np.float32)
    path = write(Volume(arr, spacing=(0.5, 0.5, 1.0)), tmp / f"img{seed}.nii.gz")
    return Path(path).read_bytes()


@pytest.fixture
def service(tmp_path, cls_run):
    from fastapi.testclient import TestClient

    tokens = tmp_path / "tokens.json"
    full, other = new_token(tokens), new_token(tokens, models=["elsewhere"])
    limits = IngestLimits(max_body_bytes=2 << 20, max_files=50, max_zip_members=1000, max_unzipped_bytes=8 << 20)
    app = create_app(ServiceConfig(models={"cls": cls_run}, data_dir=tmp_path / "data", tokens=tokens, limits=limits,
                                   queue_size=4))  # fmt: skip
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {full}"
        yield client, full, other, tmp_path


def post(client, files, **kw):
    return client.post("/v1/studies", files=[("files", (f"f{i}", data)) for i, data in enumerate(files)], **kw)


def wait_done(client, job_id: str, timeout: float = 30.0, headers: dict | None = None) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not finished: {job}")


def test_upload_classify_results_delete(service):
    client, *_ , tmp = service
    r = post(client, [nifti_bytes(tmp)])
    assert r.status_code == 202, r.text
    job = wait_done(client, r.json()["job_id"])
    assert job["status"] == "done", job
    res = client.get(f"/v1/studies/{job['id']}/results").json()
    assert res["task"] == "classification" and set(res["probabilities"]) == {"normal", "abnormal"}
    assert abs(sum(res["probabilities"].values()) - 1) < 1e-4
    assert client.delete(f"/v1/studies/{job['id']}").status_code == 200
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 404
    assert not (tmp / "data" / "studies" / job["id"]).exists()
    assert client.get("/docs").status_code == 200 and "/v1/studies" in client.get("/openapi.json").json()["paths"]


def test_the_api_page_loads_nothing_from_outside_the_service(service):
    """FastAPI's /docs page loaded Swagger UI from cdn.jsdelivr.net and its icon from fastapi.tiangolo.com: blank on
    a hospital network without internet, and elsewhere each visit told a third party about the service. Swagger UI
    is served from the service's own static files (``make setup`` copies it from npm); /redoc, another CDN page, is
    not served. The bearer scheme is in the API description, so the page can authorize its "Try it out" calls."""
    import re

    client, *_ = service
    page = client.get("/docs")
    assert page.status_code == 200 and "/static/swagger-ui-bundle.js" in page.text
    assert not re.findall(r"(?:src|href)=[\"'](?:https?:)?//", page.text), page.text
    for asset in re.findall(r"(?:src|href)=[\"'](/static/[^\"']+)", page.text):
        reply = client.get(asset)
        assert reply.status_code == 200 and len(reply.content) > 10_000, asset
    assert client.get("/redoc").status_code == 404
    schema = client.get("/openapi.json").json()  # the bearer scheme is declared: the page's "Authorize" button
    assert schema["components"]["securitySchemes"]["HTTPBearer"] == {**schema["components"]["securitySchemes"]
                                                                     ["HTTPBearer"], "type": "http", "scheme": "bearer"}
    assert schema["paths"]["/v1/models"]["get"]["security"] == [{"HTTPBearer": []}]


def test_health_and_readiness_answer_without_a_token_and_name_what_stops_the_jobs(service, monkeypatch):
    """A container platform or a load balancer asks whether the service is up and would run an upload; there was no
    such route (only /docs, which says nothing about the jobs). /ready is 503 with the reasons when a model worker has
    stopped (its jobs would queue for ever), the job store does not answer or the disk is below its reserve."""
    client, *_ = service
    bare = {"Authorization": ""}
    assert client.get("/health", headers=bare).json() == {"status": "ok"}
    assert client.get("/ready", headers=bare).json() == {"status": "ready"}
    state = client.app.fastapi.state
    worker = state.workers["cls"]
    worker.stop()
    monkeypatch.setattr(state.store, "list", lambda limit=200: (_ for _ in ()).throw(OSError("disk I/O error")))
    reply = client.get("/ready", headers=bare)
    assert reply.status_code == 503 and reply.json()["reasons"] == ["1 of 1 model worker(s) stopped",
                                                                   "the job store does not answer"], reply.json()
    assert "cls" not in reply.text
    monkeypatch.setattr(state.config, "data_dir", state.config.data_dir / "unmounted")  # gone under the service
    assert "the data folder cannot be read" in client.get("/ready", headers=bare).json()["reasons"]


def test_a_worker_outlives_a_job_store_that_fails(tmp_path, cls_run, monkeypatch):
    """A job store that failed once (a disk error, a lock) ended the worker's thread without a word: the service went
    on taking uploads that never ran. The worker logs the failure and asks again."""
    from medanomaly.deploy.service import worker as worker_module
    from medanomaly.deploy.service.store import JobStore
    from medanomaly.deploy.service.worker import ModelWorker
    from medanomaly.engine import load_model

    monkeypatch.setattr(worker_module, "STORE_RETRY_S", 0.05)
    store = JobStore(tmp_path / "jobs.sqlite")
    calls = []

    def flaky_claim(model, n=1):
        calls.append(n)
        if len(calls) <= 2:
            raise OSError("disk I/O error")
        return []

    monkeypatch.setattr(store, "claim", flaky_claim)
    worker = ModelWorker("cls", load_model(cls_run), store, tmp_path / "studies")
    worker.start()
    try:
        deadline = time.time() + 10
        while len(calls) < 3 and time.time() < deadline:
            time.sleep(0.02)
        assert len(calls) >= 3 and worker.alive
    finally:
        worker.stop()
    assert not worker.alive


def test_tokens_401_403(service):
    client, full, other, tmp = service
    data = [nifti_bytes(tmp)]
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
        r = post(client, data, headers=headers)
        assert r.status_code == 401 and r.json()["detail"] == "missing or invalid bearer token"
    r = post(client, data, headers={"Authorization": f"Bearer {other}"})
    assert r.status_code == 403 and "may not use model 'cls'" in r.json()["detail"]
    job_id = post(client, data).json()["job_id"]
    assert client.get(f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {other}"}).status_code == 403
    stored = (tmp / "tokens.json").read_text()
    assert full not in stored and other not in stored


def test_a_token_reads_only_the_studies_uploaded_with_it_unless_it_sees_every_study(service):
    """Every token allowed a model read every study of it: one client application's uploads (images, findings, DICOM
    objects) were listed and downloadable by any other's token. A study is now its uploader's (another token: 404,
    as if it did not exist; not in its job list), unless the token was made with --all-studies (a reading room)."""
    import sqlite3

    from medanomaly.deploy.service.tokens import new_token

    client, full, _, tmp = service
    peer, reader = new_token(tmp / "tokens.json"), new_token(tmp / "tokens.json", all_studies=True)
    job_id = wait_done(client, post(client, [nifti_bytes(tmp)]).json()["job_id"])["id"]
    as_peer, as_reader = ({"Authorization": f"Bearer {t}"} for t in (peer, reader))
    for route in (f"/v1/jobs/{job_id}", f"/v1/studies/{job_id}/results", f"/v1/studies/{job_id}/image"):
        assert client.get(route, headers=as_peer).status_code == 404, route
        assert client.get(route).status_code == 200 and client.get(route, headers=as_reader).status_code == 200, route
    assert client.get("/v1/jobs", headers=as_peer).json() == []
    assert [j["id"] for j in client.get("/v1/jobs", headers=as_reader).json()] == [job_id]
    assert client.delete(f"/v1/studies/{job_id}", headers=as_peer).status_code == 404
    peer_job = wait_done(client, post(client, [nifti_bytes(tmp)], headers=as_peer).json()["job_id"], headers=as_peer)
    assert client.get(f"/v1/jobs/{peer_job['id']}").status_code == 404  # the first client cannot read the peer's
    with sqlite3.connect(tmp / "data" / "jobs.sqlite") as db:  # a job of an earlier version: no owner recorded
        db.execute("UPDATE jobs SET token = NULL WHERE id = ?", (job_id,))
    for headers, code in (({}, 404), (as_peer, 404), (as_reader, 200)):  # it could be any client's: a reading room's
        assert client.get(f"/v1/jobs/{job_id}", headers=headers).status_code == code, headers


def test_the_per_token_limit_holds_for_uploads_that_pass_its_first_check_together(tmp_path):
    """The limit was checked before an upload was read and the job created after it: two uploads of one token that
    passed the check together both became jobs. Creating counts and inserts in one transaction."""
    from concurrent.futures import ThreadPoolExecutor

    store = JobStore(tmp_path / "jobs.sqlite")
    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda _: store.create("cls", "nifti", 1, token="t1", max_active=3), range(8)))
    assert sum(j is not None for j in made) == 3 and store.n_active("t1") == 3
    assert store.create("cls", "nifti", 1, token="t2", max_active=3) is not None  # another token: its own count
    store.close()


def test_a_job_store_of_an_earlier_version_gains_the_owner_column(tmp_path):
    import sqlite3

    path = tmp_path / "jobs.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, model TEXT NOT NULL, status TEXT NOT NULL, progress REAL "
                   "NOT NULL DEFAULT 0, reason TEXT, attempts INTEGER NOT NULL DEFAULT 0, input_kind TEXT, n_files "
                   "INTEGER, created REAL NOT NULL, updated REAL NOT NULL, seconds REAL)")  # fmt: skip
        db.execute("INSERT INTO jobs (id, model, status, created, updated) VALUES ('a', 'cls', 'done', 1, 1)")
    store = JobStore(path)
    assert store.get("a")["token"] is None and store.get(store.create("cls", "nifti", 1, token="t1"))["token"] == "t1"
    store.close()


def test_size_limit_413(service):
    client, *_ = service
    r = post(client, [b"\0" * (3 << 20)])
    assert r.status_code == 413 and "larger than the limit" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit is checked while streaming
        yield b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a\"\r\n\r\n"
        for _ in range(40):
            yield b"\0" * (100 << 10)
    r = client.post("/v1/studies", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413


def test_content_checked_by_content_415(service):
    client, *_ , tmp = service
    r = client.post("/v1/studies", files=[("files", ("scan.dcm", b"this is not a DICOM file" * 20))])
    assert r.status_code == 415 and "not DICOM" in r.json()["detail"]
    r = client.post("/v1/studies", files=[("files", ("scan.txt", nifti_bytes(tmp)))])  # a NIfTI named .txt is fine
    assert r.status_code == 202
    # an NRRD header naming a detached data file would read a file of the server's (here its own tokens) as pixels
    header = f"NRRD0004\ntype: uchar\ndimension: 1\nsizes: 8\nencoding: raw\ndata file: {tmp / 'tokens.json'}\n\n"
    for files in ([header.encode()], [_zip({"scan.nrrd": header.encode()})]):
        r = post(client, files)
        assert r.status_code == 415 and "detached data file" in r.json()["detail"]


def _zip(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_bad_zips_refused_and_service_goes_on(service):
    client, *_ , tmp = service
    good = nifti_bytes(tmp)
    cases = {
        "truncated": (_zip({"a.nii.gz": good})[:-40], 400, "truncated or corrupt"),
        "dotdot": (_zip({"../../etc/evil.nii.gz": good}), 400, "'..' path"),
        "absolute": (_zip({"/abs.nii.gz": good}), 400, "absolute"),
        "bomb": (_zip({"a.bin": b"\0" * (64 << 20)}), 413, "zip"),
        "many": (_zip({f"{i}.dcm": b"x" for i in range(10_000)}, zipfile.ZIP_STORED), 413, "10000 members"),
    }
    link = zipfile.ZipInfo("link.nii.gz")
    link.external_attr = (0o120777 << 16)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(link, "/etc/passwd")
    cases["symlink"] = (buf.getvalue(), 400, "symbolic link")
    import nibabel as nib

    nib.save(nib.Nifti1Pair(np.zeros((4, 4, 4), np.int16), np.eye(4)), tmp / "pair.hdr")  # its voxels: pair.img
    cases["pair header"] = ((tmp / "pair.hdr").read_bytes(), 415, "unsupported content")  # was read as the image
    for name, (data, status, words) in cases.items():
        r = post(client, [data])
        assert r.status_code == status, (name, r.text)
        assert words in r.json()["detail"], (name, r.json())
        assert "\n" not in r.json()["detail"]
    assert not list((tmp / "data" / "studies").glob("*/input")), "refused uploads leave nothing"
    assert not (tmp.parent / "etc").exists()
    r = post(client, [_zip({"scan.nii.gz": good})])  # a good zip still works after all that
    assert wait_done(client, r.json()["job_id"])["status"] == "done"


def test_too_many_multipart_files_413(service):
    client, *_ = service
    r = post(client, [b"x"] * 60)
    assert r.status_code == 413 and "Too many files" in r.json()["detail"]


def test_full_queue_503_retry_after(tmp_path, cls_run):
    from fastapi.testclient import TestClient

    tokens = tmp_path / "t.json"
    tok = new_token(tokens)
    app = create_app(ServiceConfig(models={"cls": cls_run}, data_dir=tmp_path / "d", tokens=tokens, queue_size=2,
                                   start_workers=False))  # fmt: skip
    with TestClient(app, headers={"Authorization": f"Bearer {tok}"}) as client:
        codes = [post(client, [nifti_bytes(tmp_path)]) for _ in range(3)]
    assert [r.status_code for r in codes] == [202, 202, 503]
    assert int(codes[2].headers["Retry-After"]) >= 1


def test_one_token_cannot_fill_a_models_queue_for_the_others(tmp_path, cls_run):
    """One client could queue a model's whole queue (503 for every other client until it drained). With
    --max-active-per-token 2 its third study is 429 with Retry-After, another token's upload is taken."""
    from fastapi.testclient import TestClient

    tokens = tmp_path / "t.json"
    busy, other = new_token(tokens), new_token(tokens)
    app = create_app(ServiceConfig(models={"cls": cls_run}, data_dir=tmp_path / "d", tokens=tokens, queue_size=8,
                                   start_workers=False, max_active_per_token=2))  # fmt: skip
    with TestClient(app, headers={"Authorization": f"Bearer {busy}"}) as client:
        codes = [post(client, [nifti_bytes(tmp_path)]) for _ in range(3)]
        taken = post(client, [nifti_bytes(tmp_path)], headers={"Authorization": f"Bearer {other}"})
    assert [r.status_code for r in codes] == [202, 202, 429] and taken.status_code == 202
    assert "this token has 2 studies queued or running" in codes[2].json()["detail"]
    assert int(codes[2].headers["Retry-After"]) >= 1


def test_restart_runs_queued_jobs_and_retries_dead_worker_once(tmp_path, cls_run):
    """Jobs queued when the service stopped run after the restart; a job left 'running' (its worker
    killed mid-job) is retried once, and failed with a reason the second time, never lost."""
    from fastapi.testclient import TestClient

    tokens = tmp_path / "t.json"
    tok = new_token(tokens)
    headers = {"Authorization": f"Bearer {tok}"}

    def config(start: bool) -> ServiceConfig:
        return ServiceConfig(models={"cls": cls_run}, data_dir=tmp_path / "d", tokens=tokens, start_workers=start)

    with TestClient(create_app(config(False)), headers=headers) as client:
        ids = [post(client, [nifti_bytes(tmp_path, s)]).json()["job_id"] for s in range(3)]
        assert {client.get(f"/v1/jobs/{i}").json()["status"] for i in ids} == {"queued"}
    store = JobStore(tmp_path / "d" / "jobs.sqlite")  # what a kill -9 mid-job leaves: 'running' rows
    store.claim("cls", 1)  # ids[0] running, attempt 1
    store._exec("UPDATE jobs SET status='running', attempts=2 WHERE id=?", (ids[1],))  # already retried once
    store.close()
    with TestClient(create_app(config(True)), headers=headers) as client:
        jobs = [wait_done(client, i) for i in ids]
    assert [j["status"] for j in jobs] == ["done", "failed", "done"]
    assert jobs[0]["attempts"] == 2 and "stopped during this job 2 times" in jobs[1]["reason"]


def test_failed_job_has_one_line_reason(service):
    client, *_ , tmp = service
    vol = Volume(np.zeros((4, 8, 8), np.float32))  # 3D into a 2D classifier
    data = Path(write(vol, tmp / "vol.nii.gz")).read_bytes()
    job = wait_done(client, post(client, [data]).json()["job_id"])
    assert job["status"] == "failed" and job["reason"] and "\n" not in job["reason"]
    assert client.get(f"/v1/studies/{job['id']}/results").status_code == 409


@pytest.mark.parametrize("args, words", [
    (["--port", "99999"], "error: --port must be 1..65,535, got 99999"),
    (["--max-upload-mb", "-1"], "error: --max-upload-mb must be 1..1,048,576, got -1"),
    (["--queue-size", "0"], "error: --queue-size must be 1..100,000, got 0"),
    (["--min-free-mb", "-5"], "error: --min-free-mb must be 0..1,048,576, got -5"),
    (["--header-timeout-s", "0"], "error: --header-timeout-s must be 0.1..86,400 seconds, got 0.0"),
    (["--body-idle-timeout-s", "nan"], "error: --body-idle-timeout-s must be 0.1..86,400 seconds, got nan"),
    (["--max-connections", "0"], "error: --max-connections must be 1..100,000, got 0"),
    (["--max-active-per-token", "-1"], "error: --max-active-per-token must be 0..100,000, got -1"),
    (["--port", "{busy}"], "error: cannot listen on 127.0.0.1 port {busy} (Address already in use)"),
    (["--explain", "bogus"], "error: --explain bogus: unknown explainer 'bogus'; valid: gradcam, gradcampp, "
                             "guided_backprop, integrated_gradients, occlusion"),
])  # fmt: skip
def test_serve_options_no_server_can_use_are_one_line(tmp_path, monkeypatch, capsys, args, words):
    """A port over 65535 was an OverflowError traceback, a port in use uvicorn's log and exit 3, a negative upload
    limit or queue a server that refused every request; now one line and exit 2 before any model loads."""
    import socket
    import sys

    from medanomaly.cli.app import main

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = str(busy.getsockname()[1])
        args = [a.replace("{busy}", port) for a in args]
        monkeypatch.setattr(sys, "argv", ["medanomaly", "serve", str(tmp_path / "never_loaded_run"), "--tokens",
                                          str(tmp_path / "tokens.json"), "--data", str(tmp_path / "data"), *args])  # fmt: skip
        with pytest.raises(SystemExit) as code:
            main()
    assert code.value.code == 2 and capsys.readouterr().err.strip() == words.replace("{busy}", port)
    assert not (tmp_path / "data").exists()


def test_disk_full_is_507_and_leaves_no_half_stored_study(service, monkeypatch, caplog):
    """A disk that filled while an upload was stored was a 500 with a traceback in the log, and the half-written
    study folder stayed; a disk already nearly full accepted uploads until it was full."""
    import errno
    import shutil
    from collections import namedtuple

    from medanomaly.deploy.service import ingest

    client, _, _, tmp = service
    studies = tmp / "data" / "studies"
    real_copy = ingest._copy

    def copy_then_disk_full(src, dest, budget, reason):
        real_copy(src, dest, budget, reason)
        raise OSError(errno.ENOSPC, "No space left on device", str(dest))

    monkeypatch.setattr(ingest, "_copy", copy_then_disk_full)
    r = post(client, [nifti_bytes(tmp)])
    assert r.status_code == 507 and "disk full" in r.json()["detail"]
    assert not any(studies.iterdir()) and client.get("/v1/jobs").json() == []
    assert str(tmp) not in caplog.text and "Traceback" not in caplog.text
    monkeypatch.setattr(ingest, "_copy", real_copy)

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 40, (1 << 40) - (100 << 20), 100 << 20))
    r = post(client, [nifti_bytes(tmp)])
    assert r.status_code == 507 and "nearly full" in r.json()["detail"]
    assert not any(studies.iterdir())

    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(0, 0, 0))  # a mount that reports no size
    r = post(client, [nifti_bytes(tmp)])
    assert r.status_code == 202 and wait_done(client, r.json()["job_id"])["status"] == "done"
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 40, 0, 1 << 40))
    r = post(client, [nifti_bytes(tmp)])
    assert r.status_code == 202 and wait_done(client, r.json()["job_id"])["status"] == "done"


def test_a_cine_loop_is_predicted_on_the_frame_asked_for(service):
    """A cine (an ultrasound clip) sent to the service failed with "give --frame N", an option the API had not:
    ``?frame=N`` predicts frame N; without it the reason names the query parameter; a frame out of range is named."""
    from tests.integration.test_cine_frame import _grey_cine

    client, _, _, tmp = service
    cine = _grey_cine(tmp).read_bytes()
    reasons = {}
    for query in ({}, {"frame": 9}):
        job = wait_done(client, post(client, [cine], params={"model": "cls", **query}).json()["job_id"])
        assert job["status"] == "failed"
        reasons[str(query)] = job["reason"]
    assert "upload it with ?frame=N" in reasons["{}"] and "--frame" not in reasons["{}"]
    assert reasons["{'frame': 9}"].startswith("frame=9: the cine has 4 frames (0..3)")
    r = post(client, [cine], params={"model": "cls", "frame": 2})
    assert r.status_code == 202, r.text
    job = wait_done(client, r.json()["job_id"])
    assert job["status"] == "done", job
    study = r.json()["study_id"]
    result = client.get(f"/v1/studies/{study}/results").json()
    assert result["image"]["shape_zyx"][0] == 1 and set(result["probabilities"]) == {"normal", "abnormal"}
    assert post(client, [cine], params={"model": "cls", "frame": -1}).status_code == 422


def test_a_4d_image_is_predicted_on_the_volume_asked_for(service):
    """A 4D NIfTI (an MSD-style multi-contrast volume) was refused with "medanomaly reads 2D/3D images", with no way
    to take one volume: ``?frame=N`` predicts volume N, as the same volume uploaded alone is predicted."""
    import nibabel as nib

    client, _, _, tmp = service
    volumes = np.random.default_rng(3).normal(0, 1, (32, 32, 1, 2)).astype(np.float32)
    volumes[..., 1] += 2.0  # another contrast
    nib.save(nib.Nifti1Image(volumes, np.diag([0.5, 0.5, 1.0, 1.0])), tmp / "four.nii.gz")
    nib.save(nib.Nifti1Image(volumes[..., 1], np.diag([0.5, 0.5, 1.0, 1.0])), tmp / "second.nii.gz")
    job = wait_done(client, post(client, [(tmp / "four.nii.gz").read_bytes()], params={"model": "cls"}).json()["job_id"])
    assert job["status"] == "failed" and job["reason"].endswith("4D image (2 volumes, 0..1): upload it with ?frame=N")
    probabilities = []
    for name, query in (("four.nii.gz", {"frame": 1}), ("second.nii.gz", {})):
        r = post(client, [(tmp / name).read_bytes()], params={"model": "cls", **query})
        assert r.status_code == 202 and wait_done(client, r.json()["job_id"])["status"] == "done", r.text
        probabilities.append(client.get(f"/v1/studies/{r.json()['study_id']}/results").json()["probabilities"])
    assert probabilities[0] == pytest.approx(probabilities[1])
    job = wait_done(client, post(client, [(tmp / "four.nii.gz").read_bytes()],
                                 params={"model": "cls", "frame": 2}).json()["job_id"])  # fmt: skip
    assert job["reason"].endswith("frame=2: the 4D image has 2 volumes (0..1)"), job


def test_a_freesurfer_mgz_upload_is_predicted(service):
    """An MGZ (FreeSurfer's T1.mgz) was refused as "unsupported content": stored as image.mgz, it is predicted as the
    same image sent as NIfTI is; bytes that only look like a gzip are still refused."""
    import gzip

    import nibabel as nib

    client, _, _, tmp = service
    image = np.random.default_rng(5).normal(0, 1, (32, 32, 1)).astype(np.float32)
    affine = np.diag([0.5, 0.5, 1.0, 1.0])
    nib.save(nib.MGHImage(image, affine), tmp / "T1.mgz")
    nib.save(nib.Nifti1Image(image, affine), tmp / "T1.nii.gz")
    probabilities = []
    for name in ("T1.mgz", "T1.nii.gz"):
        r = post(client, [(tmp / name).read_bytes()], params={"model": "cls"})
        assert r.status_code == 202 and wait_done(client, r.json()["job_id"])["status"] == "done", r.text
        probabilities.append(client.get(f"/v1/studies/{r.json()['study_id']}/results").json()["probabilities"])
    assert probabilities[0] == pytest.approx(probabilities[1])
    r = post(client, [gzip.compress(b"not an image" * 100)], params={"model": "cls"})
    assert r.status_code == 415 and "NIfTI, MGH, NRRD, MINC or zip" in r.json()["detail"]


@pytest.mark.parametrize("name", ["minc2_1_scale.mnc", "minc1_1_scale.mnc"])
def test_a_minc_upload_is_read_as_the_same_image_sent_as_nifti(service, name):
    """A MINC file (nibabel's test data, written by the MINC tools) was "unsupported content" at the service though
    `medanomaly predict` reads it: stored as image.mnc it is read as the same image sent as NIfTI is (the test's model
    is 2D, so both jobs end with the same reason, naming the volume's shape)."""
    import nibabel as nib

    from medanomaly.io import read, write

    client, _, _, tmp = service
    source = Path(nib.__file__).parent / "tests" / "data" / name
    write(read(source), tmp / "same.nii.gz")
    reasons = []
    for data in (source.read_bytes(), (tmp / "same.nii.gz").read_bytes()):
        r = post(client, [data], params={"model": "cls"})
        assert r.status_code == 202, r.text
        reasons.append(wait_done(client, r.json()["job_id"]).get("reason"))
    shape = " x ".join(map(str, read(source).array.shape))
    assert reasons[0] == reasons[1] and reasons[0].startswith("a 3D image of shape"), reasons
    assert f"({shape.replace(' x ', ', ')})" in reasons[0]


@pytest.mark.parametrize(("header", "frame"), [("scaled+tlrc.HEAD", None), ("phantom_EPI_asc_CLEAR_2_1.PAR", 1)])
def test_an_afni_or_par_rec_pair_is_read_as_the_same_image_sent_as_nifti(service, header, frame):
    """A two-file image (AFNI HEAD + BRIK, Philips PAR + REC; nibabel's test files) could not be uploaded at all: its
    voxel file has no signature. Sent as its two files, or a zip of them, it is read as the same volume sent as NIfTI
    (the test's model is 2D, so the jobs end with one reason naming the volume's shape)."""
    import nibabel as nib

    from medanomaly.io import read, write

    client, _, _, tmp = service
    data_dir = Path(nib.__file__).parent / "tests" / "data"
    head = data_dir / header
    voxels = head.with_suffix(".BRIK") if header.endswith(".HEAD") else head.with_suffix(".REC")
    write(read(head, volume=frame), tmp / "same.nii.gz")
    query = {"model": "cls", **({"frame": frame} if frame is not None else {})}
    reasons = []
    for files, params in (([head.read_bytes(), voxels.read_bytes()], query),
                          ([voxels.read_bytes(), head.read_bytes()], query),
                          ([_zip({head.name: head.read_bytes(), voxels.name: voxels.read_bytes()})], query),
                          ([(tmp / "same.nii.gz").read_bytes()], {"model": "cls"})):  # fmt: skip
        r = post(client, files, params=params)
        assert r.status_code == 202, r.text
        reasons.append(wait_done(client, r.json()["job_id"]).get("reason"))
    assert len(set(reasons)) == 1 and reasons[0].startswith("a 3D image of shape"), reasons


def test_half_a_pair_or_a_header_with_another_image_is_refused_before_it_is_stored(service):
    import nibabel as nib

    client, _, _, tmp = service
    data_dir = Path(nib.__file__).parent / "tests" / "data"
    par, rec = ((data_dir / f"phantom_EPI_asc_CLEAR_2_1.{s}").read_bytes() for s in ("PAR", "REC"))
    for files in ([rec], [par], [par, nifti_bytes(tmp)], [rec, rec], [_zip({"a.PAR": par})], [_zip({"a.REC": rec})]):
        r = post(client, files, params={"model": "cls"})
        assert r.status_code == 415 and "a PAR/REC or AFNI HEAD/BRIK pair is sent as its two files" in r.text, r.text
        assert "in the zip" not in r.text, r.text  # the refusal said so of files sent directly
    assert not any((tmp / "data").rglob("*.part")) and not any((tmp / "data").rglob("image.*"))
    for files in ([par], [_zip({"a.PAR": par})]):
        assert "a PAR header without its voxel file" in post(client, files, params={"model": "cls"}).text


def test_an_hdf5_file_that_is_no_minc_fails_its_job_in_one_line(service):
    client, _, _, tmp = service
    r = post(client, [b"\x89HDF\r\n\x1a\n" + bytes(4000)], params={"model": "cls"})
    assert r.status_code == 202, r.text
    job = wait_done(client, r.json()["job_id"])
    assert job["status"] == "failed" and "\n" not in job["reason"] and str(tmp) not in job["reason"], job


def test_every_answer_carries_the_security_headers_and_patient_data_is_not_cached(service):
    """No security header was set: a study's files could be sniffed as HTML, the viewer framed by another site, a
    study id sent on as a referrer, and a patient's images and results kept by the browser's or a proxy's cache."""
    client, *_ , tmp = service
    r = post(client, [nifti_bytes(tmp)])
    job = wait_done(client, r.json()["job_id"])
    for path in ("/", "/docs", "/health", "/v1/models", f"/v1/studies/{job['id']}/results",
                 f"/v1/studies/{job['id']}/image", "/v1/jobs/nope"):  # fmt: skip
        reply = client.get(path)
        assert reply.headers["x-content-type-options"] == "nosniff", path
        assert reply.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in reply.headers[
            "content-security-policy"], path
        assert reply.headers["referrer-policy"] == "no-referrer", path
        assert (reply.headers.get("cache-control") == "no-store") == path.startswith("/v1/"), path
        policy = reply.headers["content-security-policy"]
        script = policy.split(";")[1]
        assert script.startswith(" script-src 'self'") and "unsafe-inline" not in script and "'unsafe-eval'" not in script, path
    import base64
    import hashlib
    import re

    docs = client.get("/docs")
    (inline,) = re.findall(r"<script>(.*?)</script>", docs.text, flags=re.S)  # Swagger UI's start: allowed by hash
    digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in docs.headers["content-security-policy"]
    assert "sha256" not in client.get("/").headers["content-security-policy"], "the viewer has no inline script"
    too_big = client.post("/v1/studies", content=b"x" * (3 << 20), headers={"content-type": "multipart/form-data"})
    assert too_big.status_code == 413 and too_big.headers["x-content-type-options"] == "nosniff"


def test_every_api_request_is_in_the_audit_trail_with_its_token_id_and_nothing_secret(service):
    """Who read or deleted which study was nowhere: each /v1 request is one JSON line in DATA/audit.jsonl (0600): the
    token's id (never the token), method, path, status and client address; refusals too."""
    import stat

    from medanomaly.deploy.service.tokens import list_tokens

    client, full, other, tmp = service
    r = post(client, [nifti_bytes(tmp)])
    job = wait_done(client, r.json()["job_id"])
    client.get(f"/v1/studies/{job['id']}/results")
    client.get("/v1/jobs", headers={"Authorization": "Bearer wrong"})
    client.delete(f"/v1/studies/{job['id']}")
    client.get("/health")  # not an API request: not recorded
    trail = tmp / "data" / "audit.jsonl"
    lines = [json.loads(line) for line in trail.read_text().splitlines()]
    full_id = next(e["id"] for e in list_tokens(tmp / "tokens.json") if e["models"] == ["*"])
    seen = {(e["method"], e["path"].replace(job["id"], "ID"), e["status"], e["token"]) for e in lines}
    assert ("POST", "/v1/studies", 202, full_id) in seen
    assert ("GET", "/v1/studies/ID/results", 200, full_id) in seen and ("DELETE", "/v1/studies/ID", 200, full_id) in seen
    assert ("GET", "/v1/jobs", 401, "-") in seen and not any(e["path"] == "/health" for e in lines)
    text = trail.read_text()
    assert full not in text and other not in text and "wrong" not in text and "Bearer" not in text
    assert stat.S_IMODE(trail.stat().st_mode) == 0o600 and all(e["time"].endswith("Z") and e["client"] for e in lines)


def test_a_viewer_on_another_origin_may_call_the_api_only_when_named(tmp_path, cls_run, monkeypatch, capsys):
    """A DICOM viewer served from another origin (OHIF at https://ohif.hospital.org) could not call the API: the
    browser's preflight got no CORS answer. `serve --cors-origin URL` names the origins that may (none by default);
    another origin still gets none, and '*' or a URL with a path is refused in one line."""
    from fastapi.testclient import TestClient

    from .conftest import run_main

    tokens = tmp_path / "tokens.json"
    token = new_token(tokens)
    preflight = {"Origin": "https://ohif.hospital.org", "Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "authorization"}  # fmt: skip
    for origins, allowed in (((), False), (("https://ohif.hospital.org",), True)):
        app = create_app(ServiceConfig(models={"cls": cls_run}, data_dir=tmp_path / f"d{len(origins)}", tokens=tokens,
                                       cors_origins=origins))  # fmt: skip
        with TestClient(app) as client:
            reply = client.options("/v1/jobs", headers=preflight)
            assert (reply.headers.get("access-control-allow-origin") == "https://ohif.hospital.org") == allowed
            got = client.get("/v1/jobs", headers={"Origin": "https://ohif.hospital.org", "Authorization": f"Bearer {token}"})
            assert got.status_code == 200 and ("access-control-allow-origin" in got.headers) == allowed
            other = client.options("/v1/jobs", headers={**preflight, "Origin": "https://evil.example"})
            assert "access-control-allow-origin" not in other.headers
    for bad in ("*", "https://ohif.hospital.org/viewer", "https://ohif.hospital.org/", "ftp://x", "https://x:0",
                "https://user:pw@ohif.hospital.org"):  # fmt: skip
        code, _, err = run_main(monkeypatch, capsys, "serve", str(cls_run), "--tokens", str(tokens), "--cors-origin", bad)
        assert code == 2 and "an origin is http(s)://host[:port]" in err, err


def test_behind_a_proxy_at_a_path_prefix_pages_point_under_it_and_the_api_keeps_its_headers_and_audit(
    tmp_path, cls_run, monkeypatch, capsys
) -> None:
    """``serve --root-path /medanomaly`` (a reverse proxy serving it at https://host/medanomaly/): the viewer's and the
    API page's URLs stay under the prefix, and uvicorn's prefixed ``scope["path"]`` (``/medanomaly/v1/jobs``) still
    gets the API's ``no-store`` and an audit line of the API's own path (both matched ``/v1/`` at the start only)."""
    import json

    from fastapi.testclient import TestClient

    from .conftest import run_main

    tokens = tmp_path / "tokens.json"
    token = new_token(tokens)
    app = create_app(ServiceConfig(models={"cls": cls_run}, data_dir=tmp_path / "data", tokens=tokens))
    with TestClient(app, root_path="/medanomaly") as client:  # paths as uvicorn gives them: the prefix in front
        assert '<base href="/medanomaly/">' in client.get("/medanomaly/").text
        page = client.get("/medanomaly/docs").text
        assert "'/medanomaly/openapi.json'" in page and '"/medanomaly/static/swagger-ui-bundle.js"' in page
        assert client.get("/medanomaly/openapi.json").json()["servers"] == [{"url": "/medanomaly"}]
        jobs = client.get("/medanomaly/v1/jobs", headers={"Authorization": f"Bearer {token}"})
        assert jobs.status_code == 200 and jobs.headers["cache-control"] == "no-store"
    (line,) = (tmp_path / "data" / "audit.jsonl").read_text().splitlines()
    assert json.loads(line)["path"] == "/v1/jobs"
    for bad in ("medanomaly", "/a b", "/a/../b", "/a//b", '/"><script>', "/a?b"):
        code, _, err = run_main(monkeypatch, capsys, "serve", str(cls_run), "--tokens", str(tokens), "--root-path", bad)
        assert code == 2 and "--root-path" in err and len(err.strip().splitlines()) == 1, err
