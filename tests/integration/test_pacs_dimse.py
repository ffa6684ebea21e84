"""The PACS bridge over DIMSE (C-ECHO, C-FIND, C-GET, C-STORE) against a real Orthanc (Debian; no mock).

Orthanc's DICOM server is on, on a free port, and knows our AE title, as a hospital PACS is told of a new
modality. lung1 is stored in it as a CT series; ``run_pacs`` with ``dimse://...`` finds it with C-FIND,
retrieves it with C-GET and stores the SEG, RTSTRUCT and SR back with C-STORE; a second run adds nothing.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from medanomaly.errors import InputError

from .test_pacs import ReferenceLesionModel, _count_instances, _free_port, running_orthanc

pytestmark = pytest.mark.pacs
AE = "MEDANOMALY"
MOVE_PORT = _free_port()  # where our C-MOVE storage SCP listens; Orthanc is told of it


@pytest.fixture(scope="module")
def dimse_orthanc(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """(REST URL, DIMSE URL) of an Orthanc whose DICOM server knows our AE title; lung1's CT stored in it."""
    port = _free_port()
    settings = {"DicomServerEnabled": True, "DicomAet": "ORTHANC", "DicomPort": port,
                "DicomModalities": {"medanomaly": [AE, "127.0.0.1", MOVE_PORT]}}  # fmt: skip
    with running_orthanc(tmp_path_factory.mktemp("orthanc-dimse"), **settings) as rest:
        yield rest, f"dimse://127.0.0.1:{port}/ORTHANC"


@pytest.fixture(scope="module")
def lung1_in_pacs(dimse_orthanc, tmp_path_factory):
    """lung1 as a DICOM CT series, stored through Orthanc's REST API: (study UID, series UID, mask)."""
    import pydicom

    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.io import read
    from medanomaly.io.dicom_writer import write_dicom_series

    rest, _ = dimse_orthanc
    image, mask = pyradiomics_case("lung1")
    files = write_dicom_series(read(image).with_meta(modality="CT"), tmp_path_factory.mktemp("lung1") / "ct")
    for f in files:
        urllib.request.urlopen(urllib.request.Request(f"{rest}/instances", data=Path(f).read_bytes(), method="POST"))
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    return str(first.StudyInstanceUID), str(first.SeriesInstanceUID), read(mask)


def _series_modalities(rest: str, study_uid: str) -> list[str]:
    query = json.dumps({"Level": "Series", "Query": {"StudyInstanceUID": study_uid}, "Expand": True}).encode()
    with urllib.request.urlopen(urllib.request.Request(f"{rest}/tools/find", data=query, method="POST")) as r:
        return sorted(s["MainDicomTags"]["Modality"] for s in json.load(r))


def test_round_trip_over_dimse_stores_seg_rtstruct_and_sr_and_a_second_run_adds_nothing(
    dimse_orthanc, lung1_in_pacs, tmp_path: Path
) -> None:
    from medanomaly.deploy.pacs import connect, run_pacs

    rest, url = dimse_orthanc
    study_uid, ct_uid, mask = lung1_in_pacs
    model = ReferenceLesionModel(mask)
    before = _count_instances(rest)
    client = connect(url, ae_title=AE)
    assert client.search_for_studies(search_filters={"StudyDate": "20261201-"}) == []  # a range (lung1 has no date)
    assert len(client.search_for_studies(search_filters={"ModalitiesInStudy": "CT"})) == 1
    metadata = client.retrieve_series_metadata(study_uid, ct_uid)  # headers only, from an IMAGE-level C-FIND
    assert len(metadata) == 48 and metadata[0]["00280010"]["Value"] == [512]
    first = run_pacs(model, url, tmp_path / "work", client=client)
    assert (first.processed, first.stored, first.errors) == (1, 3, [])
    assert _count_instances(rest) == before + 3
    assert _series_modalities(rest, study_uid) == ["CT", "RTSTRUCT", "SEG", "SR"]
    record = json.loads(next((tmp_path / "work" / "series").glob("*.json")).read_text())
    (finding,) = record["prediction"]["findings"]
    assert finding["volume_ml"] == pytest.approx(1.36, rel=0.01)  # the real lung1 nodule
    assert -200 < finding["mean_hu"] < 100  # measured on the CT's own HU, retrieved by C-GET (air would be -1000)

    second = run_pacs(model, url, tmp_path / "work", client=client)
    assert (second.processed, second.stored, second.errors) == (0, 0, [])
    assert _count_instances(rest) == before + 3


