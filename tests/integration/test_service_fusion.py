"""A multimodal (fusion) model served: one multipart field per modality, as `predict T1=... PD=...` takes them.

The service had taken one field of files per study, so a fusion model could only be sent one image whose components
were its modalities: a CT series and an MR series (the cardiac case study), or two NIfTI files, could not be sent at
all. The tiny fusion run is trained here on simulated brains (synthetic); its inputs are ITK's real brain slices.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medanomaly.data.sources import real_data
from medanomaly.deploy.service.app import ServiceConfig, create_app
from medanomaly.deploy.service.ingest import IngestLimits
from medanomaly.deploy.service.tokens import new_token
from tests.integration.conftest import train_tiny_fusion
from tests.integration.test_service_api import nifti_bytes, wait_done

pytestmark = pytest.mark.xdist_group("service")

SLICES = {"T1": "itk/BrainT1Slice.png", "PD": "itk/BrainProtonDensitySlice.png"}


@pytest.fixture(scope="module")
def fusion_run(tmp_path_factory) -> Path:
    return train_tiny_fusion(tmp_path_factory.mktemp("svc-fusion"))


def slice_nifti(tmp: Path, modality: str) -> Path:
    """ITK's real brain slice of ``modality`` as a one-slice NIfTI (the service takes no PNG)."""
    import nibabel as nib
    from PIL import Image

    pixels = np.asarray(Image.open(real_data(SLICES[modality])).convert("L"), np.float32)
    path = tmp / f"{modality.lower()}.nii.gz"
    nib.save(nib.Nifti1Image(pixels.T[..., None], np.eye(4)), path)
    return path


@pytest.fixture
def service(tmp_path, fusion_run):
    from fastapi.testclient import TestClient

    tokens = tmp_path / "tokens.json"
    token = new_token(tokens)
    limits = IngestLimits(max_body_bytes=4 << 20, max_files=20, max_zip_members=100, max_unzipped_bytes=8 << 20)
    app = create_app(ServiceConfig(models={"fusion": fusion_run}, data_dir=tmp_path / "data", tokens=tokens,
                                   limits=limits))  # fmt: skip
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield client, tmp_path


def upload(client, fields: list[tuple[str, bytes]], **params):
    return client.post("/v1/studies", params={"model": "fusion", **params},
                       files=[(name, (f"f{i}", data)) for i, (name, data) in enumerate(fields)])  # fmt: skip


def cli_prediction(run: Path, inputs: dict[str, Path | None]) -> dict:
    """What `medanomaly predict RUN T1=... PD=...` says of the same files (the reference)."""
    from medanomaly.engine import load_model
    from medanomaly.engine.verbs import predict_multimodal

    _, prediction, _ = predict_multimodal(load_model(run), inputs)
    return json.loads(json.dumps(prediction.to_json()))


