"""The service's DICOM outputs: a DICOM upload's findings as SEG, RT Structure Set and SR; a classifier's call as an SR."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medanomaly.deploy.service.app import ServiceConfig, create_app
from medanomaly.deploy.service.tokens import new_token
from tests.integration.test_service_api import cls_run, post, service, wait_done  # noqa: F401 - fixtures

pytestmark = pytest.mark.xdist_group("service")


class _LesionModel:
    """A stand-in lung model: one finding, a 10 x 10 pixel square on slices 1-2, measured as the real ones are."""

    task, class_names = "lung_nodule", ("nodule",)

    def __init__(self) -> None:
        from types import SimpleNamespace

        self.info = SimpleNamespace(input={"spatial_dims": 3})

    def check_input(self, volume, path=None) -> None:
        return None

    def predict(self, volume):
        from medanomaly.quantify.measure import measure_lesions
        from medanomaly.types import Prediction

        mask = np.zeros(volume.shape, np.uint8)
        mask[1:3, 200:210, 200:210] = 1
        findings = tuple(measure_lesions(volume.with_array(mask), volume, label="nodule"))
        return Prediction(scores=(1.0,), class_names=self.class_names, label="nodule", findings=findings)


def test_a_dicom_upload_gets_dicom_seg_rtstruct_and_sr_of_its_findings(tmp_path):
    """The service answered a DICOM upload with NIfTI masks and JSON only: a DICOM viewer (OHIF) or a PACS could take
    none of it. Its findings are now also DICOM SEG, RT Structure Set and SR referencing the uploaded series (as
    `predict --dicom` and the PACS bridge write them), served under /v1/studies/{id}/dicom/{kind}; valid for dciodvfy."""
    import pydicom
    from fastapi.testclient import TestClient

    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.deploy.dicom_out import dciodvfy
    from medanomaly.io import read
    from medanomaly.io.dicom_writer import write_dicom_series
    from medanomaly.types import Volume

    ct = read(pyradiomics_case("lung1")[0])
    part = Volume(np.asarray(ct.array)[20:24], spacing=ct.spacing, origin=ct.origin, direction=ct.direction,
                  meta={"modality": "CT"})
    files = write_dicom_series(part, tmp_path / "ct")
    series_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    tokens = tmp_path / "tokens.json"
    token = new_token(tokens)
    app = create_app(ServiceConfig(models={"lung": _LesionModel()}, data_dir=tmp_path / "data", tokens=tokens))
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
        r = client.post("/v1/studies?model=lung", files=[("files", (f"f{i}", f.read_bytes())) for i, f in enumerate(files)])
        job = wait_done(client, r.json()["job_id"], timeout=120)
        assert job["status"] == "done", job
        assert set(client.get(f"/v1/studies/{job['id']}/results").json()["dicom"]) == {"seg", "rtstruct", "sr"}
        for kind in ("seg", "rtstruct", "sr"):
            reply = client.get(f"/v1/studies/{job['id']}/dicom/{kind}")
            assert reply.status_code == 200 and reply.headers["content-type"] == "application/dicom", kind
            (tmp_path / f"{kind}.dcm").write_bytes(reply.content)
            assert dciodvfy(tmp_path / f"{kind}.dcm").errors == [], kind
        seg = pydicom.dcmread(tmp_path / "seg.dcm")
        assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
        missing = client.get(f"/v1/studies/{job['id']}/dicom/parametric_map")
        assert missing.status_code == 404 and "no DICOM parametric_map" in missing.json()["detail"]


def test_a_classifiers_call_on_a_dicom_upload_is_a_dicom_sr_of_its_class_and_probabilities(service):  # noqa: F811
    """A classifier's call on a DICOM upload left nothing in DICOM (SEG and SR were written for findings only): the
    call is now an SR (TID 1500) of the class and each class's probability, in the upload's study, valid for
    dciodvfy, read back equal to the JSON result. pydicom's real CT slice (CT_small.dcm) into the 2D classifier."""
    import pydicom
    from pydicom.data import get_testdata_file

    from medanomaly.deploy.dicom_call_sr import read_call_sr
    from medanomaly.deploy.dicom_out import dciodvfy

    client, *_, tmp = service
    source = Path(get_testdata_file("CT_small.dcm"))
    job = wait_done(client, post(client, [source.read_bytes()]).json()["job_id"])
    assert job["status"] == "done", job
    result = client.get(f"/v1/studies/{job['id']}/results").json()
    assert set(result["dicom"]) == {"sr"}, result.get("dicom")
    (tmp / "sr.dcm").write_bytes(client.get(f"/v1/studies/{job['id']}/dicom/sr").content)
    assert dciodvfy(tmp / "sr.dcm").errors == []
    call = read_call_sr(tmp / "sr.dcm")
    assert call["class"] == result["label"] and call["probabilities"] == pytest.approx(result["probabilities"])
    assert pydicom.dcmread(tmp / "sr.dcm").StudyInstanceUID == pydicom.dcmread(source).StudyInstanceUID
