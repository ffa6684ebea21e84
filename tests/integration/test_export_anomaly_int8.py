"""int8 export of ``anomaly`` runs (tiny, trained here on the real normal brains): the guard maps the
normal validation slices with SYNTHETIC lesions through the fp32 and int8 packages and refuses a
pixel AUROC drop above 0.005; the int8 package carries thresholds recomputed on its own maps of the
normal validation slices. The int8 map of a real tumour case (brain2) is close to, not equal to, fp32."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest




@pytest.fixture(scope="module")
def padim_run(tmp_path_factory: pytest.TempPathFactory, tiny_anomaly_run) -> Path:
    return tiny_anomaly_run(tmp_path_factory.mktemp("padim"), "padim")


def _check_int8_package(run: Path, pkg: Path, method: str) -> None:
    """Manifest, model.json and the brain2 maps of an int8 anomaly package."""
    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.deploy.package import load_package
    from medanomaly.io import read

    manifest = json.loads((pkg / "manifest.json").read_text())
    guard = manifest["int8"]
    assert {"model.onnx", "model.int8.onnx", "model.json"} <= set(manifest["sha256"]) and manifest["warnings"] == []
    assert guard["passed"] is True and guard["calibration_split"] == "validation" and guard["validation_synthetic"]
    assert guard["format"] == "QDQ" and guard["weights"].startswith("int8 per-channel") and guard["calibration_items"] >= 4
    assert 0 < guard["fp32"]["pixel_auroc"] <= 1 and guard["pixel_auroc_drop"] <= 0.005
    assert guard["image_auroc_drop"] is None  # a 3D run: no image AUROC on one validation brain
    th = guard["threshold"]
    run_info = json.loads((run / "model.json").read_text())
    assert th["fp32"]["decision"] == run_info["thresholds"]["decision"] and th["fp32_recomputed_max_abs_diff"] <= 1e-3
    assert 0 <= th["int8_pixel_fpr_at_fp32_threshold"] <= 0.05 and th["target_fpr"] == 0.01
    stored = json.loads((pkg / "model.json").read_text())["extra"]["int8_thresholds"]
    assert stored == th["int8"] == guard["int8_thresholds"] and stored["pixel"] != th["fp32"]["pixel"]
    fp32, int8 = load_package(pkg, "fp32"), load_package(pkg, "int8")
    assert int8.info.thresholds["decision"] == stored["decision"] and int8.info.thresholds["pixel"] == stored["pixel"]
    assert fp32.info.thresholds["decision"] == th["fp32"]["decision"]
    image = read(pyradiomics_case("brain2")[0])
    a, b = fp32.predict(image), int8.predict(image)
    ma, mb = np.asarray(a.anomaly_map.array), np.asarray(b.anomaly_map.array)
    # close (voxel-wise correlation, mean deviation), but not equal: int8 changed the map
    corr, rel = float(np.corrcoef(ma.ravel(), mb.ravel())[0, 1]), float(np.abs(ma - mb).mean() / np.abs(ma).mean())
    assert ma.max() > 0 and corr >= 0.99 and rel <= 0.1 and np.abs(ma - mb).max() > 0, (method, corr, rel)
    # The image score is the map's 99.9th percentile, an extreme value: a tiny PaDiM's int8 peaks moved it by
    # 17 % in one CI run while the map stayed within the bounds above, so only its sign and finiteness are checked.
    assert np.isfinite(b.scores[0]) and b.scores[0] > 0
    assert b.label == ("anomaly" if b.scores[0] > stored["decision"] else "normal")  # the int8 threshold decides


def test_int8_padim_package_is_guarded_and_close_to_fp32(padim_run: Path, tmp_path: Path) -> None:
    from medanomaly.deploy.export import export_run

    _check_int8_package(padim_run, export_run(padim_run, tmp_path / "pkg", int8=True), "padim")


def test_broken_calibration_is_refused_in_one_line_and_leaves_nothing(padim_run: Path, tmp_path: Path,
                                                                      monkeypatch, capsys) -> None:  # fmt: skip
    """Calibrating on black slices (every activation range collapsed) wrecks the int8 encoder: the
    guard refuses it (exit 2, one line with the drop) and no package or temporary folder is left."""
    from medanomaly.cli.app import main
    from medanomaly.deploy import export_anomaly

    real = export_anomaly._calibration_feeds

    def black(model, val, limit):
        return [{k: np.zeros_like(v) if v.dtype == np.float32 else v for k, v in f.items()}
                for f in real(model, val, limit)]  # fmt: skip

    monkeypatch.setattr(export_anomaly, "_calibration_feeds", black)
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["medanomaly", "export", str(padim_run), "-o", str(out / "pkg"), "--int8"])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1, err
    assert "int8 refused by the accuracy guard: synthetic-lesion validation pixel AUROC drops by" in err
    assert "limit 0.005" in err and "Traceback" not in err
    assert not out.exists() or list(out.iterdir()) == []


def test_force_keeps_a_refused_int8_graph_with_a_warning(padim_run: Path, tmp_path: Path, monkeypatch) -> None:
    """With a limit no int8 graph can meet (-1: any result is refused), ``force`` keeps the int8 graph
    and the manifest records the guard's complaint as a warning."""
    from medanomaly.deploy import quantise
    from medanomaly.deploy.export import export_run

    monkeypatch.setattr(quantise, "MAX_MAP_AUROC_DROP", -1.0)
    pkg = export_run(padim_run, tmp_path / "forced", int8=True, force=True)
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert manifest["int8"]["passed"] is False and "model.int8.onnx" in manifest["sha256"]
    assert len(manifest["warnings"]) == 1 and manifest["int8"]["warning"] == manifest["warnings"][0]
    assert manifest["warnings"][0].startswith("int8 kept with --force although the guard refused it: "
                                              "synthetic-lesion validation pixel AUROC drops by")  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("method", ["normative", "autoencoder", "draem"])
def test_int8_normative_autoencoder_and_draem_packages(method: str, tmp_path: Path, tiny_anomaly_run) -> None:
    from medanomaly.deploy.export import export_run

    run = tiny_anomaly_run(tmp_path, method)
    pkg = export_run(run, tmp_path / "pkg", int8=True)
    _check_int8_package(run, pkg, method)
    if method == "autoencoder":  # the graph is the network only: the residual map runs in NumPy, float64
        import onnx

        graph = onnx.load(str(pkg / "model.int8.onnx")).graph
        ops = [n.op_type for n in graph.node]
        assert [o.name for o in graph.output] == ["reconstruction"] and "AveragePool" not in ops, ops
        assert ops.count("QuantizeLinear") >= 3 and ops.count("DequantizeLinear") >= 3, ops
