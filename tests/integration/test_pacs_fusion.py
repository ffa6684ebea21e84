"""A fusion model at a real Orthanc (Debian; no mock): the PACS bridge and the DICOM node pair a study's T1 and PD
series (ITK's real brain slices written as DICOM MR series) into one call, stored as one SR in the study; a series of
the study that comes after its set was run is skipped, naming the set's row."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from tests.integration.conftest import train_tiny_fusion
from tests.integration.test_batch_fusion import STUDY, _series
from tests.integration.test_listener import AE, _push, _wait
from tests.integration.test_pacs import _count_instances, _free_port, running_orthanc

pytestmark = pytest.mark.pacs


@pytest.fixture(scope="module")
def fusion_run(tmp_path_factory) -> Path:
    return train_tiny_fusion(tmp_path_factory.mktemp("pacs-fusion"))


def _folder(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def _upload(rest: str, folder: Path) -> None:
    for path in sorted(folder.iterdir()):
        urllib.request.urlopen(urllib.request.Request(f"{rest}/instances", data=path.read_bytes(), method="POST"))


def _states(path: Path) -> dict[str, tuple[str, str]]:
    from medanomaly.deploy.pacs_state import PacsState

    state = PacsState(path)
    try:
        return {row[0]: (row[3], row[4]) for row in state.rows()}
    finally:
        state.close()


def _series_uid(folder: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True).SeriesInstanceUID)


def _stored_call(rest: str, study_uid: str) -> dict:
    """The call SR (TID 1500) our run stored in the study, read back."""
    from dicomweb_client.api import DICOMwebClient

    from medanomaly.deploy.dicom_call_sr import read_call_sr

    client = DICOMwebClient(f"{rest}/dicom-web")
    (sr_uid,) = [s["0020000E"]["Value"][0] for s in client.search_for_series(study_uid)
                 if s["00080060"]["Value"][0] == "SR"]  # fmt: skip
    (sr,) = client.retrieve_series(study_uid, sr_uid)
    return read_call_sr(sr)


def test_the_bridge_runs_a_studys_set_once_and_stores_its_call_in_the_study(fusion_run, tmp_path) -> None:
    from medanomaly.deploy.pacs import run_pacs
    from medanomaly.engine import load_model

    model = load_model(fusion_run)
    with running_orthanc(_folder(tmp_path / "orthanc")) as rest:
        t1, pd = _series(tmp_path, 1, "t1", "T1", "AX T1W SE"), _series(tmp_path, 1, "pd", "PD", "pd_tse_tra")
        for folder in (t1, pd):
            _upload(rest, folder)
        first = run_pacs(model, f"{rest}/dicom-web", tmp_path / "work")
        assert (first.processed, first.stored, first.errors) == (1, 1, []), first
        record = json.loads(next((tmp_path / "work" / "series").glob("*.json")).read_text())
        assert record["fusion"] == {"T1": _series_uid(t1), "PD": _series_uid(pd)}
        assert _stored_call(rest, STUDY.format(1))["class"] == record["label"]
        later = _series(tmp_path, 1, "pd2", "PD", "PD repeat")  # archived after the study was run
        _upload(rest, later)
        before = _count_instances(rest)
        second = run_pacs(model, f"{rest}/dicom-web", tmp_path / "work")
        assert (second.processed, second.stored) == (0, 0) and _count_instances(rest) == before
    states = _states(tmp_path / "work" / "pacs_state.sqlite")
    assert states[_series_uid(t1)] == ("done", "")
    assert states[_series_uid(pd)] == ("skipped", f"PD of the fusion set in the row of series {_series_uid(t1)}")
    assert states[_series_uid(later)][1] == (f"not selected: the study's fusion set, in the row of series "
                                             f"{_series_uid(t1)} was run before this one came")  # fmt: skip


def test_the_node_pairs_a_pushed_studys_series_into_one_call_sent_back(fusion_run, tmp_path) -> None:
    import threading
    import time

    from medanomaly.deploy.listener import ListenerOptions, run_listener
    from medanomaly.engine import load_model

    dicom_port, node_port = _free_port(), _free_port()
    settings = {"DicomServerEnabled": True, "DicomAet": "ORTHANC", "DicomPort": dicom_port,
                "DicomModalities": {"medanomaly": [AE, "127.0.0.1", node_port]}}  # fmt: skip
    with running_orthanc(_folder(tmp_path / "orthanc"), **settings) as rest:
        t1, pd = _series(tmp_path, 2, "t1", "T1", "T1"), _series(tmp_path, 2, "pd", "PD", "PD")
        for folder in (t1, pd):
            _upload(rest, folder)
        before = _count_instances(rest)
        stop, box = threading.Event(), {}
        options = ListenerOptions(port=node_port, allowed=("ORTHANC",), idle_s=1.0,
                                  store_to=f"dimse://127.0.0.1:{dicom_port}/ORTHANC")  # fmt: skip
        thread = threading.Thread(target=lambda: box.update(summary=run_listener(
            load_model(fusion_run), tmp_path / "work", options, stop=stop)), daemon=True)  # fmt: skip
        thread.start()
        time.sleep(1.0)
        try:
            assert _push(rest) == 200
            _wait(lambda: _count_instances(rest) == before + 1)
            call = _stored_call(rest, STUDY.format(2))
        finally:
            stop.set()
            thread.join(30)
    summary = box["summary"]
    assert (summary.processed, summary.stored, summary.errors) == (1, 1, []), summary
    record = json.loads(next((tmp_path / "work" / "series").glob("*.json")).read_text())
    assert record["fusion"] == {"T1": _series_uid(t1), "PD": _series_uid(pd)} and call["class"] == record["label"]


def test_the_bridge_stores_a_registered_calls_spatial_registration_in_the_study(fusion_run, tmp_path) -> None:
    """--register-to-first at the PACS: a PD of another frame of reference, its anatomy 6 mm off; the call's SR and its
    Spatial Registration (REG) are stored into the study, the REG relating the PD's frame to the T1's."""
    from dicomweb_client.api import DICOMwebClient

    from medanomaly.deploy.batch import BatchOptions
    from medanomaly.deploy.pacs import run_pacs
    from medanomaly.engine import load_model
    from tests.integration.test_batch_fusion import FRAME

    with running_orthanc(_folder(tmp_path / "orthanc")) as rest:
        t1, pd = _series(tmp_path, 3, "t1", "T1", "T1"), _series(tmp_path, 3, "pd", "PD", "PD", frame=8, move=6)
        for folder in (t1, pd):
            _upload(rest, folder)
        summary = run_pacs(load_model(fusion_run), f"{rest}/dicom-web", tmp_path / "work",
                           options=BatchOptions(register_to_first=True))  # fmt: skip
        assert (summary.processed, summary.stored, summary.errors) == (1, 2, []), summary
        client = DICOMwebClient(f"{rest}/dicom-web")
        (reg_uid,) = [s["0020000E"]["Value"][0] for s in client.search_for_series(STUDY.format(3))
                      if s["00080060"]["Value"][0] == "REG"]  # fmt: skip
        (reg,) = client.retrieve_series(STUDY.format(3), reg_uid)
    assert [item.FrameOfReferenceUID for item in reg.RegistrationSequence] == [FRAME.format(3), FRAME.format(8)]


def test_the_bridge_pairs_a_patient_s_studies_and_a_set_waits_for_its_other_modality(fusion_run, tmp_path) -> None:
    """--pair-by patient at the PACS: a T1 study came first; with --pair-wait its set waited (nothing run or stored)
    instead of running without PD; the patient's PD study (another visit, another frame, the anatomy 6 mm off) came and
    the next poll ran both as one call (registered), its SR and REG in the T1's study. Another patient's lone T1 waited
    until its wait was over, then ran without PD; that patient's PD study, come later, ran at once without T1 (its T1
    ran already and will not come again) instead of waiting out its own wait. No PatientID in the state file or the
    records."""
    import time

    import pydicom

    from medanomaly.deploy.batch_context import BatchOptions
    from medanomaly.deploy.pacs import run_pacs
    from medanomaly.engine import load_model
    from tests.integration.test_batch_fusion import _of_patient

    model, work = load_model(fusion_run), tmp_path / "work"
    from dataclasses import replace

    options = BatchOptions(pair_by="patient", register_to_first=True)
    with running_orthanc(_folder(tmp_path / "orthanc")) as rest:
        t1 = _of_patient(_series(tmp_path, 11, "t1", "T1", "T1"), "PAT-A")
        lone = _of_patient(_series(tmp_path, 13, "t1", "T1", "T1"), "PAT-B")
        for folder in (t1, lone):
            _upload(rest, folder)

        def poll(wait_s: float):
            return run_pacs(model, f"{rest}/dicom-web", work, options=replace(options, pair_wait_s=wait_s))

        first = poll(3600.0)
        assert (first.processed, first.stored, first.waiting, first.errors) == (0, 0, 2, []), first
        pd = _of_patient(_series(tmp_path, 12, "pd", "PD", "PD", frame=18, move=6), "PAT-A")
        _upload(rest, pd)
        second = poll(3600.0)
        assert (second.processed, second.stored, second.waiting, second.errors) == (1, 2, 1, []), second
        assert _stored_call(rest, STUDY.format(11))["class"] is not None  # the call's SR is in the T1's study
        time.sleep(0.2)
        third = poll(0.1)  # PAT-B's wait is over: its T1 runs without PD
        assert (third.processed, third.stored, third.waiting, third.errors) == (1, 1, 0, []), third
        late = _of_patient(_series(tmp_path, 14, "pd", "PD", "PD"), "PAT-B")
        _upload(rest, late)
        fourth = poll(3600.0)  # PAT-B's PD comes after its T1 ran: it runs now, without T1
        assert (fourth.processed, fourth.stored, fourth.waiting, fourth.errors) == (1, 1, 0, []), fourth
    states = _states(work / "pacs_state.sqlite")
    assert states[_series_uid(t1)] == ("done", "")
    assert states[_series_uid(pd)] == ("skipped", f"PD of the fusion set in the row of series {_series_uid(t1)}")
    assert states[_series_uid(lone)] == ("done", "") and states[_series_uid(late)] == ("done", "")
    records = {r["series_id"]: r for r in (json.loads(p.read_text()) for p in (work / "series").glob("*.json"))}
    assert records[_series_uid(late)]["fusion"] == {"T1": None, "PD": _series_uid(late)}
    assert "missing_modality:T1" in records[_series_uid(late)]["prediction"]["flags"]
    both, alone = records[_series_uid(t1)], records[_series_uid(lone)]
    assert both["fusion"] == {"T1": _series_uid(t1), "PD": _series_uid(pd)}
    assert any(f.startswith("registered:PD rigid onto T1") for f in both["prediction"]["flags"])
    assert "missing_modality:PD" in alone["prediction"]["flags"]
    sr = pydicom.dcmread(work / both["dicom"]["sr"])
    assert {s.SeriesInstanceUID for study in sr.PertinentOtherEvidenceSequence
            for s in study.ReferencedSeriesSequence} == {_series_uid(pd)}  # fmt: skip
    texts = (work / "pacs_state.sqlite").read_bytes() + b"".join(p.read_bytes() for p in (work / "series").glob("*"))
    assert b"PAT-A" not in texts and b"PAT-B" not in texts


def _push_study(rest: str, study_uid: str) -> int:
    """Orthanc C-STOREs one study (by its UID) to the node: the HTTP status."""
    lookup = urllib.request.Request(f"{rest}/tools/lookup", data=study_uid.encode(), method="POST")
    with urllib.request.urlopen(lookup) as r:
        (found,) = [item["ID"] for item in json.load(r) if item["Type"] == "Study"]
    push = urllib.request.Request(f"{rest}/modalities/medanomaly/store", data=found.encode(), method="POST")
    with urllib.request.urlopen(push, timeout=120) as r:
        return r.status


def test_the_node_holds_a_patient_s_first_study_until_the_other_modality_is_pushed(fusion_run, tmp_path) -> None:
    """--pair-by patient --pair-wait at the node: a pushed T1 study was run at once without PD (its PD study, another
    visit, came later and ran alone). Now the T1's files wait in the inbox (recorded ``waiting``, nothing sent), also
    across a restart of the node; the patient's PD study is pushed and both run as one registered call, SR and REG sent
    into the T1's study. Another patient's lone T1 runs without PD once its wait is over; that patient's PD study,
    pushed later, runs at once without T1 (the round that takes it up holds nothing), not after a wait of its own."""
    import threading
    import time
    from contextlib import contextmanager
    from dataclasses import replace

    from medanomaly.deploy.batch_context import BatchOptions
    from medanomaly.deploy.listener import ListenerOptions, run_listener
    from medanomaly.engine import load_model
    from tests.integration.test_batch_fusion import _of_patient

    dicom_port, node_port = _free_port(), _free_port()
    settings = {"DicomServerEnabled": True, "DicomAet": "ORTHANC", "DicomPort": dicom_port,
                "DicomModalities": {"medanomaly": [AE, "127.0.0.1", node_port]}}  # fmt: skip
    work = tmp_path / "work"
    with running_orthanc(_folder(tmp_path / "orthanc"), **settings) as rest:
        t1 = _of_patient(_series(tmp_path, 31, "t1", "T1", "T1"), "PAT-A")
        pd = _of_patient(_series(tmp_path, 32, "pd", "PD", "PD", frame=38, move=6), "PAT-A")
        lone = _of_patient(_series(tmp_path, 33, "t1", "T1", "T1"), "PAT-B")
        late = _of_patient(_series(tmp_path, 34, "pd", "PD", "PD"), "PAT-B")
        for folder in (t1, pd, lone, late):
            _upload(rest, folder)
        before = _count_instances(rest)
        options = ListenerOptions(port=node_port, allowed=("ORTHANC",), idle_s=1.0,
                                  store_to=f"dimse://127.0.0.1:{dicom_port}/ORTHANC")  # fmt: skip
        batch = BatchOptions(pair_by="patient", register_to_first=True, pair_wait_s=3600.0)
        summaries, reported = [], []

        @contextmanager
        def node(batch: BatchOptions):
            stop, box = threading.Event(), {}
            thread = threading.Thread(target=lambda: box.update(summary=run_listener(
                load_model(fusion_run), work, options, batch, stop=stop,
                on_series=lambda s: reported.append((s.processed, s.waiting)))), daemon=True)  # fmt: skip
            thread.start()
            time.sleep(1.0)
            try:
                yield
            finally:
                stop.set()
                thread.join(30)
                summaries.append(box["summary"])

        with node(batch):
            assert _push_study(rest, STUDY.format(31)) == 200
            _wait(lambda: _states(work / "listener_state.sqlite").get(_series_uid(t1), ("",))[0] == "waiting")
            time.sleep(2.0)  # rounds go by: the set still waits, nothing is sent
            assert _count_instances(rest) == before and (work / "incoming" / _series_uid(t1)).is_dir()
        with node(batch):  # the node stopped and started again: the held T1 is taken up from its inbox
            assert _push_study(rest, STUDY.format(32)) == 200
            _wait(lambda: _count_instances(rest) == before + 2)  # the call's SR and REG
        with node(replace(batch, pair_wait_s=1.0)):  # PAT-B's T1 waits a second, then runs alone
            assert _push_study(rest, STUDY.format(33)) == 200
            _wait(lambda: _count_instances(rest) == before + 3)
            _wait(lambda: reported[-1] == (1, 0), 10)  # the round its wait ended in is reported, as any other
            rounds = len(reported)
            assert _push_study(rest, STUDY.format(34)) == 200  # PAT-B's PD, after its T1 ran
            _wait(lambda: _count_instances(rest) == before + 4)
            _wait(lambda: len(reported) > rounds, 10)
            assert reported[rounds:] == [(2, 0)], reported  # run in the round that took it up, never held
        call = _stored_call(rest, STUDY.format(31))
    states = _states(work / "listener_state.sqlite")
    assert states[_series_uid(t1)] == ("done", "") and states[_series_uid(lone)] == ("done", "")
    assert states[_series_uid(late)] == ("done", "")
    assert states[_series_uid(pd)] == ("skipped", f"PD of the fusion set in the row of series {_series_uid(t1)}")
    records = {r["series_id"]: r for r in (json.loads(p.read_text()) for p in (work / "series").glob("*.json"))}
    assert "missing_modality:T1" in records[_series_uid(late)]["prediction"]["flags"]
    both = records[_series_uid(t1)]
    assert both["fusion"] == {"T1": _series_uid(t1), "PD": _series_uid(pd)} and call["class"] == both["label"]
    assert any(f.startswith("registered:PD rigid onto T1") for f in both["prediction"]["flags"])
    assert "missing_modality:PD" in records[_series_uid(lone)]["prediction"]["flags"]
    assert not any((work / "incoming").iterdir())  # nothing left held
    assert [summary.processed for summary in summaries] == [0, 1, 2]


def test_with_keyed_ids_the_node_takes_a_late_partner_for_one_across_a_restart(fusion_run, tmp_path) -> None:
    """--pair-by patient --pair-wait --keyed-ids at the node: a patient's T1 waits its second, runs without PD, and the
    node stops. Started again (a restart forgets what it received), it takes the patient's PD, pushed now, for the late
    partner and runs it at once without T1 instead of holding it for its hour: the lone set was recorded with a patient
    key derived from the user's key, which lasts across runs (the run's own keys did not: it waited). Answered, the
    lone set and its patient key are gone from the state file, which never held the PatientID."""
    import sqlite3
    import threading
    import time

    from medanomaly.deploy.batch_context import BatchOptions
    from medanomaly.deploy.listener import ListenerOptions, run_listener
    from medanomaly.engine import load_model
    from tests.integration.test_batch_fusion import _of_patient

    dicom_port, node_port = _free_port(), _free_port()
    settings = {"DicomServerEnabled": True, "DicomAet": "ORTHANC", "DicomPort": dicom_port,
                "DicomModalities": {"medanomaly": [AE, "127.0.0.1", node_port]}}  # fmt: skip
    work, reported = tmp_path / "work", []
    options = ListenerOptions(port=node_port, allowed=("ORTHANC",), idle_s=1.0)

    def node(wait_s: float, until) -> None:
        stop = threading.Event()
        batch = BatchOptions(pair_by="patient", pair_wait_s=wait_s)
        thread = threading.Thread(target=lambda: run_listener(
            load_model(fusion_run), work, options, batch, stop=stop, key=b"k" * 32,
            on_series=lambda s: reported.append((s.processed, s.waiting))), daemon=True)  # fmt: skip
        thread.start()
        try:
            time.sleep(1.0)
            until()
        finally:
            stop.set()
            thread.join(30)

    with running_orthanc(_folder(tmp_path / "orthanc"), **settings) as rest:
        t1 = _of_patient(_series(tmp_path, 35, "t1", "T1", "T1"), "PAT-C")
        pd = _of_patient(_series(tmp_path, 36, "pd", "PD", "PD"), "PAT-C")
        for folder in (t1, pd):
            _upload(rest, folder)
        state_file = work / "listener_state.sqlite"

        def t1_ran_alone() -> None:
            assert _push_study(rest, STUDY.format(35)) == 200
            _wait(lambda: _states(state_file).get(_series_uid(t1), ("",))[0] == "done")

        def pd_taken_up() -> None:
            assert _push_study(rest, STUDY.format(36)) == 200
            _wait(lambda: _states(state_file).get(_series_uid(pd), ("",))[0] in ("done", "waiting"))

        node(1.0, t1_ran_alone)
        assert sqlite3.connect(state_file).execute("SELECT count(*) FROM lone_patients").fetchone() == (1,)
        node(3600.0, pd_taken_up)
    assert _states(state_file)[_series_uid(pd)] == ("done", ""), "the late partner was held for its own wait"
    assert reported[-1] == (1, 0), reported  # the restarted node's first round: the PD run, nothing held
    db = sqlite3.connect(state_file)
    assert db.execute("SELECT count(*) FROM lone_sets").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM lone_patients").fetchone() == (0,)
    assert b"PAT-C" not in state_file.read_bytes()
