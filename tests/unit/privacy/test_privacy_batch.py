"""Issue 18, item 2 for deid: a batch loses nothing (duplicates, resume record, lock, audits,
temporary files, odd file names, killed workers, full disk, unwritable OUT or lookup)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from medanomaly.data.sources import real_data
from medanomaly.errors import InputError
from medanomaly.privacy import batch as batch_mod
from medanomaly.privacy import deid as deid_mod
from medanomaly.privacy.deid import DeidConfig, deidentify_folder
from medanomaly.privacy.profile import ProfileOptions
from medanomaly.privacy.pseudonym import KEY_ENV, file_id

CFG = DeidConfig(burned_in="never")


@pytest.fixture()
def folder(tmp_path):
    """Four CT/MR files of distinct SOP Instance UIDs."""
    src = tmp_path / "in"
    src.mkdir()
    for i, name in enumerate(("CT_small.dcm", "MR_small.dcm", "CT_small.dcm", "MR_small.dcm")):
        ds = pydicom.dcmread(real_data(f"pydicom/{name}"))
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.2.1125.77.{i}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(src / f"f{i}.dcm", enforce_file_format=True)
    return src


@pytest.fixture()
def sleeper():
    """A live process that is not us (its PID stands for another run)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _outputs(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*.dcm") if ".medanomaly" not in p.parts)


def _audit(summary) -> dict:
    return json.loads(summary.audit_path.read_text())


def test_same_uid_inputs_first_written_second_refused_by_id(folder, tmp_path, key):
    ds = pydicom.dcmread(folder / "f0.dcm")
    ds.PixelData = bytes(len(ds.PixelData))  # another image under the same UIDs
    ds.save_as(folder / "g_same_uid.dcm", enforce_file_format=True)
    summary = deidentify_folder(folder, tmp_path / "out", key, CFG)
    assert (summary.processed, summary.refused) == (4, 1) and len(_outputs(tmp_path / "out")) == 4
    (entry,) = _audit(summary)["refused"]
    assert entry["file_id"] == file_id(key, "g_same_uid.dcm")
    assert entry["same_output_as"] == file_id(key, "f0.dcm")
    kept = [pydicom.dcmread(p) for p in _outputs(tmp_path / "out")]
    assert pydicom.dcmread(folder / "f0.dcm").PixelData in [d.PixelData for d in kept]  # the first one


def test_rerun_with_other_options_or_key_refuses_unless_redo(folder, tmp_path, key):
    out = tmp_path / "out"
    deidentify_folder(folder, out, key, CFG)
    before = _outputs(out)
    record = json.loads((out / ".medanomaly" / "run.json").read_text())
    assert set(record) == {"settings", "profile", "key_id"} and key.decode() not in json.dumps(record)
    with pytest.raises(InputError, match="other options; rerun with --redo"):
        deidentify_folder(folder, out, key, DeidConfig(options=ProfileOptions(clean_descriptors=True), burned_in="never"))
    with pytest.raises(InputError, match="other key"):
        deidentify_folder(folder, out, b"another-project-key-0123", CFG)
    assert _outputs(out) == before  # refusing changed nothing
    run_json = out / ".medanomaly" / "run.json"
    for broken in ("[1, 2]", "not json"):  # a list was an AttributeError traceback
        run_json.write_text(broken)
        with pytest.raises(InputError, match=r"holds outputs whose resume record \(\.medanomaly/run\.json\) is "):
            deidentify_folder(folder, out, key, CFG)
    run_json.write_text(json.dumps(record))
    again = deidentify_folder(folder, out, key, CFG)  # same settings: resumes
    assert (again.resumed, again.processed) == (4, 0)
    redone = deidentify_folder(folder, out, b"another-project-key-0123", CFG, redo=True)
    assert redone.processed == 4 and len(_outputs(out)) == 4  # replaced, not doubled
    assert set(_outputs(out)).isdisjoint(before)


def test_one_run_per_output_folder_and_stale_lock_taken_over(folder, tmp_path, key, sleeper):
    out = tmp_path / "out"
    (out / ".medanomaly").mkdir(parents=True)
    lock = out / ".medanomaly" / "lock"
    import socket

    lock.write_text(f"{sleeper} {socket.gethostname()}\n")
    with pytest.raises(InputError, match=f"another deid run \\(PID {sleeper}\\)"):
        deidentify_folder(folder, out, key, CFG)
    assert lock.read_text().startswith(str(sleeper))  # the other run's lock is left alone
    lock.write_text(f"999999999 {socket.gethostname()}\n")  # a run that is gone
    assert deidentify_folder(folder, out, key, CFG).processed == 4
    assert not lock.exists()


def test_audits_never_overwritten_and_live_temp_files_kept(folder, tmp_path, key, sleeper):
    out = tmp_path / "out"
    first = deidentify_folder(folder, out, key, CFG)
    series_dir = _outputs(out)[0].parent
    live = series_dir / f".x.dcm.0123456789abcdef.{sleeper}.tmp"  # another live process's temp file
    dead = series_dir / ".y.dcm.0123456789abcdef.999999999.tmp"
    live.write_bytes(b"in progress")
    dead.write_bytes(b"left by a crash")
    second = deidentify_folder(folder, out, key, CFG)
    third = deidentify_folder(folder, out, key, CFG)
    assert len({first.audit_path, second.audit_path, third.audit_path}) == 3
    assert all(p.is_file() for p in (first.audit_path, second.audit_path, third.audit_path))
    assert live.exists() and not dead.exists()


def test_non_utf8_file_name_is_processed(folder, tmp_path, key):
    odd = os.fsdecode(b"caf\xe9_\xff.dcm")  # not UTF-8: Python holds it with surrogates
    shutil.copy(real_data("pydicom/CT_small.dcm"), folder / odd)
    summary = deidentify_folder(folder, tmp_path / "out", key, CFG)
    assert (summary.processed, summary.refused) == (5, 0)
    assert len(file_id(key, odd)) == 16


def test_killed_worker_retried_or_refused_and_the_batch_goes_on(folder, tmp_path, key, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    import _deid_faults

    shutil.copy(real_data("pydicom/CT_small.dcm"), folder / "kill_me.dcm")
    ds = pydicom.dcmread(real_data("pydicom/MR_small.dcm"))
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.2.1125.77.99"
    ds.save_as(folder / "kill_once.dcm", enforce_file_format=True)
    monkeypatch.setattr(deid_mod, "_work", _deid_faults.work_or_die)
    summary = deidentify_folder(folder, tmp_path / "out", key, CFG, workers=2)
    assert summary.processed == 5  # the 4 files and kill_once (retried alone)
    assert summary.refused_by_reason == {"the worker process died on this file, also when retried alone (killed or out of memory)": 1}
    audit = _audit(summary)
    assert audit["status"] == "finished" and audit["refused"][0]["file_id"] == file_id(key, "kill_me.dcm")
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_full_disk_keeps_valid_files_refuses_the_rest_and_writes_the_audit(folder, tmp_path, key, monkeypatch):
    real_stage, calls = deid_mod.stage, {"n": 0}

    def fills_up(ds, dest, fid):
        calls["n"] += 1
        if calls["n"] >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_stage(ds, dest, fid)

    monkeypatch.setattr(deid_mod, "stage", fills_up)
    summary = deidentify_folder(folder, tmp_path / "out", key, CFG)
    assert summary.processed == 2 and summary.stopped == "the output folder is full or not writable"
    assert summary.refused_by_reason == {
        "output could not be written": 1, "not attempted: the run stopped early (see the audit status)": 1,
    }  # fmt: skip
    for path in _outputs(tmp_path / "out"):
        pydicom.dcmread(path)  # the files written are whole
    assert _audit(summary)["status"] == "stopped: the output folder is full or not writable"


def test_audit_written_in_its_reserved_room_when_the_disk_is_full(tmp_path, monkeypatch):
    from medanomaly.privacy.audit import Audit

    path = batch_mod.reserve_audit(tmp_path)
    audit = Audit(options={})
    audit.refuse("0123abcd", "no pixel data")

    def no_space(*_args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(batch_mod.os, "replace", no_space)
    batch_mod.write_audit(path, audit.as_dict(), audit.compact())
    assert json.loads(path.read_text())["files"]["refused"] == 1


def test_unwritable_output_folder_or_lookup_is_one_line(folder, tmp_path, key, monkeypatch, capsys):
    from medanomaly.cli.app import main

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(InputError, match="cannot write the output folder"):
        deidentify_folder(folder, blocker / "out", key, CFG)
    with pytest.raises(InputError, match="cannot write the lookup file here"):
        deidentify_folder(folder, tmp_path / "out", key, DeidConfig(burned_in="never", lookup=blocker / "lookup.bin"))
    monkeypatch.setenv(KEY_ENV, "cli-secret-value-0123456789")
    for argv in (
        ["deid", str(folder), str(blocker / "out")],
        ["deid", str(folder), str(tmp_path / "o2"), "--lookup", str(blocker / "lookup.bin")],
    ):
        monkeypatch.setattr(sys, "argv", ["medanomaly", *argv])
        with pytest.raises(SystemExit) as exit_info:
            main()
        _, err = capsys.readouterr()
        assert exit_info.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ")


def test_cli_full_disk_prints_one_line_after_the_summary(folder, tmp_path, monkeypatch, capsys):
    from medanomaly.cli.app import main

    def no_space(ds, dest, fid):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(deid_mod, "stage", no_space)
    monkeypatch.setenv(KEY_ENV, "cli-secret-value-0123456789")
    monkeypatch.setattr(sys, "argv", ["medanomaly", "deid", str(folder), str(tmp_path / "out"), "--burned-in", "never"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "full or not writable: stopped after 0 written, 4 refused; audit:" in err


def test_cli_redo_replaces_outputs_made_with_other_options(folder, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from medanomaly.cli.app import app

    monkeypatch.setenv(KEY_ENV, "cli-secret-value-0123456789")
    out = tmp_path / "out"
    base = ["deid", str(folder), str(out), "--burned-in", "never"]
    assert CliRunner().invoke(app, base).exit_code == 0
    refused = CliRunner().invoke(app, [*base, "--retain-dates"])
    assert isinstance(refused.exception, InputError) and "--redo" in str(refused.exception)
    redone = CliRunner().invoke(app, [*base, "--retain-dates", "--redo"])
    assert redone.exit_code == 0 and "de-identified 4, resumed 0, refused 0" in redone.output
    assert all(pydicom.dcmread(p).LongitudinalTemporalInformationModified == "MODIFIED" for p in _outputs(out))


def test_worker_pool_keeps_job_order_in_chunks_and_names_the_killer(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    import _deid_faults

    jobs = [(i,) for i in range(16)]  # chunks of 2 with 2 workers
    results = list(batch_mod.run_jobs(jobs, _deid_faults.square_or_die, workers=2))
    assert [job for job, _ in results] == jobs
    assert [r for _, r in results] == [i * i if i != 13 else batch_mod.WORKER_DIED for i in range(16)]
    stopped = list(batch_mod.run_jobs(jobs[:4], _deid_faults.square_or_die, workers=2, stop=lambda: True))
    assert [r for _, r in stopped] == [batch_mod.NOT_STARTED] * 4


def test_a_pool_that_breaks_between_two_submissions_loses_no_job(monkeypatch):
    """A worker may die while the next chunk is being submitted: ``submit`` then raises BrokenProcessPool (it did in a
    CI run, ending the batch with a traceback). The chunk never started: it goes to the next pool, in job order."""
    import concurrent.futures
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    class PoolThatBreaksOnce:  # runs each chunk at once, in this process; the second submission finds it broken
        broke = False

        def __init__(self, max_workers, mp_context):
            self.submitted = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def submit(self, fn, *args):
            self.submitted += 1
            if self.submitted == 2 and not PoolThatBreaksOnce.broke:
                PoolThatBreaksOnce.broke = True
                raise BrokenProcessPool("A child process terminated abruptly")
            future = Future()
            future.set_result(fn(*args))
            return future

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", PoolThatBreaksOnce)
    jobs = [(i,) for i in range(16)]
    results = list(batch_mod.run_jobs(jobs, lambda x: x * x, workers=2))
    assert PoolThatBreaksOnce.broke and results == [((i,), i * i) for i in range(16)]


def test_workers_that_always_die_stop_the_run_after_three_files(folder, tmp_path, key, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    import _deid_faults

    monkeypatch.setattr(deid_mod, "_work", _deid_faults.always_die)
    summary = deidentify_folder(folder, tmp_path / "out", key, CFG, workers=2)
    assert summary.processed == 0 and summary.stopped.startswith("worker processes died on 3 files in a row")
    assert summary.refused_by_reason == {
        "the worker process died on this file, also when retried alone (killed or out of memory)": 3,
        "not attempted: the run stopped early (see the audit status)": 1,
    }
    assert _audit(summary)["status"].startswith("stopped: worker processes died")


@pytest.mark.parametrize("workers", [0, -1, 10**20, 100_000, True, 2.5])
def test_a_worker_count_out_of_range_is_one_line_before_any_work(folder, tmp_path, key, workers):
    """``--workers 10**20`` was an OverflowError traceback from the pool's semaphore and 100,000 tried to spawn
    100,000 processes; a count outside 1..MAX_WORKERS is refused before the output folder is made."""
    with pytest.raises(InputError, match=rf"--workers must be 1\.\.{batch_mod.MAX_WORKERS} processes, got"):
        deidentify_folder(folder, tmp_path / "out", key, CFG, workers=workers)
    assert not (tmp_path / "out").exists()


def test_no_more_worker_processes_than_chunks_of_work(monkeypatch):
    """Asking for 256 workers on 3 jobs starts 3 processes, not 256."""
    import concurrent.futures

    sizes: list[int] = []
    real = concurrent.futures.ProcessPoolExecutor

    def counting(max_workers, **kwargs):  # noqa: ANN001, ANN003
        sizes.append(max_workers)
        return real(max_workers=max_workers, **kwargs)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", counting)
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    import _deid_faults

    results = list(batch_mod.run_jobs([(1,), (2,), (3,)], _deid_faults.square_or_die, workers=256))
    assert [r for _job, r in results] == [1, 4, 9] and sizes == [3]
