"""The service's connections over a real socket (uvicorn, as ``medanomaly serve`` runs it): a client that sends
nothing, half a request or half an upload is closed after its deadline, and open connections are capped. Before,
300 silent connections held a server under ``ulimit -n 256`` out of every request ("Too many open files")."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from medanomaly.deploy.service.app import ServiceConfig, create_app
from medanomaly.deploy.service.connections import BACKLOG, ConnectionLimits, guarded_protocol
from medanomaly.deploy.service.tokens import new_token
from tests.integration.test_service_api import make_classification_run

pytestmark = pytest.mark.xdist_group("service")


def _serving(app: Any, limits: ConnectionLimits, **options: Any) -> Iterator[int]:
    """``app`` served by uvicorn with the guarded protocol in a thread: yields its port."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", http=guarded_protocol(limits),
                            backlog=BACKLOG, **options)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield server.servers[0].sockets[0].getsockname()[1]
    server.should_exit = True
    thread.join(30)


def _server(tmp: Path, run: Path, limits: ConnectionLimits) -> Iterator[tuple[int, str]]:
    token = new_token(tmp / "tokens.json")
    app = create_app(ServiceConfig(models={"cls": run}, data_dir=tmp / "data", tokens=tmp / "tokens.json"))
    for port in _serving(app, limits):
        yield port, token


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory) -> Path:
    return make_classification_run(tmp_path_factory.mktemp("conn") / "cls")


@pytest.fixture
def quick(tmp_path, cls_run):
    """A server that gives a client 1 s for its headers and 1 s between parts of a body."""
    yield from _server(tmp_path, cls_run, ConnectionLimits(header_s=1.0, body_idle_s=1.0, max_connections=50))


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` within ``seconds`` (what it sends first is read and dropped)."""
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except (TimeoutError, socket.timeout):
        return False
    except ConnectionResetError:
        pass
    return True


def _get(port: int, path: str = "/docs") -> int:
    import httpx

    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10).status_code


def _upload_head(token: str, length: int) -> bytes:
    return (f"POST /v1/studies?model=cls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: multipart/form-data; boundary=XX\r\nContent-Length: {length}\r\n\r\n"
            '--XX\r\nContent-Disposition: form-data; name="files"; filename="a.nii"\r\n\r\n').encode()  # fmt: skip


def test_silent_and_half_sent_requests_are_closed_and_the_service_goes_on(quick):
    port, _ = quick
    silent = socket.create_connection(("127.0.0.1", port))
    half = socket.create_connection(("127.0.0.1", port))
    half.sendall(b"GET /docs HTTP/1.1\r\nHost: x\r\n")  # the blank line that ends the headers never comes
    assert _closed_within(silent, 20) and _closed_within(half, 20)
    assert _get(port) == 200


def test_a_stalled_upload_is_dropped_and_leaves_no_job(quick, tmp_path, caplog):
    port, token = quick
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(_upload_head(token, 100_000) + b"\0" * 1000)
    assert _closed_within(sock, 20)
    assert _get(port, "/v1/jobs") in (401, 200)
    studies = tmp_path / "data"
    assert not [p for p in studies.rglob("*") if p.is_file() and not p.name.startswith(("jobs.sqlite", "audit.jsonl"))]
    audit = [json.loads(line) for line in (studies / "audit.jsonl").read_text().splitlines()]
    assert audit[0]["method"] == "POST" and audit[0]["path"] == "/v1/studies", audit  # the attempt is on record
    assert "Traceback" not in caplog.text and "ClientDisconnect" not in caplog.text


def test_an_upload_that_keeps_arriving_is_not_cut(quick):
    """Parts 0.4 s apart with a 1 s idle deadline: slower in all than the deadline, never idle for it."""
    import httpx

    port, token = quick
    body = [b"\0" * 500 for _ in range(6)]
    length = len(_upload_head(token, 0).split(b"\r\n\r\n", 1)[1]) + sum(map(len, body)) + len(b"\r\n--XX--\r\n")
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(_upload_head(token, length))
    for part in body:
        time.sleep(0.4)
        sock.sendall(part)
    sock.sendall(b"\r\n--XX--\r\n")
    sock.settimeout(20)
    answer = sock.recv(4096).decode("latin-1")
    assert answer.startswith("HTTP/1.1 415"), answer  # read whole, then refused for its content (zeros), not cut
    assert httpx.get(f"http://127.0.0.1:{port}/docs", timeout=10).status_code == 200


def test_connections_over_the_cap_are_closed_at_once(tmp_path, cls_run):
    for port, _ in _server(tmp_path, cls_run, ConnectionLimits(header_s=60.0, body_idle_s=60.0, max_connections=2)):
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        time.sleep(0.3)
        extra = socket.create_connection(("127.0.0.1", port))
        assert _closed_within(extra, 10)  # long before the 60 s header deadline
        for sock in held:
            sock.close()
        time.sleep(0.3)
        assert _get(port) == 200


def test_a_client_that_stops_reading_a_response_is_closed(tmp_path, caplog):
    """A slow reader (its receive buffer full, writing paused) held its connection and the response's task for ever;
    after ``body_idle_s`` of nothing read it is closed and the app's sending ends."""
    ended = threading.Event()

    async def big(scope, receive, send):  # 64 MiB in 64 KiB parts
        if scope["type"] != "http":
            return
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"67108864")]})
            for _ in range(1024):
                await send({"type": "http.response.body", "body": b"\0" * 65536, "more_body": True})
        finally:
            ended.set()

    limits = ConnectionLimits(header_s=10.0, body_idle_s=1.0, max_connections=10)
    for port in _serving(big, limits, lifespan="off"):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # and never read
        assert ended.wait(30), "the response's task still runs"
        assert "the client read nothing of the response for 1 s" in caplog.text
        sock.close()
