"""The PACS bridge does not trust what the PACS answers: paging is bounded, a PACS that ignores the QIDO-RS offset is
one line (it looped forever), and a UID that is not a DICOM UID never reaches a request URL or a local path (a series
UID of ``../..`` named the work folder that is removed after each series). A fake DICOMweb client, no network."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from medanomaly.deploy.batch import BatchOptions, make_context
from medanomaly.deploy.pacs import MAX_QIDO_RESULTS, PacsState, poll_once
from medanomaly.errors import InputError

URL = "http://pacs.invalid/dicom-web"
STUDY = "1.2.826.0.1.3680043.8.498.1"


def _uid_item(tag: str, value: object, modality: str = "CT") -> dict:
    return {tag: {"vr": "UI", "Value": [value]}, "00080060": {"vr": "CS", "Value": [modality]}}


class FakeClient:
    """search_for_studies / search_for_series with offset paging, metadata and retrieval, recording each call."""

    def __init__(self, studies: list[dict], series: list[dict], metadata: list[dict] | None = None,
                 ignore_offset: bool = False, page: int = 2) -> None:  # fmt: skip
        self.studies, self.series, self.metadata = studies, series, metadata or []
        self.ignore_offset, self.page = ignore_offset, page
        self.calls: list[tuple] = []

    def _page(self, items: list[dict], offset: int) -> list[dict]:
        start = 0 if self.ignore_offset else offset
        return items[start : start + self.page]

    def search_for_studies(self, search_filters=None, offset=0):
        self.calls.append(("studies", offset))
        return self._page(self.studies, offset)

    def search_for_series(self, study_uid, offset=0):
        self.calls.append(("series", study_uid, offset))
        return self._page(self.series, offset)

    def retrieve_series_metadata(self, study_uid, series_uid):
        self.calls.append(("metadata", study_uid, series_uid))
        return self.metadata

    def retrieve_series(self, study_uid, series_uid):
        self.calls.append(("retrieve", study_uid, series_uid))
        raise AssertionError("nothing here should be retrieved")


def _poll(tmp_path: Path, client: FakeClient, fake_module, key: bytes | None = None):
    ctx = make_context(fake_module.FakeDetector(), tmp_path / "work", BatchOptions(), key)
    state = PacsState(tmp_path / "state.sqlite")
    try:
        return poll_once(fake_module.FakeDetector(), client, URL, state, ctx), state.rows()
    finally:
        state.close()


def test_a_pacs_that_ignores_the_offset_is_one_line_not_an_endless_loop(tmp_path, fake_module):
    studies = [_uid_item("0020000D", f"{STUDY}.{k}") for k in range(3)]
    client = FakeClient(studies, [], ignore_offset=True)
    with pytest.raises(InputError, match="same query results again for a later page"):
        _poll(tmp_path, client, fake_module)
    assert len(client.calls) == 2


def test_paging_reads_every_page_and_stops_at_an_empty_one(tmp_path, fake_module):
    studies = [_uid_item("0020000D", f"{STUDY}.{k}") for k in range(5)]
    client = FakeClient(studies, [])
    summary, _ = _poll(tmp_path, client, fake_module)
    assert summary.studies == 5 and [c[1] for c in client.calls if c[0] == "studies"] == [0, 2, 4, 5]


def test_paging_stops_at_the_limit(tmp_path, fake_module, monkeypatch):
    from medanomaly.deploy import pacs

    monkeypatch.setattr(pacs, "MAX_QIDO_RESULTS", 3)
    client = FakeClient([_uid_item("0020000D", f"{STUDY}.{k}") for k in range(9)], [])
    with pytest.raises(InputError, match="more than 3 results for one query"):
        _poll(tmp_path, client, fake_module)
    assert MAX_QIDO_RESULTS == 100_000


@pytest.mark.parametrize("answer", [{"a": 1}, [5, None], "text"])
def test_an_answer_that_is_not_dicom_json_is_one_line(tmp_path, fake_module, answer):
    client = FakeClient([], [])
    client.search_for_studies = lambda search_filters=None, offset=0: answer
    with pytest.raises(InputError, match="something other than DICOM JSON datasets"):
        _poll(tmp_path, client, fake_module)


@pytest.mark.parametrize("series_uid", ["../../victim", "/", "1.2.3/../../victim", "1.2.3?x=1", "1." + "2" * 70,
                                        ["nested"], None])  # fmt: skip
def test_a_uid_that_is_not_a_dicom_uid_reaches_no_url_and_no_path(tmp_path, fake_module, series_uid):
    victim = tmp_path / "victim"
    (victim / "keep").mkdir(parents=True)
    client = FakeClient([_uid_item("0020000D", STUDY)], [_uid_item("0020000E", series_uid)])
    summary, rows = _poll(tmp_path, client, fake_module)
    assert [c[0] for c in client.calls] == ["studies", "studies", "series", "series"]  # no metadata, no retrieval
    assert summary.errors == [f"study {STUDY}: a series without a valid SeriesInstanceUID, not retrieved"]
    assert (victim / "keep").is_dir() and rows == []


def test_a_study_uid_that_is_not_a_dicom_uid_is_not_queried(tmp_path, fake_module):
    client = FakeClient([_uid_item("0020000D", "../x"), {"0020000D": "not an attribute"}], [])
    summary, _ = _poll(tmp_path, client, fake_module)
    assert summary.studies == 0 and len(summary.errors) == 2
    assert all(c[0] == "studies" for c in client.calls)


def test_metadata_naming_another_series_is_skipped_without_retrieval(tmp_path, fake_module):
    series = "1.2.826.0.1.3680043.8.498.2"
    metadata = [{"00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
                 "0020000E": {"vr": "UI", "Value": ["../../victim"]}, "00080060": {"vr": "CS", "Value": ["CT"]},
                 "00280010": {"vr": "US", "Value": [64]}, "00280011": {"vr": "US", "Value": [64]}}]  # fmt: skip
    client = FakeClient([_uid_item("0020000D", STUDY)], [_uid_item("0020000E", series)], metadata)
    summary, rows = _poll(tmp_path, client, fake_module)
    assert "retrieve" not in [c[0] for c in client.calls] and summary.skipped == 1
    assert rows[0][0] == series and rows[0][3] == "skipped" and "another series or study" in rows[0][4]


def test_unreadable_metadata_is_a_skip_reason(tmp_path, fake_module):
    series = "1.2.826.0.1.3680043.8.498.3"
    client = FakeClient([_uid_item("0020000D", STUDY)], [_uid_item("0020000E", series)],
                        [{"00280010": {"vr": "US", "Value": "not a list"}}])  # fmt: skip
    summary, rows = _poll(tmp_path, client, fake_module)
    assert summary.skipped == 1 and rows[0][3] == "skipped" and rows[0][4].startswith(("unreadable series metadata", "DICOM"))


@pytest.mark.parametrize(("url", "words"), [
    ("http://[::1", "not a URL (Invalid IPv6 URL)"), ("http://pacs:99999/dicom-web", "not a URL (Port out of range"),
    ("http://pacs:0/dicom-web", "not a URL (port 0)"), ("HTTP://pacs/dicom-web", "starts with http:// or https://"),
    ("http://:8042/dicom-web", "names a host"), ("file:///etc/passwd", "starts with http:// or https://"),
])  # fmt: skip
def test_a_url_that_is_not_a_dicomweb_root_is_one_line_before_any_request(url: str, words: str) -> None:
    """``http://[::1`` was a ValueError traceback from ``urlsplit`` inside dicomweb-client, ``HTTP://`` its "Malformed
    URL", and a port of 99999 failed as a request after three tries; each is now refused before a client is made."""
    from medanomaly.deploy.pacs import connect

    with pytest.raises(InputError, match=re.escape(words)) as info:
        connect(url)
    assert str(info.value).startswith(url) and "\n" not in str(info.value)


