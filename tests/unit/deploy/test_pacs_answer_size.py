"""What a PACS answers is read only up to a limit set before the request: a huge JSON page, a gzip bomb, or a
retrieval larger than the series' metadata announced is one line, never a memory fill. A local HTTP server (real
sockets, the real dicomweb-client), no PACS."""

from __future__ import annotations

import gzip
import http.server
import io
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from medanomaly.deploy.bounded_http import AnswerTooLarge, BoundedSession, answers_at_most
from medanomaly.errors import InputError

STUDY, SERIES = "1.2.826.0.1.3680043.8.498.10", "1.2.826.0.1.3680043.8.498.11"
Route = Callable[[str], tuple[bytes, dict[str, str]]]  # the query string -> (body, headers)


@pytest.fixture
def server() -> Iterator[tuple[str, dict[str, Route]]]:
    """(base URL, routes): each GET path answers what its route returns (body, headers); no Content-Length unless a
    route sets one, so the body ends when the connection closes (HTTP/1.0), as a streaming PACS would send it."""
    routes: dict[str, Route] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path, _, query = self.path.partition("?")
            route = routes.get(path)
            if route is None:
                self.send_error(404)
                return
            body, headers = route(query)
            self.send_response(200)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client stopped reading: what the limit does
                pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/dicom-web", routes
    httpd.shutdown()
    httpd.server_close()


def _json(items: list) -> Route:
    """A QIDO-RS / metadata answer: ``items`` on the first page, none after it (the offset honoured)."""
    from urllib.parse import parse_qs

    def route(query: str) -> tuple[bytes, dict[str, str]]:
        first_page = int(parse_qs(query).get("offset", ["0"])[0]) == 0
        return json.dumps(items if first_page else []).encode(), {"Content-Type": "application/dicom+json"}

    return route


def test_a_body_past_the_limit_is_refused_while_it_is_read(server):
    url, routes = server
    routes["/big"] = lambda query: (b"[" + b" " * (3 * 2**20) + b"]", {"Content-Type": "application/json"})
    routes["/small"] = lambda query: (b"[1, 2]", {"Content-Type": "application/json"})
    session = BoundedSession(limit=2**20)
    with pytest.raises(AnswerTooLarge, match=r"more than the 1\.0 MiB allowed"):
        session.get(url.replace("/dicom-web", "/big"))
    assert session.get(url.replace("/dicom-web", "/small")).json() == [1, 2]


def test_an_announced_length_past_the_limit_is_refused_before_reading(server):
    url, routes = server
    routes["/big"] = lambda query: (b"x" * 4096, {"Content-Length": str(2**40)})
    with pytest.raises(AnswerTooLarge, match="announced an answer of 1,048,576.0 MiB"):
        BoundedSession(limit=2**20).get(url.replace("/dicom-web", "/big"))


def test_a_gzip_bomb_is_counted_after_decompression(server):
    url, routes = server
    bomb = gzip.compress(b"\0" * (16 * 2**20))
    assert len(bomb) < 2**20
    routes["/bomb"] = lambda query: (bomb, {"Content-Encoding": "gzip", "Content-Length": str(len(bomb))})
    with pytest.raises(AnswerTooLarge, match="sent more than"):
        BoundedSession(limit=2**20).get(url.replace("/dicom-web", "/bomb"))


def test_a_huge_query_answer_is_one_line_naming_the_pacs(server, monkeypatch):
    from medanomaly.deploy import bounded_http, pacs

    url, routes = server
    monkeypatch.setattr(bounded_http, "MAX_JSON_ANSWER_BYTES", 2**20)
    monkeypatch.setattr(BoundedSession.__init__, "__defaults__", (2**20,))
    routes["/dicom-web/studies"] = _json([{"0020000D": {"vr": "UI", "Value": [STUDY]}, "00081030": {
        "vr": "LO", "Value": ["x" * (2 * 2**20)]}}])  # fmt: skip
    with pytest.raises(InputError) as error:
        pacs.connect(url, timeout_s=10)
    message = str(error.value)
    assert message.startswith(f"{url}: the PACS sent more than the 1.0 MiB allowed") and "\n" not in message


