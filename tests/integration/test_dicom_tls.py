"""DICOM TLS against a real Orthanc (Debian; its DICOM server with TLS on and a client certificate required): the
PACS bridge (``dimse+tls://``) and the node (``listen`` with ``--tls-cert``) each do their whole round trip over TLS;
without the right certificates or over plain DIMSE nothing passes, each refusal one line."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from medanomaly.errors import InputError

from .test_listener import _push, _states, _wait
from .test_pacs import ReferenceLesionModel, _count_instances, _free_port, running_orthanc
from .tls_certs import write_test_pki

pytestmark = pytest.mark.pacs
AE = "MEDANOMALY"


@pytest.fixture(scope="module")
def tls_orthanc(tmp_path_factory) -> Iterator[dict]:
    """An Orthanc whose DICOM server speaks TLS only, requires a client certificate signed by the test CA, knows
    the node (TLS) and holds lung1."""
    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.io import read
    from medanomaly.io.dicom_writer import write_dicom_series

    pki = write_test_pki(tmp_path_factory.mktemp("pki"))
    dicom_port, node_port = _free_port(), _free_port()
    settings = {"DicomServerEnabled": True, "DicomAet": "ORTHANC", "DicomPort": dicom_port, "DicomTlsEnabled": True,
                "DicomTlsCertificate": str(pki / "pacs.pem"), "DicomTlsPrivateKey": str(pki / "pacs.key"),
                "DicomTlsTrustedCertificates": str(pki / "ca.pem"), "DicomTlsRemoteCertificateRequired": True,
                "DicomModalities": {"medanomaly": {"AET": AE, "Host": "127.0.0.1", "Port": node_port,
                                                   "UseDicomTls": True}}}  # fmt: skip
    with running_orthanc(tmp_path_factory.mktemp("orthanc-tls"), **settings) as rest:
        image, mask = pyradiomics_case("lung1")
        for f in write_dicom_series(read(image).with_meta(modality="CT"), tmp_path_factory.mktemp("lung1") / "ct"):
            urllib.request.urlopen(urllib.request.Request(f"{rest}/instances", data=Path(f).read_bytes(), method="POST"))
        yield {"rest": rest, "url": f"dimse+tls://127.0.0.1:{dicom_port}/ORTHANC", "node_port": node_port,
               "pki": pki, "mask": read(mask)}


def _tls(pki: Path, *, ca: bool = True, cert: bool = True):
    from medanomaly.deploy.dicom_tls import DicomTls

    return DicomTls(ca=pki / "ca.pem" if ca else None, cert=pki / "node.pem" if cert else None,
                    key=pki / "node.key" if cert else None)  # fmt: skip


def test_the_bridge_retrieves_and_stores_over_dicom_tls(tls_orthanc, tmp_path) -> None:
    from medanomaly.deploy.pacs import connect, run_pacs

    rest, url = tls_orthanc["rest"], tls_orthanc["url"]
    before = _count_instances(rest)
    client = connect(url, ae_title=AE, tls=_tls(tls_orthanc["pki"]))
    summary = run_pacs(ReferenceLesionModel(tls_orthanc["mask"]), url, tmp_path / "work", client=client)
    assert (summary.processed, summary.stored, summary.errors) == (1, 3, [])
    assert _count_instances(rest) == before + 3


@pytest.mark.parametrize("case", ["no client certificate", "system trust store", "plain DIMSE"])
def test_without_the_right_certificates_or_in_the_clear_nothing_passes(tls_orthanc, case) -> None:
    from medanomaly.deploy.pacs import connect

    url, pki = tls_orthanc["url"], tls_orthanc["pki"]
    tls = {"no client certificate": _tls(pki, cert=False), "system trust store": _tls(pki, ca=False, cert=False),
           "plain DIMSE": None}[case]  # fmt: skip
    target = url.replace("dimse+tls://", "dimse://") if tls is None else url
    with pytest.raises(InputError, match="cannot reach the PACS") as err:
        connect(target, ae_title=AE, tls=tls, timeout_s=5)
    assert "\n" not in str(err.value) and (("TLS handshake" in str(err.value)) == (tls is not None))


def test_tls_files_that_cannot_be_used_are_one_line_naming_the_option(tls_orthanc, tmp_path, monkeypatch,
                                                                      capsys) -> None:  # fmt: skip
    from .conftest import run_main

    url, pki = tls_orthanc["url"], tls_orthanc["pki"]
    (tmp_path / "bad.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    for args, words in (
        (["--url", url, "--tls-ca", str(tmp_path / "bad.pem")], "--tls-ca: not a usable PEM certificate"),
        (["--url", url, "--tls-cert", str(pki / "node.pem")], "--tls-cert and --tls-key go together"),
        (["--url", url, "--tls-ca", str(tmp_path / "missing.pem")], "--tls-ca: no such file"),
        (["--url", url.replace("dimse+tls", "dimse"), "--tls-ca", str(pki / "ca.pem")], "name it dimse+tls://"),
        (["--url", "http://127.0.0.1:1/dicom-web", "--tls-ca", str(pki / "ca.pem")], "REQUESTS_CA_BUNDLE"),
    ):
        code, _, err = run_main(monkeypatch, capsys, "pacs", str(tmp_path / "no-run"), *args, "--out",
                                str(tmp_path / "work"))  # fmt: skip
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, (args, err)
        assert "BEGIN" not in err, "a file's content never reaches the error"


def test_the_node_receives_over_dicom_tls_and_sends_back_over_it(tls_orthanc, tmp_path) -> None:
    from medanomaly.deploy.listener import ListenerOptions, run_listener

    rest, pki = tls_orthanc["rest"], tls_orthanc["pki"]
    stop, box = threading.Event(), {}
    options = ListenerOptions(port=tls_orthanc["node_port"], allowed=("ORTHANC",), idle_s=1.0,
                              store_to=tls_orthanc["url"], tls=_tls(pki))  # fmt: skip
    thread = threading.Thread(target=lambda: box.update(summary=run_listener(
        ReferenceLesionModel(tls_orthanc["mask"]), tmp_path / "work", options, stop=stop)), daemon=True)  # fmt: skip
    thread.start()
    time.sleep(1.0)
    try:
        assert _push(rest) == 200  # Orthanc's C-STORE to the node, over TLS with its certificate
        _wait(lambda: _states(tmp_path / "work") != [])
    finally:
        stop.set()
        thread.join(30)
    assert _states(tmp_path / "work") == [("done", "")]  # the results' UIDs are the bridge test's: the same objects
    assert (box["summary"].processed, box["summary"].stored, box["summary"].errors) == (1, 3, [])
