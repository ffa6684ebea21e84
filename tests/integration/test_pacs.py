"""PACS round trip against a real Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``; no mock).

The fixture starts Orthanc on 127.0.0.1 on a free port with a temporary storage folder and the
DICOMweb plugin, waits until it answers, and stops it by its PID. The test uploads lung1 as a
DICOM CT series (STOW-RS), runs the PACS bridge, and finds the SEG and SR in the same study,
referencing the CT series; a second run (and a run that lost its state file) adds nothing.

The model is a stand-in that returns the real lung1 lesion (measured with medanomaly.quantify) as
its finding: this test checks the PACS path, not detection quality.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from medanomaly.errors import InputError
from medanomaly.types import Prediction, Volume

pytestmark = pytest.mark.pacs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dicomweb_plugin() -> str:
    """Path of the DICOMweb plugin from the Debian package's file list."""
    try:
        listing = subprocess.run(["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.fail("orthanc-dicomweb is not installed: run `make setup`")
    plugins = [ln for ln in listing.splitlines() if ln.endswith(".so") and "/plugins/" in ln]
    plugins = plugins or [ln for ln in listing.splitlines() if ".so" in ln]
    assert plugins, "no plugin library in orthanc-dicomweb"
    return plugins[0]


@contextmanager
def running_orthanc(tmp: Path, **settings: object) -> Iterator[str]:
    """Base URL of a fresh Orthanc on a free port (REST at URL, DICOMweb at URL/dicom-web) with ``settings`` over
    the test configuration, stopped by PID afterwards."""
    exe = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    if not Path(exe).exists():
        pytest.fail("Orthanc is not installed: run `make setup`")
    port = _free_port()
    config = {
        "Name": "medanomaly-test", "StorageDirectory": str(tmp / "db"), "IndexDirectory": str(tmp / "db"),
        "HttpPort": port, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "Plugins": [_dicomweb_plugin()],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}, **settings,
    }  # fmt: skip
    (tmp / "orthanc.json").write_text(json.dumps(config))
    log = (tmp / "orthanc.log").open("w")
    proc = subprocess.Popen([exe, str(tmp / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/dicom-web/studies?limit=1", timeout=2):
                break
        except urllib.error.HTTPError:  # an answer (401 from an Orthanc that asks for credentials): it is up
            break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"Orthanc did not start: {(tmp / 'orthanc.log').read_text()[-1000:]}")
        time.sleep(0.2)
    try:
        yield url
    finally:
        proc.terminate()  # by its PID
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """Base URL of a fresh Orthanc that asks for no credentials."""
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as url:
        yield url


def _count_instances(url: str) -> int:
    with urllib.request.urlopen(f"{url}/statistics", timeout=10) as r:
        return int(json.load(r)["CountInstances"])


class ReferenceLesionModel:
    """Stand-in detection model: the real lung1 lesion mask, measured, is its one finding."""

    task = "lung_nodule"
    class_names = ("nodule",)

    def __init__(self, mask: Volume) -> None:
        self.info = {"model": "reference-lesion", "version": 1}
        self.mask = mask

    def predict(self, volume: Volume) -> Prediction:
        from medanomaly.quantify.measure import measure_lesions

        lesion = volume.with_array((np.asarray(self.mask.array) > 0).astype(np.uint8))
        findings = tuple(measure_lesions(lesion, volume, label="nodule"))
        return Prediction(scores=(1.0,), class_names=self.class_names, label="nodule", findings=findings)


@pytest.fixture(scope="module")
def lung1_uploaded(orthanc, tmp_path_factory):
    """lung1 written as a DICOM CT series and stored in Orthanc with STOW-RS: (study UID, series UID, mask)."""
    import pydicom
    from dicomweb_client.api import DICOMwebClient

    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.io import read
    from medanomaly.io.dicom_writer import write_dicom_series

    image, mask = pyradiomics_case("lung1")
    files = write_dicom_series(read(image).with_meta(modality="CT"), tmp_path_factory.mktemp("lung1") / "ct")
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    client = DICOMwebClient(f"{orthanc}/dicom-web")
    client.store_instances([pydicom.dcmread(f) for f in files])
    assert _count_instances(orthanc) == len(files)
    return str(first.StudyInstanceUID), str(first.SeriesInstanceUID), read(mask)


def test_round_trip_stores_seg_rtstruct_and_sr_in_the_study_and_a_second_run_adds_nothing(
    orthanc, lung1_uploaded, tmp_path: Path
) -> None:
    import pydicom
    from dicomweb_client.api import DICOMwebClient

    from medanomaly.deploy.dicom_sr import read_sr_lesions
    from medanomaly.deploy.pacs import PacsState, run_pacs

    study_uid, ct_uid, mask = lung1_uploaded
    model = ReferenceLesionModel(mask)
    before = _count_instances(orthanc)
    first = run_pacs(model, f"{orthanc}/dicom-web", tmp_path / "work")
    assert (first.processed, first.stored, first.errors) == (1, 3, [])
    assert _count_instances(orthanc) == before + 3

    client = DICOMwebClient(f"{orthanc}/dicom-web")
    series = {s["0020000E"]["Value"][0]: s["00080060"]["Value"][0] for s in client.search_for_series(study_uid)}
    seg_uid = next(uid for uid, modality in series.items() if modality == "SEG")
    sr_uid = next(uid for uid, modality in series.items() if modality == "SR")
    rt_uid = next(uid for uid, modality in series.items() if modality == "RTSTRUCT")
    (rtstruct,) = client.retrieve_series(study_uid, rt_uid)
    frame = rtstruct.ReferencedFrameOfReferenceSequence[0]
    assert frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0].SeriesInstanceUID == ct_uid
    (seg,) = client.retrieve_series(study_uid, seg_uid)
    (sr,) = client.retrieve_series(study_uid, sr_uid)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct_uid
    evidence = {s.SeriesInstanceUID for st in sr.CurrentRequestedProcedureEvidenceSequence for s in st.ReferencedSeriesSequence}
    assert {ct_uid, seg_uid} <= evidence
    (lesion,) = read_sr_lesions(sr)
    assert lesion["seg_sop_instance_uid"] == seg.SOPInstanceUID and lesion["segment_number"] == 1
    assert lesion["volume_ml"] == pytest.approx(1.36, rel=0.01)  # the real lung1 nodule
    assert isinstance(seg, pydicom.Dataset)

    second = run_pacs(model, f"{orthanc}/dicom-web", tmp_path / "work")
    assert (second.processed, second.stored) == (0, 0)
    assert _count_instances(orthanc) == before + 3
    statuses = {row[0]: row[3] for row in PacsState(tmp_path / "work" / "pacs_state.sqlite").rows()}
    assert statuses[ct_uid] == "done" and statuses[seg_uid] == statuses[sr_uid] == statuses[rt_uid] == "skipped"

    # Even without its state file, a rerun stores the same SOP instances: still nothing added.
    third = run_pacs(model, f"{orthanc}/dicom-web", tmp_path / "work2")
    assert third.processed == 1 and _count_instances(orthanc) == before + 3


def test_unreachable_pacs_is_one_line(tmp_path: Path) -> None:
    from medanomaly.deploy.pacs import connect

    url = f"http://127.0.0.1:{_free_port()}/dicom-web"
    with pytest.raises(InputError, match="cannot reach the PACS") as err:
        connect(url, timeout_s=5)
    assert "\n" not in str(err.value) and url in str(err.value)


def test_refusing_pacs_is_one_line(orthanc) -> None:
    from medanomaly.deploy.pacs import connect

    with pytest.raises(InputError, match=r"PACS refused the request \(HTTP 404") as err:
        connect(f"{orthanc}/no-such-root", timeout_s=5)
    assert "\n" not in str(err.value)


def test_a_pacs_that_asks_for_credentials_gets_them_from_the_environment_only(tmp_path, monkeypatch, capsys) -> None:
    """A PACS with authentication on (Orthanc's RegisteredUsers, as most are) could not be used: `pacs` had no way to
    give credentials, and its refusal said only "HTTP 401". Credentials come from the environment (HTTP Basic, or a
    bearer token), never from the command line (``ps`` shows it) nor the URL (printed with every error); no error
    line shows them."""
    from .conftest import run_main

    from medanomaly.deploy.pacs import connect
    from medanomaly.deploy.pacs_auth import PacsAuth

    password = "Wörter-9f3k"  # not Latin-1: HTTP Basic in UTF-8, as RFC 7617 allows
    with running_orthanc(tmp_path, AuthenticationEnabled=True, RegisteredUsers={"reader": password}) as url:
        root = f"{url}/dicom-web"
        for env, words in (({}, "HTTP 401"), ({"MEDANOMALY_PACS_USER": "reader", "MEDANOMALY_PACS_PASSWORD": "wrong"},
                                                "HTTP 401")):  # fmt: skip
            for name in ("MEDANOMALY_PACS_USER", "MEDANOMALY_PACS_PASSWORD", "MEDANOMALY_PACS_TOKEN"):
                monkeypatch.delenv(name, raising=False)
            for name, value in env.items():
                monkeypatch.setenv(name, value)
            code, _, err = run_main(monkeypatch, capsys, "pacs", str(tmp_path / "no-run"), "--url", root, "--out",
                                    str(tmp_path / "work"))  # fmt: skip
            assert code == 2 and words in err and "MEDANOMALY_PACS_USER" in err and "wrong" not in err, err
        good = PacsAuth.from_env({"MEDANOMALY_PACS_USER": "reader", "MEDANOMALY_PACS_PASSWORD": password})
        assert connect(root, auth=good).search_for_studies() == []  # the fresh PACS answers, empty
        with pytest.raises(InputError, match="credentials in the URL would be printed") as err:
            connect(root.replace("http://", f"http://reader:{password}@"), auth=None)
        assert password not in str(err.value)
