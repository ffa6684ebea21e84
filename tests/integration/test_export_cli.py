"""``medanomaly export`` end to end: export a tiny run, predict with the package through the
unchanged ``predict`` verb, and the one-line refusals (unfinished run, tampered package, exists)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from medanomaly.cli.app import app
from medanomaly.errors import InputError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "deploy"))
from test_export import _classify_config  # noqa: E402

runner = CliRunner()


def test_export_cli_predict_and_refusals(tmp_path: Path) -> None:
    cfg = _classify_config(tmp_path)
    run = tmp_path / "run"
    assert runner.invoke(app, ["train", str(cfg), "--out", str(run)]).exit_code == 0
    pkg = tmp_path / "pkg"
    res = runner.invoke(app, ["export", str(run), "--out", str(pkg), "--int8", "--calibration", "8", "--force"])
    assert res.exit_code == 0, res.output
    assert "max |onnx - torch|" in res.output and "int8: guard" in res.output
    image = str(tmp_path / "img/p0.nrrd")
    a = runner.invoke(app, ["predict", str(run), image, "--json"])
    b = runner.invoke(app, ["predict", str(pkg), image, "--json"])
    assert a.exit_code == 0 and b.exit_code == 0, b.output
    ja, jb = json.loads(a.output), json.loads(b.output)
    assert ja["label"] == jb["label"] and max(abs(ja["probabilities"][k] - jb["probabilities"][k]) for k in ja["probabilities"]) <= 1e-4
    # the package exists already: one line, exit 2
    res = runner.invoke(app, ["export", str(run), "--out", str(pkg)])
    assert isinstance(res.exception, InputError) and "already exists" in str(res.exception)  # main(): exit 2
    # tampered package: the real CLI prints one line naming the file and exits 2
    (pkg / "model.onnx").write_bytes((pkg / "model.onnx").read_bytes() + b"x")
    proc = subprocess.run([sys.executable, "-m", "medanomaly.cli.app", "predict", str(pkg), image],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2 and "checksum mismatch: model.onnx" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    # unfinished run
    (run / "status.json").write_text(json.dumps({"status": "running"}))
    res = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "p2")])
    assert isinstance(res.exception, InputError) and "did not finish" in str(res.exception)
