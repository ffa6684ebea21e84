"""Export of ``anomaly`` runs (tiny, trained here on the real normal brains): for each method the
package's anomaly map and score equal the torch run's within 1e-4 on a real tumour case (brain2),
through the engine, the ``predict`` verb, and without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from medanomaly.cli.app import app
from medanomaly.errors import InputError

ROOT = Path(__file__).resolve().parents[2]



@pytest.mark.parametrize("method", ["normative", "autoencoder", "padim", "draem"])
def test_anomaly_package_matches_torch(method: str, tmp_path: Path, predict_without_torch, tiny_anomaly_run) -> None:
    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.deploy.export import export_run
    from medanomaly.engine import load_model
    from medanomaly.io import read

    run = tiny_anomaly_run(tmp_path, method)
    pkg = export_run(run, tmp_path / "pkg")  # int8: test_export_anomaly_int8.py
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert manifest["method"] == method and manifest["fp32_max_abs_diff"] <= 1e-4 and manifest["validation_items"] >= 4
    side = {"padim_mean.npy", "padim_inv_cov.npy"} if method == "padim" else set()
    assert set(manifest["sha256"]) == {"model.onnx", "model.json"} | side
    image_path, _ = pyradiomics_case("brain2")
    image = read(image_path)
    a, b = load_model(run).predict(image), load_model(pkg).predict(image)
    ma, mb = np.asarray(a.anomaly_map.array), np.asarray(b.anomaly_map.array)
    assert ma.max() > 0 and np.abs(ma - mb).max() <= 1e-4 and b.anomaly_map.same_grid(a.anomaly_map)
    assert abs(a.scores[0] - b.scores[0]) <= 1e-4 and a.label == b.label and a.flags == b.flags
    # the predict verb takes the package; without torch the package gives the same score
    res = CliRunner().invoke(app, ["predict", str(pkg), str(image_path), "--json"])
    assert res.exit_code == 0, res.output
    assert abs(predict_without_torch(pkg, image_path)["scores"][0] - a.scores[0]) <= 1e-4


def test_padim_arrays_are_checked_and_never_unpickled(tmp_path: Path) -> None:
    """A pickled object array in place of the Gaussian is refused (checksum first; np.load without pickle)."""
    from medanomaly.deploy.onnx_anomaly import _load_npy

    path = tmp_path / "padim_mean.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="package file unreadable: padim_mean.npy"):
        _load_npy(path)


def test_padim_gaussian_of_the_wrong_shape_or_values_is_one_line(tmp_path: Path, tiny_anomaly_run, monkeypatch,
                                                                 capsys) -> None:  # fmt: skip
    """A PaDiM package whose Gaussian does not fit (checksums recomputed by whoever wrote it): arrays of another shape,
    NaN, integers, or a Gaussian for another feature grid than the graph's: one line naming the package, exit 2."""
    import hashlib
    import shutil

    from medanomaly.cli.app import main
    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.deploy.export import export_run
    from medanomaly.deploy.package import load_package
    from medanomaly.io import read

    pkg = export_run(tiny_anomaly_run(tmp_path, "padim"), tmp_path / "pkg")
    mean, inv_cov = np.load(pkg / "padim_mean.npy"), np.load(pkg / "padim_inv_cov.npy")
    p, c = mean.shape
    cases = {
        "shape": ({"padim_inv_cov.npy": inv_cov[:, :, :1]}, "do not make one Gaussian"),
        "nan": ({"padim_mean.npy": np.full_like(mean, np.nan)}, "finite floating-point"),
        "ints": ({"padim_mean.npy": mean.astype(np.int64)}, "finite floating-point"),
        "grid": ({"padim_mean.npy": mean[: p // 2], "padim_inv_cov.npy": inv_cov[: p // 2]}, "feature positions"),
    }
    image = read(pyradiomics_case("brain2")[0])
    for case, (arrays, reason) in cases.items():
        bad = shutil.copytree(pkg, tmp_path / case)
        manifest = json.loads((bad / "manifest.json").read_text())
        for name, arr in arrays.items():
            np.save(bad / name, arr)
            manifest["sha256"][name] = hashlib.sha256((bad / name).read_bytes()).hexdigest()
        (bad / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(InputError, match=reason):
            load_package(bad).predict(image)
        monkeypatch.setattr(sys, "argv", ["medanomaly", "predict", str(bad), str(pyradiomics_case("brain2")[0])])
        with pytest.raises(SystemExit) as exc:
            main()
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.count("\n") == 1 and err.startswith(f"error: {bad}"), (case, err)


def test_anomaly_model_json_values_no_training_writes_are_one_line(tmp_path: Path, tiny_anomaly_run) -> None:
    """A normative run and its package whose model.json (checksum recomputed) carries a grid size of 10^6 pixels (it
    allocated terabytes), a negative one, a negative sigma or one of 1e308 (an OverflowError in SciPy's Gaussian), a
    method that is not a {name, params} mapping (an AttributeError), a z_bins of 10^30 (a TypeError in np.isfinite), an
    unknown domain, or a parameter the method does not take: one InputError naming model.json, before any image is
    read."""
    import hashlib
    import shutil

    from medanomaly.deploy.export import export_run
    from medanomaly.engine import load_model

    run = tiny_anomaly_run(tmp_path, "normative")
    pkg = export_run(run, tmp_path / "pkg")
    cases = {
        "huge": (lambda i: i["extra"].update(size=10**6), "grid size must be a whole number"),
        "negative": (lambda i: i["extra"].update(size=-5), "grid size must be a whole number"),
        "sigma": (lambda i: i["thresholds"].update(sigma=-1.0), r"smoothing \(sigma\) must be 0\.\.100"),
        "sigma_huge": (lambda i: i["thresholds"].update(sigma=1e308), r"smoothing \(sigma\) must be 0\.\.100"),
        "method_none": (lambda i: i["extra"].update(method=None), "recorded method must be {name, params}"),
        "params_list": (lambda i: i["extra"]["method"].update(params=[]), "recorded method must be {name, params}"),
        "bins_huge": (lambda i: i["extra"]["method"]["params"].update(z_bins=10**30), "z_bins must be a whole number"),
        "domain": (lambda i: i["extra"]["domain"].update(name="../../etc"), "unknown recorded data domain"),
        "param": (lambda i: i["extra"]["method"]["params"].update(evil=1), "evil"),
    }
    for case, (edit, reason) in cases.items():
        for source in (run, pkg):
            bad = shutil.copytree(source, tmp_path / f"{case}_{source.name}")
            info = json.loads((bad / "model.json").read_text())
            edit(info)
            (bad / "model.json").write_text(json.dumps(info))
            if source == pkg:
                manifest = json.loads((bad / "manifest.json").read_text())
                manifest["sha256"]["model.json"] = hashlib.sha256((bad / "model.json").read_bytes()).hexdigest()
                (bad / "manifest.json").write_text(json.dumps(manifest))
            with pytest.raises(InputError, match=reason) as err:
                load_model(bad)
            assert err.value.path == bad / "model.json", (case, source.name)


def test_autoencoder_package_with_the_map_in_its_graph_is_refused(tmp_path: Path) -> None:
    """An earlier export's autoencoder graph (output ``map``, the float32 residual map) is refused in one
    line by the loader: its map is not the run's float64 map; a ``reconstruction`` graph is accepted."""
    import onnx
    from onnx import TensorProto, helper

    from medanomaly.deploy.onnx_anomaly import OnnxAutoencoder, onnx_method
    from medanomaly.deploy.onnx_model import session
    from medanomaly.engine.run import RunInfo

    info = RunInfo.model_construct(extra={"method": {"name": "autoencoder", "params": {"ssim_weight": 0.25}}})
    for output, refused in (("map", True), ("reconstruction", False)):
        graph = helper.make_graph([helper.make_node("Identity", ["input"], [output])], "g",
                                  [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 1, 8, 8])],
                                  [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["n", 1, 8, 8])])  # fmt: skip
        path = tmp_path / f"{output}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        if refused:
            with pytest.raises(InputError, match="holds the residual map in its graph .* export the run again"):
                onnx_method(session(path), info, tmp_path)
        else:
            method = onnx_method(session(path), info, tmp_path)
            assert isinstance(method, OnnxAutoencoder) and method.ssim_weight == 0.25
            images = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
            assert np.abs(method.score(images, np.ones((2, 8, 8), bool), np.zeros(2))).max() < 1e-6


def test_atlas_run_export_is_refused_in_one_line(tmp_path: Path, monkeypatch) -> None:
    """An ``atlas`` run (its validation stubbed: one synthetic brain stored) predicts through the engine and is
    refused by export in one line, exit 2."""
    from medanomaly.anomaly import atlas, atlas_validation
    from medanomaly.engine import load_model, train_run
    from medanomaly.types import Volume

    zz, yy, xx = np.mgrid[:40, :48, :48]
    head = Volume(np.where(((zz - 20) / 18) ** 2 + ((yy - 24) / 20) ** 2 + ((xx - 24) / 18) ** 2 < 1,
                           150 + 20 * np.sin(xx / 4.0), 0).astype(np.float32), spacing=(2.0, 2.0, 2.0))  # fmt: skip

    def fake_fit(method, config):
        method.brains_ = [atlas.atlas_brain(head, 2.0)]
        return {"sigma": 0.0, "pixel_threshold": 1.0, "image_threshold": 1.0, "log": {}}

    monkeypatch.setattr(atlas_validation, "fit_volumes", fake_fit)
    cfg = yaml.safe_load((ROOT / "configs" / "anomaly_tiny.yaml").read_text())
    cfg["method"] = {"name": "atlas", "params": {}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    run = train_run(tmp_path / "cfg.yaml", tmp_path / "run")
    pred = load_model(run).predict(head.with_meta(modality="MR"))  # the engine path: a map on the input grid
    assert pred.anomaly_map.same_grid(head) and pred.label in ("anomaly", "normal") and pred.flags == ()
    assert not pred.abstained
    model = load_model(run)
    model.method.min_dice = 1.01  # no registration can pass: the map rests on a misaligned brain, so no call
    failed = model.predict(head.with_meta(modality="MR"))
    assert failed.abstained and failed.decision == "abstain" and failed.anomaly_map is not None
    assert "quality_check_failed:no_atlas_registration_passed" in failed.flags
    from medanomaly.cli.predict import _format_prediction

    assert "ABSTAIN (a quality check failed; top class " in _format_prediction(Path("head.nii.gz"), failed)
    result = CliRunner().invoke(app, ["export", str(run), "--out", str(tmp_path / "pkg")])
    assert isinstance(result.exception, InputError) and "the atlas method cannot be exported" in str(result.exception)
    assert not (tmp_path / "pkg").exists()
    proc = subprocess.run([sys.executable, "-m", "medanomaly.cli.app", "export", str(run), "--out", str(tmp_path / "p")],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2 and "the atlas method cannot be exported" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("method", ["normative", "padim"])
def test_recorded_parameters_that_do_not_fit_the_saved_arrays_are_one_line(method: str, tmp_path: Path,
                                                                             tiny_anomaly_run) -> None:
    """A run whose model.json asks for other ``z_bins`` / ``channels`` (or none: the method's defaults) or another grid
    ``size`` than its saved arrays were made for indexed past them at the first slice (IndexError, einsum ValueError);
    now one InputError naming the weights when the run is loaded."""
    import shutil

    from medanomaly.engine import load_model

    run = tiny_anomaly_run(tmp_path, method)
    edits = {"params": lambda i: i["extra"]["method"].update(params={"z_bins": 5} if method == "normative" else {}),
             "size": lambda i: i["extra"].update(size=48)}
    for case, edit in edits.items():
        bad = shutil.copytree(run, tmp_path / case)
        info = json.loads((bad / "model.json").read_text())
        edit(info)
        (bad / "model.json").write_text(json.dumps(info))
        with pytest.raises(InputError, match="do not fit") as err:
            load_model(bad)
        assert err.value.path == bad / "weights.safetensors", case


@pytest.mark.parametrize("value", [np.nan, np.inf, 1e30])
def test_weights_that_are_not_finite_or_overflow_are_one_line_not_the_images_fault(value: float, tmp_path: Path,
                                                                                    tiny_anomaly_run) -> None:
    """PaDiM weights holding NaN / infinity gave a NaN map, reported as "brain2_image.nrrd: resample: image has 302670
    NaN/infinite voxels" after two SciPy warnings; NaN / infinite arrays are now refused when the run is loaded, and
    finite weights that overflow (1e30) are one line about the model's map."""
    import shutil

    from safetensors.numpy import load_file, save_file

    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.engine import load_model
    from medanomaly.io import read

    run = shutil.copytree(tiny_anomaly_run(tmp_path, "padim"), tmp_path / "bad")
    state = load_file(str(run / "weights.safetensors"))
    key = "net.encode.encode_1.conv.bias"  # 1e30 here overflows the features to NaN
    state[key] = np.full_like(state[key], value)
    save_file(state, str(run / "weights.safetensors"))
    if not np.isfinite(value):
        with pytest.raises(InputError, match=f"weights hold NaN or infinite values \\(array '{key}'\\)") as err:
            load_model(run)
        assert err.value.path == run / "weights.safetensors"
        return
    with pytest.raises(InputError, match="NaN or infinite value\\(s\\) in the model's anomaly map"):
        load_model(run).predict(read(pyradiomics_case("brain2")[0]))