def test_a_watch_outlives_a_poll_the_pacs_fails_and_a_single_run_does_not(tmp_path, fake_module, monkeypatch):
    """One restart of the PACS (a refused connection during a poll) ended a watch meant to run for days with exit 2:
    the failed poll is an error line and the next poll comes at its time. Without --watch it stays one error."""
    import requests

    from medanomaly.deploy import pacs

    class FlakyClient(FakeClient):
        fail_next = True

        def search_for_studies(self, search_filters=None, offset=0):
            if self.fail_next:
                self.fail_next = False
                raise requests.exceptions.ConnectionError("connection refused")
            return super().search_for_studies(search_filters, offset)

    client = FlakyClient([_uid_item("0020000D", STUDY)], [])
    monkeypatch.setattr(pacs, "connect", lambda *a, **k: client)
    lines = []
    summary = pacs.run_pacs(fake_module.FakeDetector(), URL, tmp_path / "work", watch=True, interval_s=0.01,
                            max_polls=2, on_poll=lambda s: lines.append(list(s.errors)))  # fmt: skip
    assert summary.polls == 2 and summary.studies == 1, summary
    assert len(summary.errors) == 1 and summary.errors[0].startswith(f"poll 1: {URL}: cannot reach the PACS")
    assert lines[0] == summary.errors  # reported when it happened, not when the watch ends
    client.fail_next = True
    with pytest.raises(InputError, match="cannot reach the PACS"):
        pacs.run_pacs(fake_module.FakeDetector(), URL, tmp_path / "work2", watch=False)


