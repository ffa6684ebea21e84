"""The demo machinery and its ``scans`` step, on a few small real scans (the full run is `make demo`)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from medanomaly.demo import DEMO_STEPS, run_demo, scans
from medanomaly.types import Volume

SMALL = (
    scans.EmbeddedScan("CT_small", "pydicom/CT_small.dcm", None, "soft", "CT slice"),
    scans.EmbeddedScan("T1 slice", "itk/BrainT1Slice.png", "MR", None, "brain MRI T1"),
    scans.EmbeddedScan("broken", "pydicom/MR_truncated.dcm", None, None, "a truncated file"),
)


def test_demo_steps_run_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(scans, "EMBEDDED_SCANS", SMALL)
    out = io.StringIO()
    ctx = run_demo(tmp_path, steps=[("scans", "medanomaly.demo.scans:run")], console=Console(file=out, width=160))
    rows = ctx.results["scans"]
    assert [r["name"] for r in rows] == ["CT_small", "T1 slice"]  # the broken one is skipped
    text = out.getvalue()
    assert "skipped broken" in text and "truncated DICOM" in text and "CT_small" in text
    ct = rows[0]
    assert ct["modality"] == "CT" and ct["units"] == "HU" and ct["shape"] == [1, 128, 128]
    assert json.loads((tmp_path / "scans.json").read_text()) == rows
    sheet = Image.open(tmp_path / "contact_sheet.png")
    assert sheet.size[0] > 500 and np.asarray(sheet).std() > 10  # an actual picture, not blank
    assert DEMO_STEPS[0] == ("scans", "medanomaly.demo.scans:run")


def test_demo_display_slice_window_and_orientation():
    from medanomaly.data.sources import real_data
    from medanomaly.io import read

    ct = Volume(np.array([[[-1000, 40, 240, 2000]]], np.int16), meta={"modality": "CT"})
    plane, aspect = scans.display_slice(ct, "soft")
    np.testing.assert_array_equal(plane, [[0, 128, 255, 255]])
    brain = read(real_data("mricron/ch2.nii.gz"))  # NIfTI: x and y index axes point right/anterior
    lps = scans.reorient_lps(brain)
    np.testing.assert_allclose(lps.direction, np.eye(3), atol=1e-6)
    for idx in [(10, 20, 30), (100, 150, 90)]:  # same voxel values at the same physical points
        point = lps.index_to_physical(idx)
        i = np.round(brain.physical_to_index(point)).astype(int)
        assert lps.array[idx[2], idx[1], idx[0]] == brain.array[i[2], i[1], i[0]]


def test_demo_retina_is_one_rgb_slice():
    vol = scans.load_scan(scans.EmbeddedScan("retina", "skimage/retina", "OP"))
    assert vol.shape == (1, 1411, 1411) and vol.n_components == 3 and vol.modality == "OP"


def test_demo_unknown_step_is_a_one_line_error():
    from typer.testing import CliRunner

    from medanomaly.cli.app import app
    from medanomaly.errors import InputError

    result = CliRunner().invoke(app, ["demo", "--only", "nope"])
    assert isinstance(result.exception, InputError) and "unknown demo step" in str(result.exception)


@pytest.mark.parametrize("scan", scans.EMBEDDED_SCANS, ids=lambda s: s.name)
def test_demo_every_embedded_scan_resolves(scan):
    """Every scan the demo shows exists (real data is installed by `make setup`, never skipped)."""
    if scan.key.startswith("skimage/"):
        return
    from medanomaly.data.sources import real_data

    assert real_data(scan.key).exists()


def test_demo_contact_sheet_blanks_burned_in_ultrasound_text():
    from medanomaly.privacy.burned_in import detect_text_regions

    us = next(s for s in scans.EMBEDDED_SCANS if s.name == "US1")
    vol = scans.load_scan(us)
    plane, _ = scans.display_slice(vol, us.window)
    assert len(detect_text_regions(plane)) >= 3  # the real file carries burned-in (fake) patient text
    cleaned = scans.blank_burned_in_text(plane, vol)
    assert detect_text_regions(cleaned) == []
    assert np.mean(np.any(cleaned != plane, axis=-1)) < 0.15  # the image itself is kept


def test_demo_out_that_is_a_file_is_one_line_before_any_step(tmp_path, monkeypatch, capsys):
    """`medanomaly demo --out FILE` was a FileExistsError traceback."""
    import sys

    from medanomaly.cli.app import main

    blocker = tmp_path / "afile"
    blocker.write_text("x")
    monkeypatch.setattr(sys, "argv", ["medanomaly", "demo", "--only", "scans", "--out", str(blocker)])
    with pytest.raises(SystemExit) as code:
        main()
    assert code.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: {blocker}: cannot write the output folder (File exists)"
