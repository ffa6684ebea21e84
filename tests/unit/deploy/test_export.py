"""Export to ONNX: fp32 matches torch within 1e-4 on validation for every task, the package is
checksummed and loads behind the engine contract without torch, int8 sits behind its guard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from medanomaly.errors import InputError

ROOT = Path(__file__).resolve().parents[3]


def _classify_config(root: Path) -> Path:
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    rows = ["path,label,patient_id"]
    for p in range(16):
        label = ("normal", "abnormal")[p % 2]
        img = rng.normal(100, 10, (16, 16)).astype(np.float32)
        if label == "abnormal":
            img[5:11, 5:11] += 80
        sitk.WriteImage(sitk.GetImageFromArray(img), str(root / f"img/p{p}.nrrd"))
        rows.append(f"img/p{p}.nrrd,{label},P{p}")
    (root / "m.csv").write_text("\n".join(rows) + "\n")
    cfg = {
        "task": "classification", "name": "exp", "seed": 0,
        "data": {"dataset": {"name": "manifest", "params": {"csv": str(root / "m.csv")}},
                 "class_names": ["normal", "abnormal"], "image_size": [16, 16],
                 "val_fraction": 0.5, "test_fraction": 0.25},
        "model": {"name": "compact_cnn_dw", "params": {"widths": [4, 8], "hidden": 0}},
        "ensemble": {"members": 2},
        "train": {"epochs": 2, "batch_size": 4, "progress": False},
        "evaluate": {"n_bootstrap": 10, "tta": True},
    }  # fmt: skip
    path = root / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from medanomaly.engine import train_run

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cls")
    return train_run(_classify_config(root), root / "run")


@pytest.fixture(scope="module")
def cls_pkg(cls_run: Path) -> Path:
    from medanomaly.deploy.export import export_run

    return export_run(cls_run, cls_run.parent / "pkg")


def test_a_library_callers_image_is_checked_as_the_cli_checks_it(cls_run: Path, cls_pkg: Path) -> None:
    """``load_model(run).predict(volume)`` (the README's Python API) skipped the checks ``medanomaly predict`` makes:
    a 1 x 1 picture and a 2 x 2 x 2 volume were called, and a NumPy array or a file name failed deep in the task's code
    (``'numpy.ndarray' object has no attribute 'spacing'``). Torch run and ONNX package alike, and predict_many."""
    from medanomaly.engine import load_model
    from medanomaly.types import Volume

    good = Volume(np.random.default_rng(0).random((16, 16)).astype(np.float32))
    for model in (load_model(cls_run), load_model(cls_pkg)):
        assert model.predict(good).label in model.class_names
        for tiny in (Volume(np.zeros((1, 1, 1), np.float32)), Volume(np.zeros((2, 2, 2), np.float32))):
            with pytest.raises(InputError, match="image too small"):
                model.predict(tiny)
            with pytest.raises(InputError, match="image too small"):
                model.predict_many([good, tiny])
        with pytest.raises(TypeError, match=r"a model predicts a medanomaly.Volume .*got ndarray"):
            model.predict(good.array)  # type: ignore[arg-type]


def test_classification_package_matches_torch(cls_run: Path, cls_pkg: Path) -> None:
    from medanomaly.deploy.export import OPSET
    from medanomaly.deploy.validation import validation_data
    from medanomaly.engine import load_model
    from medanomaly.io import read

    manifest = json.loads((cls_pkg / "manifest.json").read_text())
    assert manifest["onnx_opset"] == OPSET >= 17 and manifest["source_run"] == "run"
    assert set(manifest["sha256"]) == {"model.onnx", "model.json"} and manifest["fp32_max_abs_diff"] <= 1e-4
    torch_model, onnx_model = load_model(cls_run), load_model(cls_pkg)  # the engine accepts a package
    assert onnx_model.task == "classification" and onnx_model.class_names == torch_model.class_names
    # the validation split through the graph, batched (dynamic batch axis), against the calibrated classifier
    val = validation_data(cls_run, "classification")
    ref = torch_model.classifier.predict_proba(val.inputs)
    got = onnx_model.classifier.predict_proba(val.inputs)
    assert len(val.inputs) >= 4 and np.abs(ref - got).max() <= 1e-4
    # whole predictions from files: same probabilities, labels and abstention
    volumes = [read(cls_run.parent / f"img/p{i}.nrrd") for i in range(6)]
    for a, b in zip(torch_model.predict_many(volumes), onnx_model.predict_many(volumes), strict=True):
        assert np.abs(np.subtract(a.scores, b.scores)).max() <= 1e-4
        assert (a.label, a.abstained) == (b.label, b.abstained)


def test_tampered_package_is_refused(cls_pkg: Path, tmp_path: Path) -> None:
    import shutil

    from medanomaly.deploy.package import load_package

    bad = tmp_path / "bad"
    shutil.copytree(cls_pkg, bad)
    info = json.loads((bad / "model.json").read_text())
    info["thresholds"]["decision"] = 0.01
    (bad / "model.json").write_text(json.dumps(info))
    with pytest.raises(InputError, match="checksum mismatch: model.json"):
        load_package(bad)
    shutil.rmtree(bad)
    shutil.copytree(cls_pkg, bad)
    (bad / "model.onnx").unlink()
    with pytest.raises(InputError, match="package file missing: model.onnx"):
        load_package(bad)


def _repackaged(cls_pkg: Path, folder: Path, name: str, data: bytes) -> Path:
    """A copy of ``cls_pkg`` whose file ``name`` holds ``data``, its checksum recomputed: a package someone else
    wrote, which the manifest cannot catch."""
    import hashlib
    import shutil

    shutil.copytree(cls_pkg, folder)
    (folder / name).write_bytes(data)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["sha256"][name] = hashlib.sha256(data).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_a_hostile_or_broken_graph_is_one_line(cls_pkg: Path, tmp_path: Path) -> None:
    """Graphs that pass the checksum (recomputed) but are truncated, read weights from outside the package, or do not
    fit the package's inputs and classes: each is one InputError naming the graph file, never a traceback."""
    import onnx
    from onnx import TensorProto, helper
    from onnx.external_data_helper import set_external_data

    from medanomaly.deploy.package import load_package
    from medanomaly.types import Volume

    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"x" * 4096)
    outside = onnx.load(cls_pkg / "model.onnx")
    weight = max(outside.graph.initializer, key=lambda t: len(t.raw_data))
    set_external_data(weight, location=str(secret), offset=0, length=len(weight.raw_data))
    weight.ClearField("raw_data")

    def graph(in_type: int, in_shape: list[Any], out_shape: list[Any], name: str = "input") -> Any:
        g = helper.make_graph([helper.make_node("Identity", [name], ["out"])], "g",
                              [helper.make_tensor_value_info(name, in_type, in_shape)],
                              [helper.make_tensor_value_info("out", in_type, out_shape)])  # fmt: skip
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)

    image = Volume(np.random.default_rng(0).random((1, 16, 16)).astype(np.float32))
    cases = {
        "truncated": ((cls_pkg / "model.onnx").read_bytes()[:3000], "cannot load this graph: .*Protobuf parsing failed"),
        "outside": (outside, "cannot load this graph: External data path validation failed .*Absolute path"),
        "rank": (graph(TensorProto.FLOAT, ["N", 2], ["N", 2]), "cannot run this graph .*Invalid rank for input"),
        "dtype": (graph(TensorProto.INT64, ["N", 1, 16, 16], ["N", 1, 16, 16]), "cannot run this graph .*data type"),
        "name": (graph(TensorProto.FLOAT, ["N", 2], ["N", 2], name="x"), "cannot run this graph"),
        "identity": (graph(TensorProto.FLOAT, ["N", 1, 16, 16], ["N", 1, 16, 16]),
                     r"output has shape \(1, 1, 16, 16\), the package needs \(1, 2\)"),
    }  # fmt: skip
    for case, (model, reason) in cases.items():
        pkg = _repackaged(cls_pkg, tmp_path / case, "model.onnx", model if isinstance(model, bytes) else model.SerializeToString())
        with pytest.raises(InputError, match=reason) as err:
            load_package(pkg).predict(image)
        assert err.value.path == pkg / "model.onnx" and "\n" not in str(err.value), case


