"""PACS credentials from the environment: refused in one line when they cannot work, never shown."""

from __future__ import annotations

import pytest
import requests

from medanomaly.deploy.pacs_auth import PacsAuth, cleartext_warning
from medanomaly.errors import InputError


@pytest.mark.parametrize(("env", "words"), [
    ({"MEDANOMALY_PACS_USER": "reader"}, "go together"),
    ({"MEDANOMALY_PACS_PASSWORD": "x"}, "go together"),
    ({"MEDANOMALY_PACS_TOKEN": "t", "MEDANOMALY_PACS_USER": "u", "MEDANOMALY_PACS_PASSWORD": "p"}, "set one of"),
    ({"MEDANOMALY_PACS_TOKEN": "t", "MEDANOMALY_PACS_TOKEN_COMMAND": "gcloud auth print-access-token"}, "set one of"),
    ({"MEDANOMALY_PACS_TOKEN_COMMAND": "tool 'unclosed"}, "not a command line"),
    ({"MEDANOMALY_PACS_TOKEN": "abc\r\nX-Admin: 1"}, "line break"),
    ({"MEDANOMALY_PACS_TOKEN": "two words"}, "not a bearer token"),
    ({"MEDANOMALY_PACS_USER": "a:b", "MEDANOMALY_PACS_PASSWORD": "p"}, "holds a colon"),
])  # fmt: skip
def test_credentials_that_cannot_work_are_one_line_without_the_secret(env, words):
    with pytest.raises(InputError, match=words) as err:
        PacsAuth.from_env(env)
    assert "X-Admin" not in str(err.value) and "abc" not in str(err.value)


def test_credentials_ride_on_every_request_and_never_show():
    token = PacsAuth.from_env({"MEDANOMALY_PACS_TOKEN": "eyJhbGciOi.payload.sig"})
    session = requests.Session()
    token.apply(session)
    prepared = session.prepare_request(requests.Request("GET", "https://pacs.example/dicom-web/studies"))
    assert prepared.headers["Authorization"] == "Bearer eyJhbGciOi.payload.sig"
    basic = PacsAuth.from_env({"MEDANOMALY_PACS_USER": "reader", "MEDANOMALY_PACS_PASSWORD": "Wörter"})
    basic.apply(session := requests.Session())
    prepared = session.prepare_request(requests.Request("GET", "https://pacs.example/dicom-web/studies"))
    assert prepared.headers["Authorization"] == "Basic cmVhZGVyOlfDtnJ0ZXI="  # reader:Wörter in UTF-8
    for auth in (token, basic):
        assert "payload" not in f"{auth!r} {auth}" and "Wörter" not in f"{auth!r} {auth}"


def test_credentials_in_clear_text_to_another_host_are_warned_about():
    auth = PacsAuth(token="t")
    assert cleartext_warning("http://pacs.hospital.lan:8042/dicom-web", auth).startswith("warning: the PACS credentials")
    for quiet in ("https://pacs.hospital.lan/dicom-web", "http://127.0.0.1:8042/dicom-web", "http://localhost/x",
                  "http://[::1]:8042/dicom-web"):  # fmt: skip
        assert cleartext_warning(quiet, auth) is None
    assert cleartext_warning("http://pacs.hospital.lan/dicom-web", None) is None


def test_a_token_command_is_run_again_when_the_pacs_says_the_token_expired(tmp_path):
    """An access token expires (an hour for Google's); a watch runs for days. With MEDANOMALY_PACS_TOKEN_COMMAND the
    token comes from a command (no shell), run at the start and again on a 401, and the refused request is sent once
    more. A command that fails is one line quoting neither its output nor its errors. A local DICOMweb stand-in."""
    import sys
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from medanomaly.deploy.pacs import connect

    valid = ["tok1"]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            ok = self.headers.get("Authorization") == f"Bearer {valid[0]}"
            body = b"[]" if ok else b'{"error": "expired"}'
            self.send_response(200 if ok else 401)
            self.send_header("Content-Type", "application/dicom+json" if ok else "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    counter = tmp_path / "count"
    script = tmp_path / "token.py"
    script.write_text("import pathlib, sys\np = pathlib.Path(sys.argv[1])\nn = int(p.read_text() or 0) + 1 "
                      "if p.exists() else 1\np.write_text(str(n))\nprint(f'tok{n}')\n")  # fmt: skip
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
        auth = PacsAuth.from_env({"MEDANOMALY_PACS_TOKEN_COMMAND": f"{sys.executable} {script} {counter}"})
        client = connect(url, auth=auth)  # runs the command once: tok1
        assert client.search_for_studies() == [] and counter.read_text() == "1"
        valid[0] = "tok2"  # the token expired
        assert client.search_for_studies() == [] and counter.read_text() == "2"  # 401, command again, sent again
        valid[0] = "never"
        with pytest.raises(InputError, match="HTTP 401"):  # a second 401 after a fresh token: refused, no loop
            connect(url, auth=auth)
        assert int(counter.read_text()) <= 4
    finally:
        server.shutdown()
    failing = tmp_path / "fail.py"
    failing.write_text("import sys\nprint('secret-part-of-a-token')\nsys.exit(3)\n")
    with pytest.raises(InputError, match=r"failed \(exit 3\)") as err:
        connect("http://127.0.0.1:9/dicom-web", auth=PacsAuth(command=(sys.executable, str(failing))))
    assert "secret" not in str(err.value)
    with pytest.raises(InputError, match="cannot run 'no-such-tool-xyz' \\(not found\\)"):
        PacsAuth(command=("no-such-tool-xyz",)).apply(requests.Session())


def test_a_token_command_that_prints_without_end_or_hangs_is_stopped(monkeypatch):
    """``yes`` as the token command filled the memory for a minute (its output was read whole); a command that hangs
    held the bridge for the same minute. Output is read up to 64 KiB, the command killed past it or past the time."""
    import sys
    import time

    from medanomaly.deploy import pacs_auth

    monkeypatch.setattr(pacs_auth, "TOKEN_COMMAND_TIMEOUT_S", 1.0)
    start = time.monotonic()
    with pytest.raises(InputError, match="printed more than a token"):
        pacs_auth.run_token_command(("yes",))
    with pytest.raises(InputError, match="gave no token in 1 s"):
        pacs_auth.run_token_command((sys.executable, "-c", "import time; time.sleep(30)"))
    assert time.monotonic() - start < 10
    assert pacs_auth.run_token_command((sys.executable, "-c", "print(' tok-123 ')")) == "tok-123"