class SwappingClient(FakeClient):
    """A PACS whose retrieval answers with instances of another series than asked (a mix-up, or a hostile PACS)."""

    def __init__(self, studies, series, metadata, sent) -> None:
        super().__init__(studies, series, metadata)
        self.sent, self.stored = sent, []

    def retrieve_series(self, study_uid, series_uid):
        self.calls.append(("retrieve", study_uid, series_uid))
        return self.sent

    def store_instances(self, datasets, study_instance_uid=None):
        self.stored.append(study_instance_uid)
        return {}


def _swapping_client(tmp_path: Path, swapped: str, how_many: int) -> tuple[SwappingClient, str, str]:
    """A PACS whose retrieval answers with ``how_many`` instances of another ``swapped`` UID: (client, study, series)."""
    import numpy as np
    import pydicom

    from medanomaly.io.dicom_writer import write_dicom_series
    from medanomaly.types import Volume

    volume = Volume(np.full((4, 32, 32), -800, np.int16), spacing=(1.0, 1.0, 2.0)).with_meta(modality="CT")
    sent = [pydicom.dcmread(f) for f in write_dicom_series(volume, tmp_path / "ct")]
    study, series = str(sent[0].StudyInstanceUID), str(sent[0].SeriesInstanceUID)
    metadata = [ds.to_json_dict(1024, lambda element: "") for ds in sent]
    for ds in sent[-how_many:]:  # one instance, or all, of another series or study
        setattr(ds, swapped, "1.2.826.0.1.3680043.8.498.999")
    return SwappingClient([_uid_item("0020000D", study)], [_uid_item("0020000E", series)], metadata, sent), study, series


@pytest.mark.parametrize(("swapped", "how_many"), [("SeriesInstanceUID", 1), ("SeriesInstanceUID", 4),
                                                  ("StudyInstanceUID", 1), ("StudyInstanceUID", 4)])  # fmt: skip
def test_instances_of_another_series_or_study_than_asked_are_not_run_on_nor_stored(tmp_path, fake_module, swapped,
                                                                                   how_many):  # fmt: skip
    """The model ran on whatever the retrieval brought, and its SEG and SR were stored into the study asked for: a
    PACS that answers with another patient's series would have had that patient's findings filed under this one."""
    client, _, _ = _swapping_client(tmp_path, swapped, how_many)
    summary, rows = _poll(tmp_path, client, fake_module)
    assert summary.processed == 0 and client.stored == [] and rows == []  # not recorded: the next poll tries again
    (error,) = summary.errors
    assert "instance(s) of another series or study than asked" in error and "\n" not in error


