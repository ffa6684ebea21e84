"""--pair-wait without a PACS: which fusion sets wait for a missing modality, and a late partner that does not."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from medanomaly.deploy.archive import SeriesEntry
from medanomaly.deploy.fusion_sets import FusionSet
from medanomaly.deploy.pacs_state import PacsState
from medanomaly.deploy.pair_wait import ran_without, waiting_sets
from medanomaly.deploy.select import Decision

FINGERPRINT = "f"


T1_ALONE, PD_ALONE = ("1", {"T1"}, {"PD"}), ("2", {"PD"}, {"T1"})


@pytest.mark.parametrize(("present", "missing", "lone", "expected"), [
    (["PD"], ["T1"], [T1_ALONE], ["1"]),  # its T1 ran without it
    (["PD"], ["T1"], [PD_ALONE], []),  # an earlier PD ran alone: no T1 ran
    (["PD"], ["T1"], [("3", {"T1", "PD"}, set())], []),  # a whole set ran: nothing lacked a PD
    (["PD"], ["T1"], [], []),
    (["T1"], [], [T1_ALONE], []),  # nothing missing: nothing to wait for either
    (["CT"], ["T1", "PD"], [("4", {"T1"}, {"CT", "PD"})], []),  # the PD has not run
    (["CT"], ["T1", "PD"], [("4", {"T1"}, {"CT", "PD"}), ("5", {"PD"}, {"CT"})], ["4", "5"]),
    (["CT"], ["T1", "PD"], [("6", {"T1", "PD"}, {"CT"})], ["6"]),  # one set had both
    (["PD"], ["T1"], [("7", {"T1"}, {"PD"}), ("1", {"T1"}, {"PD"})], ["7"]),  # the oldest answers
])  # fmt: skip
def test_a_set_need_not_wait_only_for_modalities_that_ran_without_it(present, missing, lone, expected) -> None:
    assert ran_without(present, missing, lone) == expected


def _set(study: str, t1: str | None, pd: str | None) -> tuple[Decision, FusionSet]:
    entries = {name: None if key is None else SeriesEntry(key, study, "dicom", modality="MR")
               for name, key in (("T1", t1), ("PD", pd))}  # fmt: skip
    fusion = FusionSet(tuple(entries.items()))
    return Decision(fusion.primary[1], "run", ""), fusion


def _judge(state: PacsState, wait_s: float, sets: list[tuple[Decision, FusionSet]], studies=(),
           patient: str | None = None) -> tuple[set, int]:  # fmt: skip
    ctx = SimpleNamespace(options=SimpleNamespace(pair_wait_s=wait_s), fingerprint=FINGERPRINT,
                          sets={d.entry.key: fusion for d, fusion in sets})  # fmt: skip
    summary = SimpleNamespace(waiting=0)
    held = waiting_sets([d for d, _ in sets], state, ctx, summary, studies, patient)
    return held, summary.waiting


def test_a_pd_come_after_its_patients_t1_ran_alone_runs_at_once(tmp_path: Path) -> None:
    """A T1 waits; its wait over, it runs without PD (a lone set); the patient's PD of another study, come later, runs
    at once; another patient's PD (whose studies had no lone T1) waits, and a set that lacks nothing never does."""
    state = PacsState(tmp_path / "state.sqlite")
    t1 = _set("1.1", "10", None)
    assert _judge(state, 3600.0, [t1]) == ({"10"}, 1)
    assert state.status("10", FINGERPRINT) == "waiting" and not state.lone_sets(["1.1"], FINGERPRINT)
    assert _judge(state, 1e-6, [t1]) == (set(), 0)  # its wait is over: it runs without PD
    assert state.lone_sets(["1.1"], FINGERPRINT) == [("10", frozenset({"T1"}), frozenset({"PD"}))]
    late = _set("1.2", None, "20")
    assert _judge(state, 3600.0, [late], studies=["1.2", "1.1"]) == (set(), 0)
    assert state.status("20", FINGERPRINT) is None  # never recorded waiting
    assert state.lone_sets(["1.1", "1.2"], FINGERPRINT) == []  # answered: the patient's next visit waits again
    assert _judge(state, 3600.0, [_set("1.3", "21", None)], studies=["1.3", "1.2", "1.1"]) == ({"21"}, 1)
    other = _set("2.1", None, "30")
    assert _judge(state, 3600.0, [other], studies=["2.1"]) == ({"30"}, 1)
    assert _judge(state, 3600.0, [_set("3.1", "40", "41")]) == (set(), 0)
    assert not state.lone_sets(["3.1"], FINGERPRINT)
    state.close()