def test_a_series_larger_than_announced_is_refused_while_it_arrives(dimse_orthanc, lung1_in_pacs) -> None:
    from medanomaly.deploy.bounded_http import answers_at_most
    from medanomaly.deploy.pacs import connect

    _, url = dimse_orthanc
    study_uid, ct_uid, _ = lung1_in_pacs
    client = connect(url, ae_title=AE)
    with answers_at_most(client, 2 * 2**20), pytest.raises(InputError, match="more than the 2.0 MiB allowed") as err:
        client.retrieve_series(study_uid, ct_uid)  # lung1 is 25 MB
    assert "\n" not in str(err.value)
    assert len(client.retrieve_series(study_uid, ct_uid)) == 48  # the limit was for that call only
    with answers_at_most(client, client.last_retrieval_bytes - 1), pytest.raises(InputError, match="more than the"):
        client.retrieve_series(study_uid, ct_uid)  # the last instance alone passes it


def test_an_ae_title_the_pacs_does_not_know_and_an_unreachable_port_are_one_line(
    dimse_orthanc, tmp_path, monkeypatch, capsys
) -> None:
    from .conftest import run_main

    _, url = dimse_orthanc
    code, _, err = run_main(monkeypatch, capsys, "pacs", str(tmp_path / "no-run"), "--url", url, "--ae-title",
                            "STRANGER", "--out", str(tmp_path / "work"))  # fmt: skip
    assert code == 2 and "STRANGER" in err and "--ae-title" in err and len(err.strip().splitlines()) == 1, err
    closed = f"dimse://127.0.0.1:{_free_port()}/ORTHANC"
    code, _, err = run_main(monkeypatch, capsys, "pacs", str(tmp_path / "no-run"), "--url", closed, "--out",
                            str(tmp_path / "work"))  # fmt: skip
    assert code == 2 and "cannot reach the PACS" in err and len(err.strip().splitlines()) == 1, err


def test_a_pacs_that_omits_the_image_size_from_c_find_has_it_read_from_one_instance(
    dimse_orthanc, lung1_in_pacs, monkeypatch
) -> None:
    """Not every PACS returns Rows / Columns at IMAGE level (the standard does not require it): the series was then
    skipped as "DICOM object without an image". One instance is fetched with C-GET and its headers fill them in."""
    from medanomaly.deploy.archive import entry_from_datasets
    from medanomaly.deploy.dimse import DimseClient

    _, url = dimse_orthanc
    study_uid, ct_uid, _ = lung1_in_pacs
    client = DimseClient(url, ae_title=AE)
    real_find = DimseClient._find

    def terse_find(self, level, keys):  # Orthanc's real answers, less what a terse PACS leaves out
        answers = real_find(self, level, keys)
        return [{t: v for t, v in a.items() if t not in ("00280010", "00280011", "00280100")} for a in answers]

    monkeypatch.setattr(DimseClient, "_find", terse_find)
    metadata = client.retrieve_series_metadata(study_uid, ct_uid)
    from pydicom import Dataset

    entry = entry_from_datasets([Dataset.from_json(m) for m in metadata])
    assert (entry.rows, entry.columns, entry.bytes_per_sample, entry.n_frames) == (512, 512, 2, 48)


