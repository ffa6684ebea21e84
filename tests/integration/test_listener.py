"""The DICOM node (``listen``) against a real Orthanc (Debian; no mock): Orthanc pushes lung1 to it (C-STORE, as a
routing rule would), the node runs the model when the series is complete and sends the SEG, RT Structure Set and SR
back into the study (C-STORE to Orthanc's DICOM server); a second push adds nothing. Refusals: an AE title not
allowed, a series larger than the limit as it arrives, a sender that aborts halfway."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .test_pacs import ReferenceLesionModel, _count_instances, _free_port, running_orthanc

pytestmark = pytest.mark.pacs
AE = "MEDANOMALY"


@pytest.fixture(scope="module")
def pushing_orthanc(tmp_path_factory) -> Iterator[dict]:
    """An Orthanc that knows the node (AE MEDANOMALY on a free port) and holds lung1: its URLs, ports and lung1."""
    import pydicom

    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.io import read
    from medanomaly.io.dicom_writer import write_dicom_series

    dicom_port, node_port = _free_port(), _free_port()
    settings = {"DicomServerEnabled": True, "DicomAet": "ORTHANC", "DicomPort": dicom_port,
                "DicomModalities": {"medanomaly": [AE, "127.0.0.1", node_port]}}  # fmt: skip
    with running_orthanc(tmp_path_factory.mktemp("orthanc-push"), **settings) as rest:
        image, mask = pyradiomics_case("lung1")
        files = write_dicom_series(read(image).with_meta(modality="CT"), tmp_path_factory.mktemp("lung1") / "ct")
        for f in files:
            urllib.request.urlopen(urllib.request.Request(f"{rest}/instances", data=Path(f).read_bytes(), method="POST"))
        yield {"rest": rest, "dimse": f"dimse://127.0.0.1:{dicom_port}/ORTHANC", "node_port": node_port,
               "files": files, "mask": read(mask), "study_uid": str(pydicom.dcmread(files[0]).StudyInstanceUID)}


@contextmanager
def node(tmp: Path, orthanc: dict, batch=None, **options) -> Iterator[tuple[object, Path]]:
    """The listener in a thread (the reference-lesion model), stopped afterwards: (summary box, work folder)."""
    from medanomaly.deploy.listener import ListenerOptions, run_listener

    stop, box = threading.Event(), {}
    opts = ListenerOptions(port=orthanc["node_port"], allowed=("ORTHANC",), idle_s=1.0, **options)
    work = tmp / "work"
    thread = threading.Thread(target=lambda: box.update(summary=run_listener(
        ReferenceLesionModel(orthanc["mask"]), work, opts, batch, stop=stop)), daemon=True)  # fmt: skip
    thread.start()
    time.sleep(1.0)  # the server is up
    try:
        yield box, work
    finally:
        stop.set()
        thread.join(30)


def _push(rest: str) -> int:
    """Orthanc C-STOREs its study to the node (REST /modalities/medanomaly/store, synchronous): the HTTP status."""
    with urllib.request.urlopen(f"{rest}/studies") as r:
        (study,) = json.load(r)
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{rest}/modalities/medanomaly/store",
                                                           data=study.encode(), method="POST"), timeout=120) as r:  # fmt: skip
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


def _wait(condition, seconds: float = 60.0) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.3)


def _states(work: Path) -> list[tuple]:
    from medanomaly.deploy.pacs_state import PacsState

    state = PacsState(work / "listener_state.sqlite")
    try:
        return [(row[3], row[4]) for row in state.rows()]
    finally:
        state.close()


def test_a_pushed_series_is_run_and_its_results_sent_back_into_the_study_once(pushing_orthanc, tmp_path) -> None:
    rest = pushing_orthanc["rest"]
    before = _count_instances(rest)
    with node(tmp_path, pushing_orthanc, store_to=pushing_orthanc["dimse"]) as (box, work):
        assert _push(rest) == 200
        _wait(lambda: _count_instances(rest) == before + 3)
        record = json.loads(next((work / "series").glob("*.json")).read_text())
        assert record["largest_lesion_ml"] == pytest.approx(1.36, rel=0.01)  # measured on the pushed CT's HU
        assert _push(rest) == 200  # again, now with our SEG / RTSTRUCT / SR in it: set aside, nothing run
        time.sleep(3.0)
        assert _count_instances(rest) == before + 3
        assert not any((work / "incoming").iterdir()), "received files are removed once the series is handled"
    summary = box["summary"]
    assert (summary.processed, summary.stored, summary.skipped, summary.errors) == (1, 3, 1, [])
    assert summary.received == 2 * (before)
    assert _states(work) == [("done", "")]


def test_a_series_over_the_limit_is_refused_as_it_arrives_and_never_run(pushing_orthanc, tmp_path) -> None:
    from medanomaly.deploy.batch import BatchOptions

    rest = pushing_orthanc["rest"]
    before = _count_instances(rest)
    with node(tmp_path, pushing_orthanc, BatchOptions(memory_limit=2 * 2**20), store_to=pushing_orthanc["dimse"]) as (
        box, work):  # fmt: skip
        assert _push(rest) != 200  # Orthanc says its C-STORE failed
        _wait(lambda: _states(work) != [])
        assert not any((work / "incoming").iterdir())
    assert box["summary"].processed == 0 and _count_instances(rest) == before
    ((status, reason),) = _states(work)
    assert status == "refused" and "larger than --memory-limit (2 MiB) as it arrived" in reason


def test_an_ae_title_not_allowed_is_rejected_and_a_sender_that_aborts_halfway_is_never_run(
    pushing_orthanc, tmp_path
) -> None:
    import pydicom
    from pynetdicom import AE as Peer
    from pynetdicom.sop_class import CTImageStorage

    port = pushing_orthanc["node_port"]
    with node(tmp_path, pushing_orthanc) as (box, work):
        stranger = Peer(ae_title="STRANGER")
        stranger.add_requested_context(CTImageStorage)
        assoc = stranger.associate("127.0.0.1", port, ae_title=AE)
        assert assoc.is_rejected
        sender = Peer(ae_title="ORTHANC")
        sender.add_requested_context(CTImageStorage)
        assoc = sender.associate("127.0.0.1", port, ae_title=AE)
        assert assoc.is_established
        for f in pushing_orthanc["files"][:5]:
            assert assoc.send_c_store(pydicom.dcmread(f)).Status == 0
        assoc.abort()
        _wait(lambda: _states(work) != [])
    assert box["summary"].processed == 0
    ((status, reason),) = _states(work)
    assert status == "refused" and "aborted while sending it" in reason


def test_listen_refuses_a_node_open_to_anyone_and_a_port_in_use_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    import socket

    from .conftest import run_main

    code, _, err = run_main(monkeypatch, capsys, "listen", str(tmp_path / "no-run"))
    assert code == 2 and "--allow-ae" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_main(monkeypatch, capsys, "listen", str(tmp_path / "no-run"), "--allow-ae", "A\\B")
    assert code == 2 and "no backslash" in err, err
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = str(busy.getsockname()[1])
        code, _, err = run_main(monkeypatch, capsys, "listen", str(tmp_path / "no-run"), "--allow-ae", "PACS",
                                "--port", port)  # fmt: skip
    assert code == 2 and f"cannot listen on 127.0.0.1 port {port}" in err, err


def test_a_store_to_pacs_that_does_not_answer_is_one_line_before_the_model_loads(tmp_path, monkeypatch,
                                                                                 capsys) -> None:  # fmt: skip
    from .conftest import run_main

    closed = f"dimse://127.0.0.1:{_free_port()}/PACS"
    code, _, err = run_main(monkeypatch, capsys, "listen", str(tmp_path / "no-run"), "--allow-ae", "PACS", "--port",
                            str(_free_port()), "--store-to", closed, "--out", str(tmp_path / "work"))  # fmt: skip
    assert code == 2 and "cannot reach the PACS" in err and "no-run" not in err, err


def test_results_can_go_to_a_dicomweb_pacs(pushing_orthanc, tmp_path) -> None:
    """``--store-to`` a DICOMweb root: the results are sent with STOW-RS (Orthanc's DICOMweb plugin)."""
    rest = pushing_orthanc["rest"]
    with node(tmp_path, pushing_orthanc, store_to=f"{rest}/dicom-web") as (box, work):
        assert _push(rest) == 200
        _wait(lambda: _states(work) != [])
    summary = box["summary"]
    assert (summary.processed, summary.stored, summary.errors) == (1, 3, []) and _states(work) == [("done", "")]
    modalities = {s["MainDicomTags"]["Modality"] for s in json.load(urllib.request.urlopen(f"{rest}/series?expand"))}
    assert {"SEG", "RTSTRUCT", "SR"} <= modalities