def test_a_hostile_model_json_is_one_line_naming_it(cls_pkg: Path, tmp_path: Path) -> None:
    """model.json values no export writes (checksum recomputed): a NaN or text threshold, an abstention above 1, no
    class names, an unknown preprocessing step; each is one InputError naming model.json, before any image is read."""
    from medanomaly.deploy.package import load_package
    from medanomaly.types import Volume

    def edited(case: str, edit: Any) -> Path:
        info = json.loads((cls_pkg / "model.json").read_text())
        edit(info)
        return _repackaged(cls_pkg, tmp_path / case, "model.json", json.dumps(info).encode())

    cases = {
        "nan": (lambda i: i["extra"]["decision"].update(threshold="nan"), "threshold must be a finite number"),
        "text": (lambda i: i["extra"]["decision"].update(threshold="abc"), "threshold must be a finite number"),
        "abstain": (lambda i: i["extra"]["decision"].update(abstain_below=5.0), r"abstain_below must lie in \[0, 1\]"),
        "classes": (lambda i: i.update(class_names=[]), "needs at least 2 class names"),
        "step": (lambda i: i.update(preprocessing=[{"name": "os.system", "cmd": "true"}]), "unknown transform 'os.system'"),
    }  # fmt: skip
    image = Volume(np.random.default_rng(0).random((1, 16, 16)).astype(np.float32))
    for case, (edit, reason) in cases.items():
        pkg = edited(case, edit)
        with pytest.raises(InputError, match=reason) as err:
            load_package(pkg).predict(image)
        assert err.value.path == pkg / "model.json", case