def test_without_a_wait_a_set_that_lacks_a_modality_runs_and_is_remembered_as_lone(tmp_path: Path) -> None:
    state = PacsState(tmp_path / "state.sqlite")
    before = time.time()
    assert _judge(state, 0.0, [_set("1.1", "10", None)]) == (set(), 0)
    assert state.status("10", FINGERPRINT) is None
    (row,) = sqlite3.connect(tmp_path / "state.sqlite").execute("SELECT * FROM lone_sets").fetchall()
    assert row[:5] == ("10", FINGERPRINT, "1.1", '["T1"]', '["PD"]') and row[5] >= before
    state.close()


def test_a_lone_set_row_not_written_here_is_no_set_to_go_by(tmp_path: Path) -> None:
    state = PacsState(tmp_path / "state.sqlite")
    state.record_lone("10", FINGERPRINT, "1.1", ["T1"], ["PD"])
    db = sqlite3.connect(tmp_path / "state.sqlite")
    db.execute("INSERT INTO lone_sets VALUES ('11', 'f', '1.1', 'not json', '{\"a\": 1}', 0)")
    db.execute("INSERT INTO lone_sets VALUES ('12', 'f', '1.1', '7', '[]', 0)")
    db.execute("INSERT INTO lone_sets VALUES ('13', 'f', '1.1', '[\"T1\"]', '[\"PD\"]', 'yesterday')")
    db.execute("INSERT INTO lone_sets VALUES ('14', 'f', '1.1', '[\"T1\"]', '[\"PD\"]', NULL)")
    db.execute("INSERT INTO lone_sets VALUES ('15', 'f', '1.1', X'00ff', '[\"PD\"]', 1)")
    db.commit()
    assert state.lone_sets(["1.1"], FINGERPRINT) == [("10", frozenset({"T1"}), frozenset({"PD"}))]
    assert state.lone_sets(["1.1"], "another run") == [] and state.lone_sets([], FINGERPRINT) == []
    state.close()


def test_the_node_remembers_the_studies_of_its_most_recent_patients(tmp_path: Path, monkeypatch) -> None:
    """With --pair-by patient --pair-wait the node groups a patient's series with the studies it received of that
    patient before (where a lone set may have run); it keeps the most recent patients only, and nothing without a
    wait."""
    from medanomaly.deploy import listener

    monkeypatch.setattr(listener, "MAX_PATIENTS_KEPT", 2)
    state, patients = PacsState(tmp_path / "state.sqlite"), {}

    def groups(patient: str, study: str, wait_s: float = 60.0) -> list[str]:
        entry = SeriesEntry(f"{patient}-{study}", study, "dicom", modality="MR", patient_key=patient)
        ctx = SimpleNamespace(options=SimpleNamespace(pair_by="patient", pair_wait_s=wait_s), fingerprint=FINGERPRINT)
        ((_, judge, studies),) = listener._groups([entry], {}, ctx, state, patients)
        assert judge  # a new series is judged at once
        return studies

    assert groups("A", "1.1") == ["1.1"] and groups("A", "1.2") == ["1.1", "1.2"]
    assert groups("B", "2.1") == ["2.1"] and groups("A", "1.3") == ["1.1", "1.2", "1.3"]
    assert groups("C", "3.1") == ["3.1"] and list(patients) == ["A", "C"]  # B, the least recent, forgotten
    assert groups("B", "2.2") == ["2.2"]
    assert groups("D", "4.1", wait_s=0.0) == ["4.1"] and "D" not in patients
    state.close()


def test_lone_sets_of_more_studies_than_sqlite_takes_in_one_query(tmp_path: Path) -> None:
    """A patient's studies come from the PACS's answers (up to 100,000): more values than one SQLite statement takes."""
    state = PacsState(tmp_path / "state.sqlite")
    state._db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 32_766)  # SQLite's default (Debian builds take 250,000)
    state.record_lone("10", FINGERPRINT, "1.40000", ["T1"], ["PD"])
    state.record_lone("11", FINGERPRINT, "1.3", ["PD"], ["T1"])
    studies = [f"1.{i}" for i in range(40_001)]
    assert [row for row, _, _ in state.lone_sets(studies, FINGERPRINT)] == ["10", "11"]  # oldest first
    state.close()