def test_a_watch_with_since_days_asks_for_recent_studies_only_the_range_recomputed_each_poll(tmp_path, fake_module,
                                                                                             monkeypatch) -> None:  # fmt: skip
    """A watch queried every study of the PACS each poll: one holding years of studies (over 100,000) failed every
    poll. ``--since-days N`` adds a StudyDate range, recomputed each poll (a watch outlives midnight)."""
    import datetime

    from medanomaly.deploy import pacs

    class RecordingClient(FakeClient):
        def search_for_studies(self, search_filters=None, offset=0):
            self.calls.append(("filters", dict(search_filters or {})))
            return super().search_for_studies(search_filters, offset)

    days = iter([datetime.date(2026, 12, 6), datetime.date(2026, 12, 7)])

    class Clock(datetime.date):
        @classmethod
        def today(cls):
            return next(days)

    client = RecordingClient([], [])
    monkeypatch.setattr(pacs.datetime, "date", Clock)
    pacs.run_pacs(fake_module.FakeDetector(), URL, tmp_path / "work", client=client, watch=True, interval_s=0.01,
                  max_polls=2, search_filters={"ModalitiesInStudy": "CT"}, since_days=3)  # fmt: skip
    asked = [c[1] for c in client.calls if c[0] == "filters"]
    assert asked == [{"ModalitiesInStudy": "CT", "StudyDate": "20261203-"},
                     {"ModalitiesInStudy": "CT", "StudyDate": "20261204-"}]  # fmt: skip


def test_since_days_out_of_range_or_with_a_study_date_filter_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    from medanomaly.cli.app import main

    for args, words in ((["--since-days", "-1"], "--since-days must be 0..36,500"),
                        (["--since-days", "7", "--study-filter", "StudyDate=20260101-"], "give one or the other")):  # fmt: skip
        monkeypatch.setattr("sys.argv", ["medanomaly", "pacs", str(tmp_path / "no-run"), "--url", URL, *args])
        with pytest.raises(SystemExit) as exit_code:
            main()
        err = capsys.readouterr().err
        assert exit_code.value.code == 2 and words in err and len(err.strip().splitlines()) == 1, err


class GrowingStudyClient(FakeClient):
    """A PACS study whose series are a dict the test adds to (a reconstruction archived after the first poll)."""

    def __init__(self, study: str) -> None:
        super().__init__([_uid_item("0020000D", study)], [])
        self.by_series: dict[str, list] = {}
        self.stored: list[str] = []

    def add(self, datasets: list) -> None:
        self.by_series[str(datasets[0].SeriesInstanceUID)] = datasets
        self.series = [_uid_item("0020000E", uid) for uid in self.by_series]

    def retrieve_series_metadata(self, study_uid, series_uid):
        return [ds.to_json_dict(1024, lambda element: "") for ds in self.by_series[series_uid]]

    def retrieve_series(self, study_uid, series_uid):
        return self.by_series[series_uid]

    def store_instances(self, datasets, study_instance_uid=None):
        self.stored.append(study_instance_uid)
        return {}