def test_wrong_channel_count_is_one_line(cls_pkg: Path) -> None:
    from medanomaly.deploy.package import load_package
    from medanomaly.types import Volume

    rgb = Volume(np.random.default_rng(0).random((1, 16, 16, 5)).astype(np.float32))
    with pytest.raises(InputError):
        load_package(cls_pkg).predict(rgb)


def test_int8_guard_refuses_and_force_keeps_with_warning(cls_run: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from medanomaly.deploy import quantise
    from medanomaly.deploy.export import export_run
    from medanomaly.deploy.package import load_package

    pkg = export_run(cls_run, tmp_path / "int8", int8=True, calibration=8, force=True)
    manifest = json.loads((pkg / "manifest.json").read_text())
    guard = manifest["int8"]
    assert guard["calibration_split"] == "validation" and "model.int8.onnx" in manifest["sha256"]
    assert guard["passed"] == (not manifest["warnings"])
    assert load_package(pkg, precision="int8").graph == "model.int8.onnx"
    # a guard no graph can pass (any accuracy change counts, even none): refused in one line, kept with force
    monkeypatch.setattr(quantise, "MAX_ACC_DROP", -1.0)
    with pytest.raises(InputError, match=r"int8 refused by the accuracy guard: validation (AUC|accuracy) drops by [0-9.]+"):
        export_run(cls_run, tmp_path / "refused", int8=True, calibration=8)
    assert not (tmp_path / "refused").exists()  # nothing half-written
    forced = export_run(cls_run, tmp_path / "forced", int8=True, calibration=8, force=True)
    manifest = json.loads((forced / "manifest.json").read_text())
    assert manifest["int8"]["passed"] is False and "kept with --force" in manifest["warnings"][0]


def test_unfinished_run_and_unknown_task_refused(cls_run: Path, tmp_path: Path) -> None:
    import shutil

    from medanomaly.deploy.export import export_run

    run = tmp_path / "run"
    shutil.copytree(cls_run, run)
    (run / "status.json").write_text(json.dumps({"status": "running"}))
    with pytest.raises(InputError, match="did not finish"):
        export_run(run, tmp_path / "p1")
    (run / "status.json").write_text(json.dumps({"status": "complete"}))
    info = json.loads((run / "model.json").read_text())
    (run / "model.json").write_text(json.dumps({**info, "task": "no_such_task"}))
    with pytest.raises(InputError):
        export_run(run, tmp_path / "p2")
    assert not (tmp_path / "p1").exists() and not (tmp_path / "p2").exists()


def test_package_predicts_without_torch(cls_pkg: Path, cls_run: Path, predict_without_torch) -> None:
    got = predict_without_torch(cls_pkg, cls_run.parent / "img/p1.nrrd", timeout=120)
    assert got["label"] in ("normal", "abnormal")


def test_fusion_export_matches_torch_with_missing_modalities(tmp_path: Path) -> None:
    import torch

    from medanomaly.deploy.export import export_run, match_inputs, onnx_outputs, torch_outputs
    from medanomaly.deploy.onnx_model import session
    from medanomaly.deploy.validation import validation_data
    from medanomaly.engine import load_model, train_run

    torch.set_num_threads(1)
    cfg = {"task": "fusion", "name": "tiny", "seed": 0,
           "data": {"source": "simulated", "size": [24, 24], "n_train": 16, "n_val": 12, "n_test": 8},
           "model": {"name": "fusion_hybrid", "params": {"widths": [4, 8]}},
           "train": {"epochs": 1, "batch_size": 8}, "benchmark": {"n_bootstrap": 10, "variants": []}}  # fmt: skip
    (tmp_path / "f.yaml").write_text(yaml.safe_dump(cfg))
    run = train_run(tmp_path / "f.yaml", tmp_path / "run")
    pkg = export_run(run, tmp_path / "pkg")
    model = load_model(run)
    x, present = match_inputs(validation_data(run, "fusion"), "fusion")
    assert (~present).any()  # the check covers missing modalities
    ref = torch_outputs(model, x, present)
    got = onnx_outputs(session(pkg / "model.onnx"), "fusion", x, present)
    assert np.abs(ref - got).max() <= 1e-4
    # one case with a missing modality, through the engine: same scores and the same flag
    onnx_model = load_model(pkg)
    from medanomaly.types import Volume

    names = model.modalities
    vols = {names[0]: Volume(np.random.default_rng(1).random((24, 24)).astype(np.float32)), names[1]: None}
    a, b = model.predict(vols), onnx_model.predict(vols)
    assert np.abs(np.subtract(a.scores, b.scores)).max() <= 1e-4 and a.flags == b.flags
    assert f"missing_modality:{names[1]}" in b.flags
    # a NaN or a value float32 cannot hold gave NaN probabilities (the run blamed its weights; the package reported
    # the class with NaN scores); weights that overflow in the package are refused as in the run
    for bad, why in ((np.nan, "1 NaN/infinite voxels"), (1e300, "1 voxels beyond float32's range")):
        image = np.random.default_rng(2).random((24, 24))
        image[3, 3] = bad
        for engine in (model, onnx_model):
            with pytest.raises(InputError, match=f"{names[0]}: image has {why}"):
                engine.predict({names[0]: Volume(image), names[1]: None})
    for engine in (model, onnx_model):  # each modality's image is checked as every model checks one
        with pytest.raises(InputError, match=f"{names[0]}: image too small: 1 x 1 pixels"):
            engine.predict({names[0]: Volume(np.zeros((1, 1), np.float32)), names[1]: None})
        with pytest.raises(TypeError, match="got ndarray"):
            engine.predict({names[0]: np.zeros((24, 24)), names[1]: None})
    onnx_model.probabilities = lambda x, present: np.full((1, len(onnx_model.class_names)), np.nan)
    with pytest.raises(InputError, match="NaN or infinite value"):
        onnx_model.predict(vols)


def test_numpy_sliding_window_matches_monai() -> None:
    import torch
    from monai.inferers import sliding_window_inference

    from medanomaly.deploy.sliding import sliding_window

    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 1, 3, padding=1).eval()
    image = np.random.default_rng(0).random((10, 40, 36)).astype(np.float32)
    with torch.no_grad():
        ref = sliding_window_inference(torch.from_numpy(image)[None, None], (4, 16, 16), 1, net, overlap=0.25,
                                       mode="gaussian")[0, 0].numpy()  # fmt: skip
        got = sliding_window(lambda x: net(torch.from_numpy(x)).numpy(), image, (4, 16, 16), 0.25, batch=3)
    assert np.abs(ref - got).max() <= 1e-5