def _ct_series(n_slices: int = 8, extra_bytes: int = 0) -> list:
    """pydicom's CT_small.dcm as a series of ``n_slices`` instances; the first carries ``extra_bytes`` of private
    data (an instance much larger than its rows x columns announce)."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    series = []
    for k in range(n_slices):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = STUDY, SERIES, generate_uid()
        ds.InstanceNumber, ds.ImagePositionPatient = k + 1, [0.0, 0.0, 5.0 * k]
        if extra_bytes and k == 0:
            ds.add_new(0x00091010, "OB", b"\1" * extra_bytes)
        series.append(ds)
    return series


def _multipart(datasets) -> Route:
    def route(query: str) -> tuple[bytes, dict[str, str]]:
        parts = []
        for ds in datasets:
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            parts.append(b"--B\r\nContent-Type: application/dicom\r\n\r\n" + buffer.getvalue() + b"\r\n")
        return b"".join(parts) + b"--B--\r\n", {"Content-Type": 'multipart/related; type="application/dicom"; boundary=B'}

    return route


def _headers_only(ds) -> dict:
    """WADO-RS metadata of an instance: its DICOM JSON without pixel data or the private blob."""
    return {tag: value for tag, value in ds.to_json_dict().items() if tag != "7FE00010" and not tag.startswith("0009")}


def _pacs_routes(routes: dict[str, Route], series: list) -> None:
    base = f"/dicom-web/studies/{STUDY}/series/{SERIES}"
    routes["/dicom-web/studies"] = _json([{"0020000D": {"vr": "UI", "Value": [STUDY]}}])
    routes[f"/dicom-web/studies/{STUDY}/series"] = _json([{"0020000E": {"vr": "UI", "Value": [SERIES]},
                                                           "00080060": {"vr": "CS", "Value": ["CT"]}}])  # fmt: skip
    routes[f"{base}/metadata"] = _json([_headers_only(ds) for ds in series])
    routes[base] = _multipart(series)


def _poll(url: str, tmp_path: Path, fake_module):
    from medanomaly.deploy.batch import BatchOptions, make_context
    from medanomaly.deploy.pacs import PacsState, connect, poll_once

    ctx = make_context(fake_module.FakeDetector(), tmp_path / "work", BatchOptions(dicom=False))
    state = PacsState(tmp_path / "state.sqlite")
    try:
        return poll_once(fake_module.FakeDetector(), connect(url, timeout_s=10), url, state, ctx), state.rows()
    finally:
        state.close()


def test_a_retrieval_larger_than_the_metadata_announced_is_refused(server, tmp_path, fake_module):
    from medanomaly.deploy import pacs

    url, routes = server
    _pacs_routes(routes, _ct_series(extra_bytes=pacs.ANSWER_OVERHEAD_BYTES + 3 * 2**20))
    summary, rows = _poll(url, tmp_path, fake_module)
    assert len(summary.errors) == 1 and "the PACS sent more than the 18.5 MiB allowed" in summary.errors[0]
    assert rows == [] and summary.processed == 0  # not recorded: the next poll tries again
    assert not (tmp_path / "work" / "incoming").exists() or not any((tmp_path / "work" / "incoming").iterdir())


def test_a_retrieval_within_its_announced_size_is_processed(server, tmp_path, fake_module):
    url, routes = server
    _pacs_routes(routes, _ct_series(extra_bytes=2**20))  # large private data, within the header room
    summary, rows = _poll(url, tmp_path, fake_module)
    assert summary.processed == 1 and not any("allowed" in e for e in summary.errors), rows
    assert rows[0][0] == SERIES


def test_sigterm_ends_a_watch_in_one_line_and_the_next_watch_resumes(server, tmp_path, fake_module):
    """``pacs --watch`` runs in a container: its stop (SIGTERM) ended the process at once, without a word. It now
    ends with one line saying what is kept (exit 143 from the CLI), the state file closed for the next run. (This
    fake PACS takes no STOW, so nothing is recorded as stored here: test_pacs.py has the real round trip.)"""
    import os
    import signal

    from medanomaly.deploy.batch import BatchOptions
    from medanomaly.deploy.pacs import run_pacs
    from medanomaly.errors import Terminated

    url, routes = server
    _pacs_routes(routes, _ct_series())
    polls: list[int] = []

    def stop_after_first(summary) -> None:
        polls.append(summary.processed)
        os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Terminated, match="series finished so far are kept; run the same command again to resume"):
        run_pacs(fake_module.FakeDetector(), url, tmp_path / "work", options=BatchOptions(dicom=False), watch=True,
                 interval_s=60.0, on_poll=stop_after_first)  # fmt: skip
    assert len(polls) == 1  # the sleep before the second poll was cut short
    again = run_pacs(fake_module.FakeDetector(), url, tmp_path / "work", options=BatchOptions(dicom=False))
    assert again.polls == 1  # the state file was closed: the next run opens it


def test_the_limit_is_per_request_and_restored(server):
    from dicomweb_client.api import DICOMwebClient

    url, routes = server
    session = BoundedSession()
    client = DICOMwebClient(url=url, session=session)
    with answers_at_most(client, 123):
        assert session.limit == 123
    assert session.limit == BoundedSession().limit
    with answers_at_most(object(), 5):  # a fake client: left as it is
        pass


def test_a_retrieved_part_that_is_not_dicom_is_one_line(server, tmp_path, fake_module):
    url, routes = server
    _pacs_routes(routes, _ct_series())
    junk = b"--B\r\nContent-Type: application/dicom\r\n\r\n<html>session expired</html>\r\n--B--\r\n"
    routes[f"/dicom-web/studies/{STUDY}/series/{SERIES}"] = lambda query: (
        junk, {"Content-Type": 'multipart/related; type="application/dicom"; boundary=B'})  # fmt: skip
    summary, rows = _poll(url, tmp_path, fake_module)
    assert summary.processed == 0 and rows == [] and len(summary.errors) == 1
    assert "\n" not in summary.errors[0] and "not DICOM" in summary.errors[0], summary.errors