def test_a_detection_series_archived_after_its_study_was_run_is_skipped_naming_the_one_run(tmp_path, fake_module):
    """A later poll chose among the study's new series only, so a reconstruction archived after the first poll got
    a second set of SEG / RT Structure Set / SR into the study; it is skipped, naming the series run."""
    import numpy as np
    import pydicom
    from pydicom.uid import generate_uid

    from medanomaly.io.dicom_writer import write_dicom_series
    from medanomaly.types import Volume

    study = str(generate_uid())
    client = GrowingStudyClient(study)
    stores = []
    for thickness, name in ((2.0, "first"), (1.0, "later")):
        n = int(12 / thickness)
        pixels = np.full((n, 32, 32), -800, np.int16)
        pixels[n // 3 : 2 * n // 3, 12:20, 12:20] = 40  # a finding for the fake detector
        files = write_dicom_series(Volume(pixels, spacing=(1.0, 1.0, thickness)).with_meta(modality="CT"),
                                   tmp_path / name, study_uid=study)  # fmt: skip
        client.add([pydicom.dcmread(f) for f in files])
        summary, rows = _poll(tmp_path, client, fake_module)
        stores.append(len(client.stored))
    first, later = client.by_series
    assert [(r[0], r[3]) for r in rows] == [(first, "done"), (later, "skipped")], rows
    assert rows[1][4] == f"not selected: the study's detection series {first} was run before this one came"
    assert stores[0] > 0 and stores[1] == stores[0], "the first poll's results only"


def test_with_a_key_the_bridge_s_error_lines_name_keyed_ids_never_a_uid(tmp_path, fake_module) -> None:
    """``pacs --keyed-ids`` (the bridge took a key from Python only): its error lines, printed as they happen, named
    the series and study by UID; they name the ids its records show."""
    from medanomaly.deploy.results import keyed_id

    key = b"k" * 32
    client, study, series = _swapping_client(tmp_path, "SeriesInstanceUID", 1)
    summary, _ = _poll(tmp_path, client, fake_module, key)
    (error,) = summary.errors
    assert error.startswith(f"series {keyed_id(key, 'series', series, 'S-')}: ") and series not in error
    client = FakeClient([_uid_item("0020000D", STUDY)], [_uid_item("0020000E", "../x")])
    summary, _ = _poll(tmp_path / "bad", client, fake_module, key)
    assert summary.errors == [f"study {keyed_id(key, 'study', STUDY, 'T-')}: a series without a valid "
                              "SeriesInstanceUID, not retrieved"]  # fmt: skip


def test_pair_by_patient_asks_for_a_patient_s_studies_only_when_a_study_has_new_series(tmp_path, fake_module):
    """Each poll of a watch lists the studies again: with --pair-by patient, a patient's other studies (one more study
    query, then one series query per study, hundreds for a patient followed for years) are asked for only when the
    study has a series not handled yet; a study with nothing new costs what it costs by study."""
    from dataclasses import replace

    class PatientClient(FakeClient):
        def search_for_studies(self, search_filters=None, offset=0, fields=None):
            self.calls.append(("studies", offset, dict(search_filters or {})))
            return self._page(self.studies, offset) if not search_filters else []

    study = {**_uid_item("0020000D", STUDY), "00100020": {"vr": "LO", "Value": ["PAT-A"]}}
    series = [_uid_item("0020000E", f"{STUDY}.5", "SR")]  # handled (skipped as not an image) by the first poll
    client = PatientClient([study], series)
    ctx = make_context(fake_module.FakeDetector(), tmp_path / "work", BatchOptions())
    ctx = replace(ctx, options=replace(ctx.options, pair_by="patient"))
    state = PacsState(tmp_path / "state.sqlite")
    try:
        first = poll_once(fake_module.FakeDetector(), client, URL, state, ctx)
        assert first.skipped == 1 and not [c for c in client.calls if c[0] == "studies" and c[2]]  # SR: no news
        client.series.append(_uid_item("0020000E", f"{STUDY}.6"))  # a new CT series: news
        client.metadata = [{"00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
                            "0020000E": {"vr": "UI", "Value": [f"{STUDY}.6"]}, "00080060": {"vr": "CS", "Value": ["CT"]},
                            "00280010": {"vr": "US", "Value": [64]}, "00280011": {"vr": "US", "Value": [64]}}]  # fmt: skip

        def refuse(*args):  # not retrieved here: the query is what is checked
            raise InputError("not retrieved in this test")

        client.retrieve_series = refuse
        poll_once(fake_module.FakeDetector(), client, URL, state, ctx)
    finally:
        state.close()
    assert [c[2] for c in client.calls if c[0] == "studies" and c[2]] == [{"PatientID": "PAT-A"}]