def test_detector_graph_heatmap_matches_torch(tmp_path: Path) -> None:
    """The lung detector's network in ONNX (dynamic spatial axes), windows and blending in NumPy:
    the heatmap equals the torch + MONAI heatmap within 1e-4 on a CT-like volume."""
    import torch

    from medanomaly.config import load_config
    from medanomaly.deploy.export import export_graph, graph_spec
    from medanomaly.deploy.onnx_model import OnnxDetector, session
    from medanomaly.detect.detector import WEIGHTS_FILE, NoduleDetector
    from medanomaly.detect.generic import build_network
    from medanomaly.detect.model import run_info
    from medanomaly.engine import load_model, write_finished_run
    from medanomaly.types import Volume

    torch.manual_seed(0)
    cfg = load_config(ROOT / "configs" / "lung_nodule_tiny.yaml")
    det = NoduleDetector.from_config(cfg)
    det.model_ = build_network(det.model_name, det.model_params).eval()
    run = tmp_path / "run"
    det.save(run)
    write_finished_run(run, cfg, run_info(det, WEIGHTS_FILE))
    model = load_model(run)
    path = export_graph(graph_spec(model), tmp_path / "det.onnx")
    onnx_det = OnnxDetector(session(path), dict(model.info.extra["detector"]))
    rng = np.random.default_rng(0)
    ct = Volume(rng.normal(-700, 200, (30, 70, 60)).astype(np.float32), spacing=(2.0, 2.0, 4.0))
    region = np.zeros((24, 56, 48), bool)
    region[3:20, 5:50, 4:40] = True
    ref = np.asarray(model.detector.heatmap(ct, region).array)
    got = np.asarray(onnx_det.heatmap(ct, region).array)
    assert ref.shape == got.shape and ref.max() > 0 and np.abs(ref - got).max() <= 1e-4
    # The image pyramid (the recipe's default) runs through the graph too; with no size gate every coarse voxel counts.
    assert onnx_det.scales == model.detector.scales == (1.0, 2.0)
    for d in (model.detector, onnx_det):
        d.coarse_min_diameter_mm = 0.0
    ref_all = np.asarray(model.detector.heatmap(ct, region).array)
    got_all = np.asarray(onnx_det.heatmap(ct, region).array)
    assert np.abs(ref_all - got_all).max() <= 1e-4 and np.all(ref_all >= ref - 1e-6)
    assert (ref_all > ref + 1e-3).any()  # the coarse scale did add to the map


