"""Ray Data path (local Ray, 2 workers) gives the same results as the one-machine path."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from medanomaly.deploy.batch import BatchOptions, run_batch

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _table(out: Path) -> list[dict]:
    with (out / "results.csv").open() as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


def _predictions(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()).get("prediction") for p in (out / "series").glob("*.json")}


def test_ray_local_two_workers_equals_one_machine(tmp_path: Path, fake_module) -> None:
    import ray.cloudpickle

    from medanomaly.deploy.demo_archive import build_archive

    ray.cloudpickle.register_pickle_by_value(fake_module)  # the test model is not an installed module
    archive = build_archive(tmp_path / "archive", n_series=5, n_corrupt=1, extras=False, seed=1)
    options = BatchOptions()  # DICOM outputs included
    local = run_batch(fake_module.FakeDetector(), archive.root, tmp_path / "local", options, progress=False)
    on_ray = run_batch(fake_module.FakeDetector(), archive.root, tmp_path / "ray", options, progress=False,
                       engine="ray", workers=2)  # fmt: skip
    assert local.counts == on_ray.counts == {"done": 4, "error": 1}
    assert _table(tmp_path / "local") == _table(tmp_path / "ray")
    assert _predictions(tmp_path / "local") == _predictions(tmp_path / "ray")
    for uid in archive.good:
        a = (tmp_path / "local" / "dicom" / uid / "seg.dcm")
        b = (tmp_path / "ray" / "dicom" / uid / "seg.dcm")
        import pydicom

        sa, sb = pydicom.dcmread(a), pydicom.dcmread(b)
        assert sa.SOPInstanceUID == sb.SOPInstanceUID and sa.PixelData == sb.PixelData
    # a rerun on Ray reuses everything
    again = run_batch(fake_module.FakeDetector(), archive.root, tmp_path / "ray", options, progress=False,
                      engine="ray", workers=2)  # fmt: skip
    assert again.processed == 0 and again.reused == 5