def test_a_state_file_of_an_earlier_version_gets_the_lone_sets_table(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    with sqlite3.connect(path) as db:  # the earlier schema: the processed table alone, one series done
        db.execute("CREATE TABLE processed (series_uid TEXT NOT NULL, fingerprint TEXT NOT NULL, study_uid TEXT, "
                   "status TEXT NOT NULL, reason TEXT, stored TEXT, at REAL, PRIMARY KEY (series_uid, fingerprint))")
        db.execute("INSERT INTO processed VALUES ('10', 'f', '1.1', 'done', '', '', 0)")
    state = PacsState(path)
    assert state.done("10", FINGERPRINT) and state.lone_sets(["1.1"], FINGERPRINT) == []
    state.record_lone("11", FINGERPRINT, "1.1", ["T1"], ["PD"], patient="P")
    assert [row for row, _, _ in state.lone_sets(["1.1"], FINGERPRINT)] == ["11"]
    assert [row for row, _, _ in state.lone_sets([], FINGERPRINT, "P")] == ["11"]  # and the lone_patients table
    state.close()


def test_a_waiting_row_whose_time_is_not_a_number_is_no_wait_begun(tmp_path: Path) -> None:
    """A ``waiting`` row not written here (its time text) was a ValueError traceback when the set was judged."""
    state = PacsState(tmp_path / "state.sqlite")
    with sqlite3.connect(tmp_path / "state.sqlite") as db:
        db.execute("INSERT INTO processed VALUES ('10', 'f', '1.1', 'waiting', '', '', 'yesterday')")
    assert state.waiting_since(["10"], FINGERPRINT) is None
    state.record("11", FINGERPRINT, "1.1", "waiting")
    assert state.waiting_since(["10", "11"], FINGERPRINT) is not None
    state.close()


def test_a_lone_set_recorded_with_a_lasting_patient_key_is_found_after_a_restart(tmp_path: Path) -> None:
    """The node forgets the studies it received at a restart; a lone set recorded with the patient's lasting key
    (``--keyed-ids``) is found by that key alone: the patient's PD of a new study runs at once and answers it (both
    tables). Another patient's PD, or one judged without a key, waits."""
    state = PacsState(tmp_path / "state.sqlite")
    assert _judge(state, 0.0, [_set("1.1", "10", None)], patient="P") == (set(), 0)  # T1 ran alone
    state.close()
    state = PacsState(tmp_path / "state.sqlite")  # restarted: no studies remembered
    assert _judge(state, 3600.0, [_set("2.1", None, "30")], studies=["2.1"], patient="Q") == ({"30"}, 1)
    assert _judge(state, 3600.0, [_set("2.2", None, "31")], studies=["2.2"]) == ({"31"}, 1)
    assert _judge(state, 3600.0, [_set("1.2", None, "20")], studies=["1.2"], patient="P") == (set(), 0)
    assert state.lone_sets([], FINGERPRINT, "P") == [] and state.lone_sets(["1.1"], FINGERPRINT) == []
    assert sqlite3.connect(tmp_path / "state.sqlite").execute("SELECT * FROM lone_patients").fetchall() == []
    state.close()


def test_a_lone_patient_row_is_no_lone_set_without_its_own_row_of_this_run(tmp_path: Path) -> None:
    """A ``lone_patients`` row (not written here) whose lone set is missing or of another fingerprint names no set."""
    state = PacsState(tmp_path / "state.sqlite")
    state.record_lone("10", "another run", "1.1", ["T1"], ["PD"], patient="P")
    with sqlite3.connect(tmp_path / "state.sqlite") as db:
        db.execute("INSERT INTO lone_patients VALUES ('10', 'f', 'P')")
        db.execute("INSERT INTO lone_patients VALUES ('11', 'f', 'P')")
    assert state.lone_sets([], FINGERPRINT, "P") == []
    assert [row for row, _, _ in state.lone_sets([], "another run", "P")] == ["10"]
    state.close()


def test_a_patient_key_lasts_across_runs_only_with_a_secret_from_the_users_key(tmp_path: Path) -> None:
    """patient_key under :func:`lasting_patient_secret` of one key is the same in every run (a fresh process: the
    secret is derived, not drawn) and differs from the run's own key, from another user key's and from the PatientID;
    walk_archive gives a series that key."""
    import pydicom
    from pydicom.data import get_testdata_file

    from medanomaly.deploy.archive import lasting_patient_secret, patient_key, walk_archive

    header = {"PatientID": "12345", "IssuerOfPatientID": "HOSP"}
    secret = lasting_patient_secret(b"k" * 32)
    assert secret == lasting_patient_secret(b"k" * 32) != lasting_patient_secret(b"j" * 32)
    lasting = patient_key(header, secret)
    assert lasting == patient_key(dict(header), lasting_patient_secret(b"k" * 32))
    assert lasting not in (patient_key(header), patient_key(header, lasting_patient_secret(b"j" * 32)))
    assert "12345" not in lasting and patient_key({"PatientID": " "}, secret) is None
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientID, ds.IssuerOfPatientID = "12345", "HOSP"
    ds.save_as(tmp_path / "ct.dcm")
    (entry,) = walk_archive(tmp_path, secret).series
    assert entry.patient_key == lasting and walk_archive(tmp_path).series[0].patient_key != lasting