@pytest.mark.parametrize("detector", [None, {"candidate_threshold": 3.0}, {"grow_min_hu": "dense"}])
def test_package_detector_parameters_are_checked(detector, tmp_path: Path) -> None:  # noqa: ANN001
    """A package's recorded lung-detector parameters fail on load as a run's detector.json does (one line)."""
    from medanomaly.deploy.onnx_model import package_detector_params
    from medanomaly.engine.run import RunInfo

    info = RunInfo(task="lung_nodule", extra={} if detector is None else {"detector": detector})
    with pytest.raises(InputError, match="model.json"):
        package_detector_params(info, tmp_path)
    assert package_detector_params(RunInfo(task="lung_nodule", extra={"detector": {}}), tmp_path)["split_depth"] is None


def test_session_threads_and_spinning_follow_the_environment(cls_pkg: Path, monkeypatch) -> None:  # noqa: ANN001
    """MEDANOMALY_ORT_THREADS sets the intra-op threads, MEDANOMALY_ORT_SPINNING=0 turns ORT's idle spinning off
    (it is on by default: ORT's own default, left alone)."""
    from medanomaly.deploy.onnx_model import session

    def entry(sess) -> str:  # noqa: ANN001
        try:
            return sess.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
        except Exception:  # noqa: BLE001  (ORT raises when the entry was never set)
            return "default"

    monkeypatch.setenv("MEDANOMALY_ORT_THREADS", "2")
    default = session(cls_pkg / "model.onnx")
    assert default.get_session_options().intra_op_num_threads == 2 and entry(default) == "default"
    monkeypatch.setenv("MEDANOMALY_ORT_SPINNING", "0")
    assert entry(session(cls_pkg / "model.onnx")) == "0"


def test_a_calibration_count_past_the_limits_is_refused_before_any_work(tmp_path: Path, monkeypatch) -> None:
    """--calibration 1e12 on the lung detector allocated validation windows until the kernel killed it; now the count
    (1..10,000) and the windows' bytes (the voxel-memory limit) are checked before a scan is simulated."""
    import shutil

    from medanomaly.deploy import validation
    from medanomaly.deploy.export import MAX_CALIBRATION, export_run

    def no_windows(*_args, **_kwargs):
        raise AssertionError("windows were made before the calibration count was checked")

    monkeypatch.setattr(validation, "_lung_windows", no_windows)
    run = tmp_path / "run"
    shutil.copytree(Path(__file__).resolve().parents[2] / "fixtures" / "lung_detector", run)
    with pytest.raises(InputError, match=r"--calibration must be 1\.\.10,000 validation items, got 1,000,000,000,000"):
        export_run(run, tmp_path / "p1", int8=True, calibration=10**12)
    with pytest.raises(InputError, match=r"calibration windows of 10000 x 16 x 128 x 128 x 4 byte\(s\) = 9\.766 GiB"):
        export_run(run, tmp_path / "p2", int8=True, calibration=MAX_CALIBRATION)
    assert not (tmp_path / "p1").exists() and not (tmp_path / "p2").exists()


