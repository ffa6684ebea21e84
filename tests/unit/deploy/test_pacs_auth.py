"""PACS credentials from the environment: refused in one line when they cannot work, never shown."""

from __future__ import annotations

import pytest
import requests

from medanomaly.deploy.pacs_auth import PacsAuth, cleartext_warning
from medanomaly.errors import InputError


@pytest.mark.parametrize(("env", "words"), [
    ({"MEDANOMALY_PACS_USER": "reader"}, "go together"),
    ({"MEDANOMALY_PACS_PASSWORD": "x"}, "go together"),
    ({"MEDANOMALY_PACS_TOKEN": "t", "MEDANOMALY_PACS_USER": "u", "MEDANOMALY_PACS_PASSWORD": "p"}, "not both"),
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