def test_a_compressed_series_arrives_with_its_pixels_unchanged(dimse_orthanc, tmp_path) -> None:
    """PACS keep CT compressed (RLE, JPEG Lossless, JPEG 2000). C-GET offers every transfer syntax pydicom decodes
    for each storage class; the PACS picks one per class and converts what it stores if it must (Orthanc picks
    Explicit VR Little Endian): the pixels arrive as stored."""
    import numpy as np
    import pydicom
    from pydicom.uid import RLELossless, generate_uid

    from medanomaly.deploy.dimse import DimseClient, transfer_syntaxes
    from medanomaly.io.dicom_writer import write_dicom_series
    from medanomaly.types import Volume

    rest, url = dimse_orthanc
    pixels = np.random.default_rng(0).integers(-1000, 1000, size=(3, 64, 64)).astype(np.int16)
    files = write_dicom_series(Volume(pixels, spacing=(0.7, 0.7, 2.0)).with_meta(modality="CT"), tmp_path / "ct")
    study, series = generate_uid(), generate_uid()
    for f in files:
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.compress(RLELossless)
        ds.save_as(f)
        urllib.request.urlopen(urllib.request.Request(f"{rest}/instances", data=Path(f).read_bytes(), method="POST"))
    got = sorted(DimseClient(url, ae_title=AE).retrieve_series(study, series), key=lambda d: int(d.InstanceNumber))
    assert len(got) == 3 and all(d.file_meta.TransferSyntaxUID in transfer_syntaxes() for d in got)
    assert np.array_equal(np.stack([d.pixel_array for d in got]),
                          np.stack([pydicom.dcmread(f).pixel_array for f in files]))  # fmt: skip


def test_a_pacs_without_c_get_is_retrieved_from_with_c_move(dimse_orthanc, lung1_in_pacs, tmp_path, monkeypatch,
                                                            capsys) -> None:  # fmt: skip
    """Many PACS answer C-MOVE only: with ``--move-port`` the bridge listens there for the retrieval (taking stores
    from the PACS's AE title only) and the PACS sends the series to our AE title."""
    from .conftest import run_main

    from medanomaly.deploy.pacs import connect, run_pacs

    _, url = dimse_orthanc
    study_uid, ct_uid, mask = lung1_in_pacs
    client = connect(url, ae_title=AE, move_to=("127.0.0.1", MOVE_PORT))
    assert len(client.retrieve_series(study_uid, ct_uid)) == 48
    summary = run_pacs(ReferenceLesionModel(mask), url, tmp_path / "work", client=client,
                       search_filters={"StudyInstanceUID": study_uid})  # a C-FIND key as a study filter
    assert (summary.studies, summary.processed, summary.errors) == (1, 1, [])
    record = json.loads(next((tmp_path / "work" / "series").glob("*.json")).read_text())
    assert record["largest_lesion_ml"] == pytest.approx(1.36, rel=0.01)
    code, _, err = run_main(monkeypatch, capsys, "pacs", str(tmp_path / "no-run"), "--url", "http://127.0.0.1:1/x",
                            "--move-port", str(_free_port()))  # fmt: skip
    assert code == 2 and "--move-port is for a DIMSE PACS" in err, err


def test_a_patient_s_studies_are_found_over_c_find_by_exact_patient_id(dimse_orthanc, tmp_path: Path) -> None:
    """--pair-by patient over DIMSE: the study C-FIND returns PatientID and its issuer when asked; a patient's two
    studies are found by an exact C-FIND on them, another patient whose ID starts the same is not, and a PatientID
    holding a wildcard is never put in a query (``PAT-*`` matches every PAT- patient): its study stays alone."""
    from medanomaly.deploy.pacs import PATIENT_FIELDS, connect, patient_studies
    from tests.integration.test_batch_fusion import STUDY, _of_patient, _series

    rest, url = dimse_orthanc
    for study, patient in ((21, "PAT-D"), (22, "PAT-D"), (23, "PAT-DX"), (24, "PAT-*")):
        for path in sorted(_of_patient(_series(tmp_path, study, "t1", "T1", "T1"), patient).iterdir()):
            urllib.request.urlopen(urllib.request.Request(f"{rest}/instances", data=path.read_bytes(), method="POST"))
    client = connect(url, ae_title=AE)
    answers = {a["0020000D"]["Value"][0]: a for a in client.search_for_studies(fields=list(PATIENT_FIELDS))}
    assert answers[STUDY.format(21)]["00100020"]["Value"] == ["PAT-D"]
    assert patient_studies(client, url, answers[STUDY.format(22)], STUDY.format(22)) == [STUDY.format(22),
                                                                                          STUDY.format(21)]  # fmt: skip
    asked: list[dict] = []
    search = client.search_for_studies
    client.search_for_studies = lambda **kw: asked.append(kw["search_filters"]) or search(**kw)
    assert patient_studies(client, url, answers[STUDY.format(24)], STUDY.format(24)) == [STUDY.format(24)]
    assert asked == [] and STUDY.format(23) in answers  # PAT-DX's study is there, not PAT-D's