def test_an_impossible_package_place_names_itself_not_a_temporary_folder(tmp_path: Path) -> None:
    """--out under a regular file named the hidden temporary folder export makes ('.pk.9y547r_o: No such file')."""
    from medanomaly.deploy.export import export_run

    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(InputError) as caught:
        export_run(Path(__file__).resolve().parents[2] / "fixtures" / "lung_detector", blocker / "pkg")
    assert str(caught.value) == f"{blocker}: cannot write the output folder (File exists)"


def test_a_full_disk_while_exporting_names_the_package_and_leaves_nothing(cls_run: Path, tmp_path: Path,
                                                                          monkeypatch) -> None:  # fmt: skip
    """ONNX's writer raised OSError without a file name when the disk filled: the CLI printed a traceback."""
    import errno

    from medanomaly.deploy import export

    def disk_full(spec, path):
        Path(path).write_bytes(b"cut")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export, "export_graph", disk_full)
    with pytest.raises(OSError) as caught:
        export.export_run(cls_run, tmp_path / "pkg")
    assert caught.value.filename == str(tmp_path / "pkg") and caught.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("name", "value"), [("MEDANOMALY_ORT_THREADS", "abc"), ("MEDANOMALY_ORT_THREADS", "1.5"),
                                             ("MEDANOMALY_ORT_THREADS", "-1"), ("MEDANOMALY_ORT_THREADS", "99999999999"),
                                             ("MEDANOMALY_ORT_SPINNING", "off"), ("MEDANOMALY_ORT_SPINNING", "2")])
def test_an_ort_setting_that_is_not_a_number_in_range_is_one_line(cls_pkg: Path, monkeypatch, capsys, name: str,
                                                                    value: str) -> None:  # noqa: ANN001
    """``MEDANOMALY_ORT_THREADS=abc`` or ``1.5`` was a ValueError traceback from ``int()`` and ``99999999999`` one of
    ORT's own; ``-1`` and a spinning switch of ``off`` were taken silently (``off`` left spinning on). Each is now one
    line naming the variable, before a session is made."""
    from tests.integration.conftest import run_main

    monkeypatch.setenv(name, value)
    code, _out, err = run_main(monkeypatch, capsys, "predict", str(cls_pkg), str(cls_pkg.parent / "img/p0.nrrd"))
    assert code == 2 and err.count("\n") == 1, err
    assert f"error: environment variable {name}={value!r} is not a whole number from 0 to" in err


def test_a_precision_from_the_environment_is_named_as_such(cls_pkg: Path, monkeypatch) -> None:
    """``MEDANOMALY_PRECISION=fp16`` said "precision must be fp32 or int8", as if the caller had asked for it."""
    from medanomaly.deploy.package import load_package

    monkeypatch.setenv("MEDANOMALY_PRECISION", "fp16")
    with pytest.raises(InputError, match="environment variable MEDANOMALY_PRECISION must be fp32 or int8, got 'fp16'"):
        load_package(cls_pkg)
    monkeypatch.setenv("MEDANOMALY_PRECISION", " ")
    assert load_package(cls_pkg).graph == "model.onnx"  # blank = unset


@pytest.mark.parametrize("input_", [{}, {"channels": 1, "image_size": [16, 16]}, {"spatial_dims": 3, "channels": 1,
                                                                                 "image_size": [16, 16]}])
def test_a_package_model_json_without_its_input_shape_is_one_line(cls_pkg: Path, tmp_path: Path, input_) -> None:
    """A package has no classifier.json: its model.json input shapes each image. Without ``spatial_dims`` (checksum
    recomputed) it was a KeyError / TypeError traceback at the first prediction; now one line naming model.json."""
    from medanomaly.deploy.package import load_package

    doc = json.loads((cls_pkg / "model.json").read_text())
    bad = _repackaged(cls_pkg, tmp_path / "bad", "model.json", json.dumps({**doc, "input": input_}).encode())
    with pytest.raises(InputError, match="the recorded input needs spatial_dims, channels and an image_size") as err:
        load_package(bad)
    assert err.value.path == bad / "model.json"
