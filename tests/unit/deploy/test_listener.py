"""The DICOM node's inbox and its rounds, without a network: instances go in as a sender's C-STOREs would bring them,
a complete series is run and its results stored; a store the PACS refused is retried when the series comes again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medanomaly.deploy.batch import BatchOptions, make_context
from medanomaly.deploy.listener import Inbox, ListenerOptions, ListenerSummary, _take_up, check_options
from medanomaly.deploy.pacs_state import PacsState
from medanomaly.errors import InputError


@pytest.fixture()
def series_bytes(tmp_path) -> list[tuple[str, str, str, bytes]]:
    """(series UID, study UID, SOP UID, file bytes) of a 6-slice CT with a bright block (a finding for the fake)."""
    import pydicom

    from medanomaly.io.dicom_writer import write_dicom_series
    from medanomaly.types import Volume

    pixels = np.full((6, 48, 48), -800, np.int16)
    pixels[2:4, 20:28, 20:28] = 40
    files = write_dicom_series(Volume(pixels, spacing=(1.0, 1.0, 2.0)).with_meta(modality="CT"), tmp_path / "ct")
    out = []
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        out.append((str(ds.SeriesInstanceUID), str(ds.StudyInstanceUID), str(ds.SOPInstanceUID), Path(f).read_bytes()))
    return out


class Pacs:
    """A store target that refuses while ``refusing`` (as a PACS that is down or full)."""

    def __init__(self) -> None:
        self.refusing, self.stored = True, []

    def store_instances(self, datasets, study_instance_uid=None):
        if self.refusing:
            raise InputError("dimse://pacs:104/PACS: the PACS refused the association")
        self.stored += [ds.SOPInstanceUID for ds in datasets]
        return {}


def _round(tmp_path, fake_module, inbox, pacs, summary, key: bytes | None = None):
    model = fake_module.FakeDetector()
    ctx = make_context(model, tmp_path / "work", BatchOptions(), key)
    state = PacsState(tmp_path / "state.sqlite")
    options = ListenerOptions(allowed=("PACS",), store_to="dimse://pacs:104/PACS", idle_s=0.5)
    try:
        return _take_up(model, inbox, state, ctx, pacs, options, summary), [r[3] for r in state.rows()]
    finally:
        state.close()


def test_a_series_whose_results_the_pacs_refused_is_run_again_when_it_comes_again(tmp_path, fake_module,
                                                                                   series_bytes) -> None:  # fmt: skip
    inbox, pacs, summary = Inbox(tmp_path / "incoming", 2**30, 0), Pacs(), ListenerSummary()
    for series, study, sop, data in series_bytes:
        assert inbox.accept(series, study, sop, data, association=1) == 0
    assert _round(tmp_path, fake_module, inbox, pacs, summary) == (0, [])  # not idle yet: nothing taken up
    inbox._series[series_bytes[0][0]].last -= 1.0  # idle now
    ran, statuses = _round(tmp_path, fake_module, inbox, pacs, summary)
    assert ran == 1 and statuses == ["error"] and "results not stored" in summary.errors[0]
    assert not (tmp_path / "incoming" / series_bytes[0][0]).exists() and pacs.stored == []

    pacs.refusing = False  # the PACS is back; the router sends the series again
    for series, study, sop, data in series_bytes:
        inbox.accept(series, study, sop, data, association=2)
    inbox._series[series_bytes[0][0]].last -= 1.0
    ran, statuses = _round(tmp_path, fake_module, inbox, pacs, summary)
    assert ran == 1 and statuses == ["done"] and len(pacs.stored) == 3  # SEG, RT Structure Set, SR
    assert inbox.received == 2 * len(series_bytes) and summary.processed == 2


def test_with_a_key_the_node_s_error_lines_name_the_series_keyed_id(tmp_path, fake_module, series_bytes) -> None:
    """``listen --keyed-ids``: an error line (printed as it happens) named the series by its UID."""
    from medanomaly.deploy.results import keyed_id

    key = b"k" * 32
    inbox, summary = Inbox(tmp_path / "incoming", 2**30, 0), ListenerSummary()
    for series, study, sop, data in series_bytes:
        inbox.accept(series, study, sop, data, association=1)
    inbox._series[series_bytes[0][0]].last -= 1.0
    _round(tmp_path, fake_module, inbox, Pacs(), summary, key)
    (error,) = summary.errors
    assert error.startswith(f"series {keyed_id(key, 'series', series_bytes[0][0], 'S-')}: results not stored")


def test_each_association_has_a_key_of_its_own_though_python_reuses_its_id() -> None:
    """With ``id()`` as the key, a later association (a new object at a freed one's address) aborting dropped a series
    an earlier one had sent whole."""
    from medanomaly.deploy.listener import association_key

    class Association:  # stands for pynetdicom's: any object that takes an attribute
        pass

    first = Association()
    key, address = association_key(first), id(first)
    assert association_key(first) == key
    del first
    later = [Association() for _ in range(50)]
    assert any(id(a) == address for a in later), "CPython hands the freed address out again"
    assert all(association_key(a) != key for a in later) and len({association_key(a) for a in later}) == 50


def test_a_series_over_its_limit_is_refused_and_its_files_removed_as_it_arrives(tmp_path, series_bytes) -> None:
    # the first two files exactly: their sizes differ now and then (a generated SOP Instance UID is 61-64 characters,
    # written twice per file: 2 in 100 series have a second file 4 bytes longer), so twice the first's size refused
    # the second C-STORE in one fresh-clone run
    two_files = len(series_bytes[0][3]) + len(series_bytes[1][3])
    inbox = Inbox(tmp_path / "incoming", series_limit_bytes=two_files, min_free_bytes=0)
    codes = [inbox.accept(*item, association=1) for item in series_bytes]
    assert codes[:2] == [0, 0] and set(codes[2:]) == {0xA700}
    assert not (tmp_path / "incoming" / series_bytes[0][0]).exists()
    ((_, _, refused),) = inbox.complete(0.0)
    assert "larger than --memory-limit" in refused


@pytest.mark.parametrize(("options", "words"), [
    (ListenerOptions(), "--allow-ae"), (ListenerOptions(allowed=("PACS",), port=0), "--port"),
    (ListenerOptions(allowed=("PACS",), idle_s=0.0), "--idle"), (ListenerOptions(allowed=("A" * 17,)), "AE title"),
])  # fmt: skip
def test_options_no_node_can_use_are_one_line(options, words) -> None:
    with pytest.raises(InputError, match=words):
        check_options(options)


def test_a_series_with_an_instance_still_being_written_is_not_complete(tmp_path, series_bytes, monkeypatch) -> None:
    """A write slower than ``--idle`` (a busy disk) let the series be taken up without it, and the file then landed
    in a folder already removed."""
    import threading

    from medanomaly.deploy import listener

    inbox = Inbox(tmp_path / "incoming", 2**30, 0)
    series, study, sop, data = series_bytes[0]
    started, release = threading.Event(), threading.Event()
    real_write = listener.atomic_write

    def slow_write(path, write, private=False):
        started.set()
        release.wait(10)
        return real_write(path, write, private)

    monkeypatch.setattr(listener, "atomic_write", slow_write)
    worker = threading.Thread(target=inbox.accept, args=(series, study, sop, data, 1))
    worker.start()
    started.wait(10)
    assert inbox.complete(0.0) == [], "not complete while its instance is being written"
    release.set()
    worker.join(10)
    ((uid, _, refused),) = inbox.complete(0.0)
    assert uid == series and refused == "" and (tmp_path / "incoming" / series / f"{sop}.dcm").is_file()


def test_after_a_stop_a_series_is_taken_up_only_if_its_sender_had_ended_normally(tmp_path, series_bytes) -> None:
    """Series left in ``incoming`` were all run at the next start: one that was still arriving when the node was
    killed would have been measured as if whole. Now only those a sender ended its association after are run."""
    whole, partial = series_bytes[:3], [("1.2.826.0.1.3680043.8.498.77", *item[1:]) for item in series_bytes[3:]]
    inbox = Inbox(tmp_path / "incoming", 2**30, 0)
    for item in whole:
        inbox.accept(*item, association=1)
    inbox.released(1)
    for item in partial:
        inbox.accept(*item, association=2)  # killed before association 2 ended
    restarted = dict((uid, refused) for uid, _, refused in Inbox(tmp_path / "incoming", 2**30, 0).complete(0.0))
    assert restarted[whole[0][0]] == "" and (tmp_path / "incoming" / whole[0][0]).is_dir()
    assert "the node stopped while the series arrived" in restarted[partial[0][0]]
    assert not (tmp_path / "incoming" / partial[0][0]).exists()


def test_a_series_that_gets_more_after_a_release_is_whole_only_at_the_next_release(tmp_path, series_bytes) -> None:
    inbox = Inbox(tmp_path / "incoming", 2**30, 0)
    inbox.accept(*series_bytes[0], association=1)
    inbox.released(1)
    inbox.accept(*series_bytes[1], association=2)  # the same series, more of it, still arriving
    ((_, _, refused),) = Inbox(tmp_path / "incoming", 2**30, 0).complete(0.0)
    assert "node stopped" in refused


def _study_series(tmp_path: Path, study: str, thickness_mm: float, name: str) -> list[tuple[str, str, str, bytes]]:
    """A CT series of ``study`` with a bright block, slices ``thickness_mm`` apart (same 12 mm of body)."""
    import pydicom

    from medanomaly.io.dicom_writer import write_dicom_series
    from medanomaly.types import Volume

    n = int(round(12 / thickness_mm))
    pixels = np.full((n, 48, 48), -800, np.int16)
    pixels[n // 3 : 2 * n // 3, 20:28, 20:28] = 40
    files = write_dicom_series(Volume(pixels, spacing=(1.0, 1.0, thickness_mm)).with_meta(modality="CT"),
                               tmp_path / name, study_uid=study)  # fmt: skip
    out = []
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        out.append((str(ds.SeriesInstanceUID), str(ds.StudyInstanceUID), str(ds.SOPInstanceUID), Path(f).read_bytes()))
    return out


def test_a_study_pushed_as_several_series_is_run_once_on_its_thin_series(tmp_path, fake_module) -> None:
    """The node judged each series on its own: a study routed with a thin and a thick reconstruction got two sets of
    SEG / RT Structure Set / SR in the PACS (the archive batch and the bridge choose one per study). The study is
    complete when all its series are idle; the thin one is run, the thick one skipped naming it; a series of the same
    study that comes after it was run is skipped too."""
    from pydicom.uid import generate_uid

    study = str(generate_uid())
    thin, thick = _study_series(tmp_path, study, 1.0, "thin"), _study_series(tmp_path, study, 2.0, "thick")
    inbox, pacs, summary = Inbox(tmp_path / "incoming", 2**30, 0), Pacs(), ListenerSummary()
    pacs.refusing = False
    for series, study_uid, sop, data in thin + thick:
        assert inbox.accept(series, study_uid, sop, data, association=1) == 0
    inbox._series[thin[0][0]].last -= 1.0  # the thin series is idle, the thick one still arriving: not complete
    assert _round(tmp_path, fake_module, inbox, pacs, summary) == (0, [])
    inbox._series[thick[0][0]].last -= 1.0
    ran, statuses = _round(tmp_path, fake_module, inbox, pacs, summary)
    state = PacsState(tmp_path / "state.sqlite")
    rows = {r[0]: (r[3], r[4]) for r in state.rows()}
    state.close()
    assert ran == 2 and sorted(statuses) == ["done", "skipped"] and len(pacs.stored) == 3  # one SEG, RTSTRUCT, SR
    assert rows[thin[0][0]][0] == "done" and rows[thick[0][0]] == ("skipped", f"not selected: study's detection "
                                                                               f"series is {thin[0][0]}")  # fmt: skip
    later = _study_series(tmp_path, study, 3.0, "later")  # the router sends another reconstruction an hour later
    for series, study_uid, sop, data in later:
        inbox.accept(series, study_uid, sop, data, association=2)
    inbox._series[later[0][0]].last -= 1.0
    ran, _ = _round(tmp_path, fake_module, inbox, pacs, summary)
    state = PacsState(tmp_path / "state.sqlite")
    rows = {r[0]: (r[3], r[4]) for r in state.rows()}
    state.close()
    assert ran == 1 and len(pacs.stored) == 3 and summary.processed == 1
    assert rows[later[0][0]] == ("skipped", f"not selected: the study's detection series {thin[0][0]} was run before "
                                            "this one came")  # fmt: skip