def test_one_field_per_modality_is_predicted_as_the_cli_predicts_it(service, fusion_run):
    client, tmp = service
    t1, pd = slice_nifti(tmp, "T1"), slice_nifti(tmp, "PD")
    models = client.get("/v1/models").json()
    assert models[0]["task"] == "fusion" and models[0]["modalities"] == ["T1", "PD"]
    for fields, inputs in (([("T1", t1), ("PD", pd)], {"T1": t1, "PD": pd}),
                           ([("PD", pd), ("T1", t1)], {"T1": t1, "PD": pd}),  # the model's order, not the form's
                           ([("T1", t1)], {"T1": t1, "PD": None})):  # fmt: skip
        r = upload(client, [(name, path.read_bytes()) for name, path in fields])
        assert r.status_code == 202, r.text
        job = wait_done(client, r.json()["job_id"])
        assert job["status"] == "done", job
        assert job["input_kind"] == "+".join(["nifti"] * len(fields)) and job["n_files"] == len(fields)
        result = client.get(f"/v1/studies/{job['id']}/results").json()
        expected = cli_prediction(fusion_run, inputs)
        assert result["task"] == "fusion" and result["flags"] == expected["flags"]
        assert result["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-6)
        assert ("missing_modality:PD" in result["flags"]) == (inputs["PD"] is None)
        assert result["image"] == {"shape_zyx": [1, 217, 181], "spacing_mm": [1.0, 1.0, 1.0], "viewable": True, "unit": "a.u."}


def test_each_modality_sent_is_served_for_the_viewer_by_its_number(service):
    """The viewer showed the first modality only: a reader of a T1 + PD call never saw the PD. Each modality sent is
    listed in the result (``modalities``: n, name, unit) and served by its number; a number not listed is 404."""
    from medanomaly.io import read

    client, tmp = service
    t1, pd = slice_nifti(tmp, "T1"), slice_nifti(tmp, "PD")
    both = wait_done(client, upload(client, [("PD", pd.read_bytes()), ("T1", t1.read_bytes())]).json()["job_id"])
    alone = wait_done(client, upload(client, [("T1", t1.read_bytes())]).json()["job_id"])
    result = client.get(f"/v1/studies/{both['id']}/results").json()
    assert result["modalities"] == [{"n": 0, "name": "T1", "unit": "a.u."}, {"n": 1, "name": "PD", "unit": "a.u."}]
    for n, sent in ((0, t1), (1, pd)):
        r = client.get(f"/v1/studies/{both['id']}/image", params={"modality": n})
        assert r.status_code == 200, r.text
        (tmp / f"served{n}.nii.gz").write_bytes(r.content)
        assert np.array_equal(read(tmp / f"served{n}.nii.gz").array, read(sent).array), n
    assert client.get(f"/v1/studies/{both['id']}/image", params={"modality": 2}).status_code == 404
    assert client.get(f"/v1/studies/{both['id']}/image", params={"modality": -1}).status_code == 422
    assert client.get(f"/v1/studies/{alone['id']}/results").json()["modalities"] == [{"n": 0, "name": "T1",
                                                                                     "unit": "a.u."}]  # fmt: skip


def test_modalities_of_one_frame_on_two_grids_are_resampled_when_asked(service, fusion_run):
    """A T1 and a PD series of one session share their coordinates but not always their grid: the job failed ("grids
    differ"). With resample_to_first the PD is brought onto the T1's grid, the prediction the CLI's
    `predict RUN T1=... PD=... --resample-to-first` makes; in another frame of reference it still fails, in one line."""
    import pydicom

    from medanomaly.deploy.dicom_out import dciodvfy
    from medanomaly.engine import load_model
    from medanomaly.engine.verbs import predict_multimodal
    from medanomaly.io import read, write
    from medanomaly.io.dicom_writer import write_dicom_series
    from medanomaly.types import Volume

    client, tmp = service
    frame = {"modality": "MR", "frame_of_reference_uid": "1.2.826.0.1.3680043.8.498.77"}
    t1 = Volume(np.asarray(read(slice_nifti(tmp, "T1")).array), spacing=(1.0, 1.0, 1.0), meta=frame)
    pd_pixels = np.asarray(read(slice_nifti(tmp, "PD")).array)[:, 10:-10, 10:-10]  # smaller, half a voxel off
    pd = Volume(pd_pixels, spacing=(1.0, 1.0, 1.0), origin=(10.5, 10.5, 0.0), meta=frame)
    files = {}
    for name, volume in (("T1", t1), ("PD", pd)):
        (files[name],) = write_dicom_series(volume, tmp / f"{name}_frame", study_uid="1.2.826.0.1.3680043.8.498.78")
    fields = [(name, path.read_bytes()) for name, path in files.items()]
    plain = wait_done(client, upload(client, fields).json()["job_id"])
    assert plain["status"] == "failed" and "grids differ" in plain["reason"], plain
    asked = wait_done(client, upload(client, fields, resample_to_first="true").json()["job_id"])
    assert asked["status"] == "done", asked
    _, expected, _ = predict_multimodal(load_model(fusion_run), files, "resample")
    got = client.get(f"/v1/studies/{asked['id']}/results").json()["probabilities"]
    assert got == pytest.approx(dict(zip(expected.class_names, expected.scores, strict=True)), abs=1e-6)
    (tmp / "sr.dcm").write_bytes(client.get(f"/v1/studies/{asked['id']}/dicom/sr").content)
    sr = pydicom.dcmread(tmp / "sr.dcm")
    evidence = {s.SeriesInstanceUID for st in sr.CurrentRequestedProcedureEvidenceSequence
                for s in st.ReferencedSeriesSequence}  # fmt: skip
    assert evidence == {pydicom.dcmread(files[n]).SeriesInstanceUID for n in ("T1", "PD")}  # the call's both series
    assert dciodvfy(tmp / "sr.dcm").errors == []
    other = tmp / "pd_other_frame.nii.gz"
    write(pd, other)  # a NIfTI: no frame of reference recorded
    failed = wait_done(client, upload(client, [fields[0], ("PD", other.read_bytes())],
                                      resample_to_first="true").json()["job_id"])  # fmt: skip
    assert failed["status"] == "failed" and "another frame of reference" in failed["reason"], failed
    refused = upload(client, [("files", fields[0][1])], resample_to_first="true")
    assert refused.status_code == 400 and "one field per modality" in refused.json()["detail"], refused.text


def test_modalities_of_two_visits_are_registered_when_asked(service, fusion_run):
    """A PD of another frame of reference whose anatomy lies 6 mm off the T1's: register_to_first registers it onto
    the T1 (the CLI's `--register-to-first`: the same call and flags); both alignments at once, or one without a
    field per modality, are refused before anything is stored."""
    from medanomaly.engine import load_model
    from medanomaly.engine.verbs import predict_multimodal
    from medanomaly.io import read
    from medanomaly.io.dicom_writer import write_dicom_series
    from medanomaly.types import Volume

    client, tmp = service
    t1_pixels = np.asarray(read(slice_nifti(tmp, "T1")).array)
    pd_pixels = np.asarray(read(slice_nifti(tmp, "PD")).array)
    moved = np.pad(pd_pixels, ((0, 0), (6, 0), (6, 0)), constant_values=float(pd_pixels.min()))[:, :-6, :-6]
    files = {}
    for name, pixels, frame in (("T1", t1_pixels, "81"), ("PD", moved, "82")):
        volume = Volume(pixels, meta={"modality": "MR", "frame_of_reference_uid": f"1.2.826.0.1.3680043.8.498.{frame}"})
        (files[name],) = write_dicom_series(volume, tmp / f"{name}_visit", study_uid=f"1.2.826.0.1.3680043.8.498.9{frame}")
    fields = [(name, path.read_bytes()) for name, path in files.items()]
    job = wait_done(client, upload(client, fields, register_to_first="true").json()["job_id"])
    assert job["status"] == "done", job
    _, expected, _ = predict_multimodal(load_model(fusion_run), files, "register")
    result = client.get(f"/v1/studies/{job['id']}/results").json()
    assert result["probabilities"] == pytest.approx(dict(zip(expected.class_names, expected.scores, strict=True)),
                                                    abs=1e-6)  # fmt: skip
    assert [f for f in result["flags"] if f.startswith("registered:PD")] == list(expected.flags[-1:])
    assert "translation (6.0, 6.0) mm" in expected.flags[-1]
    import pydicom

    from medanomaly.deploy.dicom_out import dciodvfy

    (tmp / "reg.dcm").write_bytes(client.get(f"/v1/studies/{job['id']}/dicom/reg").content)
    assert dciodvfy(tmp / "reg.dcm").errors == []  # the transform as a DICOM Spatial Registration
    matrix = pydicom.dcmread(tmp / "reg.dcm").RegistrationSequence[1].MatrixRegistrationSequence[0].MatrixSequence[0]
    assert np.allclose(np.asarray(matrix.FrameOfReferenceTransformationMatrix, float)[[3, 7]], [-6.0, -6.0], atol=0.3)
    both = upload(client, fields, register_to_first="true", resample_to_first="true")
    assert both.status_code == 400 and "give one" in both.json()["detail"], both.text
    alone = upload(client, [("files", fields[0][1])], register_to_first="true")
    assert alone.status_code == 400 and "register_to_first brings" in alone.json()["detail"], alone.text


def test_one_image_with_the_modalities_as_components_still_goes_in_field_files(service, fusion_run):
    """The way a fusion model was served before (and an MSD-style case): one image, one component per modality."""
    from medanomaly.engine import load_model
    from medanomaly.io import read, write

    client, tmp = service
    t1, pd = read(slice_nifti(tmp, "T1")), read(slice_nifti(tmp, "PD"))
    both = t1.with_array(np.stack([np.asarray(t1.array), np.asarray(pd.array)], axis=-1))
    path = write(both, tmp / "both.nii.gz")
    r = client.post("/v1/studies", params={"model": "fusion"}, files=[("files", ("x", Path(path).read_bytes()))])
    assert r.status_code == 202, r.text
    job = wait_done(client, r.json()["job_id"])
    assert job["status"] == "done", job
    expected = load_model(fusion_run).predict(read(path)).to_json()
    assert client.get(f"/v1/studies/{job['id']}/results").json()["probabilities"] == pytest.approx(
        expected["probabilities"], abs=1e-6)


@pytest.mark.parametrize(("fields", "params", "status", "words"), [
    ([("T1", "t1"), ("CT", "pd")], {}, 400, "field 'CT' is not a modality of this model: send one field per "
                                            "modality (T1, PD)"),
    ([("T1", "t1"), ("files", "pd")], {}, 400, "field 'files' is not a modality"),
    ([("T1", "t1"), ("X" * 200, "pd")], {}, 400, f"field '{'X' * 64}' is not a modality"),  # a client's name, cut
    ([("T1", "t1")], {"frame": 0}, 400, "frame takes one frame of a cine or 4D file, not of a fusion's modalities"),
    ([("T1", "t1"), ("PD", "text")], {}, 415, "PD: unsupported content: not DICOM"),
    ([("T1", "t1"), ("PD", "pd"), ("PD", "pd")], {}, 415, "PD: send DICOM files of one series, or exactly one"),
    ([], {}, 400, "no file in the upload: send one field per modality (T1, PD)"),
])  # fmt: skip
def test_an_upload_the_modalities_cannot_make_is_refused_in_one_line_and_nothing_stays(service, fields, params,
                                                                                        status, words):  # fmt: skip
    client, tmp = service
    data = {"t1": slice_nifti(tmp, "T1").read_bytes(), "pd": slice_nifti(tmp, "PD").read_bytes(), "text": b"hello\n"}
    parts = [(name, (f"f{i}", data[what])) for i, (name, what) in enumerate(fields)] or [("note", (None, b"x"))]
    r = client.post("/v1/studies", params={"model": "fusion", **params}, files=parts)  # no file part: only a field
    assert r.status_code == status and words in r.json()["detail"], r.text
    assert client.get("/v1/jobs").json() == []
    studies = tmp / "data" / "studies"
    assert not studies.exists() or not any(studies.iterdir()), "nothing half-stored stays behind"


def test_images_the_model_cannot_take_together_fail_the_job_with_a_reason_naming_the_modality_not_a_path(service):
    """A CT behind the T1 field (pydicom's CT), or two grids: the job fails with the model's own reason, which names
    the modality and never the server's folders."""
    from pydicom.data import get_testdata_file

    import nibabel as nib

    client, tmp = service
    pd = slice_nifti(tmp, "PD").read_bytes()
    nib.save(nib.Nifti1Image(np.ones((217, 181, 1, 3), np.float32), np.eye(4)), tmp / "t1_4d.nii.gz")
    for t1, reason in ((Path(get_testdata_file("CT_small.dcm")).read_bytes(), "T1 holds a CT image, expected MR"),
                       (nifti_bytes(tmp), "grids differ"),
                       ((tmp / "t1_4d.nii.gz").read_bytes(),  # the run's "set data.volumes.T1": no client can
                        "4D image (3 volumes, 0..2): send T1 as one volume (a 3D image)")):  # fmt: skip
        r = upload(client, [("T1", t1), ("PD", pd)])
        assert r.status_code == 202, r.text
        job = wait_done(client, r.json()["job_id"])
        assert job["status"] == "failed" and reason in job["reason"], job
        assert "studies" not in job["reason"] and "modality-" not in job["reason"], job


def test_a_fusion_call_on_a_dicom_modality_is_a_dicom_sr_referencing_that_series(service, fusion_run):
    """The call of a fusion model sent a DICOM series for its first modality is an SR (TID 1500) in that series'
    study, as a classifier's call on a DICOM upload is; its probabilities are the JSON result's."""
    import pydicom

    from medanomaly.deploy.dicom_call_sr import read_call_sr
    from medanomaly.deploy.dicom_out import dciodvfy
    from medanomaly.io import read, write
    from medanomaly.io.dicom_writer import write_dicom_series

    client, tmp = service
    t1 = read(slice_nifti(tmp, "T1")).with_meta(modality="MR")
    (dcm,) = write_dicom_series(t1, tmp / "t1_dicom")
    pd = tmp / "pd_on_t1_grid.nii.gz"
    write(read(dcm).with_array(np.asarray(read(slice_nifti(tmp, "PD")).array)), pd)  # PD on the DICOM's own grid
    r = upload(client, [("T1", dcm.read_bytes()), ("PD", pd.read_bytes())])
    job = wait_done(client, r.json()["job_id"])
    assert job["status"] == "done", job
    result = client.get(f"/v1/studies/{job['id']}/results").json()
    assert set(result.get("dicom", {})) == {"sr"}, result.get("dicom")
    (tmp / "sr.dcm").write_bytes(client.get(f"/v1/studies/{job['id']}/dicom/sr").content)
    assert dciodvfy(tmp / "sr.dcm").errors == []
    call = read_call_sr(tmp / "sr.dcm")
    assert call["class"] == result["label"] and call["probabilities"] == pytest.approx(result["probabilities"])
    assert pydicom.dcmread(tmp / "sr.dcm").StudyInstanceUID == pydicom.dcmread(dcm).StudyInstanceUID


def test_a_job_stored_before_alignments_had_names_keeps_its_resampling(tmp_path) -> None:
    """Queued jobs written by the previous release said ``resample_to_first``: they are still resampled."""
    from medanomaly.deploy.service.worker import REQUEST_FILE, requested_alignment

    cases = [({"modalities": {}, "resample_to_first": True}, "resample"), ({"modalities": {}}, "none"),
             ({"alignment": "register"}, "register"), ({"alignment": "guess"}, "none")]  # fmt: skip
    for request, alignment in cases:
        (tmp_path / REQUEST_FILE).write_text(json.dumps(request))
        assert requested_alignment(tmp_path) == alignment, request
    (tmp_path / REQUEST_FILE).unlink()
    assert requested_alignment(tmp_path) == "none"
