"""The service's job store and the PACS bridge's state file: a file that is not SQLite, or another program's SQLite
file, was a sqlite3 traceback at start (``serve``) or at the first query; it is one line naming the file now."""

from __future__ import annotations

import sqlite3

import pytest

from medanomaly.deploy.pacs_state import PacsState
from medanomaly.deploy.service.store import JobStore
from medanomaly.errors import InputError


@pytest.mark.parametrize("opener", [JobStore, PacsState])
def test_a_file_that_is_not_sqlite_is_one_line(tmp_path, opener):
    path = tmp_path / "state.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(InputError, match=r"state\.sqlite: not a readable .*\(corrupt, or not a SQLite file\)"):
        opener(path)


@pytest.mark.parametrize(("opener", "table"), [(JobStore, "jobs"), (PacsState, "processed"), (PacsState, "lone_sets")])
def test_another_programs_sqlite_file_is_one_line(tmp_path, opener, table):
    path = tmp_path / "state.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(f"CREATE TABLE {table} (x INTEGER)")
    with pytest.raises(InputError, match=r"state\.sqlite: not a .*(no such column|has no column)"):
        opener(path)


def test_our_own_files_open_again(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    job = store.create("m", "dicom", 1)
    assert JobStore(tmp_path / "jobs.sqlite").get(job)["model"] == "m"
    PacsState(tmp_path / "pacs.sqlite").close()
    PacsState(tmp_path / "pacs.sqlite").close()


@pytest.mark.parametrize("opener", [JobStore, PacsState])
def test_another_programs_database_is_refused_and_left_as_it_is(tmp_path, opener):
    """A state file given as another program's SQLite database (``pacs --state``) got our tables added to it."""
    path = tmp_path / "theirs.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE scans (id INTEGER PRIMARY KEY AUTOINCREMENT, patient_id TEXT)")
        db.execute("INSERT INTO scans (patient_id) VALUES ('x')")
    db.close()
    before = path.read_bytes()
    with pytest.raises(InputError, match=r"theirs\.sqlite: not a .*another program \(none of its 1 tables is ours\)"):
        opener(path)
    assert path.read_bytes() == before
