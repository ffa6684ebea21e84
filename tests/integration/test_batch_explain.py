"""`predict RUN ARCHIVE --explain METHOD` (and `pacs` / `listen`): each call's explanation as a DICOM Parametric Map
beside its SR, the map `medanomaly explain` writes. A classifier on a PACS left no explanation anywhere a viewer reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medanomaly.deploy.dicom_call_sr import read_call_sr
from medanomaly.deploy.dicom_out import dciodvfy
from tests.integration.conftest import run_main
from tests.integration.test_service_api import cls_run  # noqa: F401 - fixture


def _archive(tmp_path: Path) -> Path:
    """pydicom's real CT and MR slices, each a series of its own, in an archive folder."""
    root = tmp_path / "archive"
    for name in ("CT_small.dcm", "MR_small.dcm"):
        (root / name.split("_")[0]).mkdir(parents=True)
        shutil.copy(get_testdata_file(name), root / name.split("_")[0] / name)
    return root


def test_each_series_call_gets_its_explanation_as_a_parametric_map(tmp_path, cls_run, monkeypatch, capsys):  # noqa: F811
    from medanomaly.engine import load_model
    from medanomaly.explain.maps import explain
    from medanomaly.io import read

    out, archive = tmp_path / "out", _archive(tmp_path)
    sources = sorted(archive.rglob("*.dcm"))
    code, _, err = run_main(monkeypatch, capsys, "predict", str(cls_run), str(archive), "--out", str(out),
                            "--explain", "gradcam")  # fmt: skip
    assert code == 0, err
    records = [json.loads(p.read_text()) for p in sorted((out / "series").glob("*.json"))]
    assert len(records) == 2
    model = load_model(cls_run)
    ex = model.explainable()
    for record in records:
        assert record["status"] == "done" and set(record["dicom"]) == {"sr", "parametric_map"}, record
        assert record["explanation"] == {"method": "gradcam", "class": record["prediction"]["label"]}
        pm_path, sr_path = out / record["dicom"]["parametric_map"], out / record["dicom"]["sr"]
        assert dciodvfy(pm_path).errors == [] and read_call_sr(sr_path)["class"] == record["prediction"]["label"]
        pm = pydicom.dcmread(pm_path)
        series = pm.ReferencedSeriesSequence[0].SeriesInstanceUID
        (source,) = [p for p in sources if pydicom.dcmread(p).SeriesInstanceUID == series]
        expected = explain(ex.model, read(source), "gradcam", target=ex.target, preprocess=ex.preprocess,
                           output_fn=ex.output_fn)  # fmt: skip
        stored = np.asarray(pm.pixel_array, np.float64).reshape(-1)
        assert stored == pytest.approx(np.asarray(expected.array, np.float64).reshape(-1), abs=1e-4)


def test_explain_options_no_batch_can_use_are_one_line_before_the_work(tmp_path, cls_run, monkeypatch, capsys):  # noqa: F811
    archive = _archive(tmp_path)
    for args, words in (([str(archive), "--explain", "bogus"], "error: --explain bogus: unknown explainer 'bogus'"),
                        ([str(archive / "CT" / "CT_small.dcm"), "--explain", "gradcam"],
                         "--explain explains each series of an archive (a folder)")):  # fmt: skip
        code, _, err = run_main(monkeypatch, capsys, "predict", str(cls_run), *args, "--out", str(tmp_path / "o"))
        assert code == 2 and words in err and err.count("\n") == 1, err
        assert not (tmp_path / "o" / "series").exists()
