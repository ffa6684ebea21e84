"""The classification task: config checks, training output, reload, predict with abstention, evaluate."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from medanomaly.classify.engine import build_model, load_classifier, load_data
from medanomaly.classify.task import evaluate_run
from medanomaly.engine import load_model
from medanomaly.engine import predict_paths as engine_predict_paths
from medanomaly.config import parse_config
from medanomaly.errors import ConfigError, InputError

from .conftest import tiny_config  # noqa: TID252


def test_classify_config_rejects_typos_and_bad_values(blob_manifest: Path) -> None:
    with pytest.raises(ConfigError, match="train.lrate"):
        parse_config(tiny_config(blob_manifest, train={"lrate": 0.1}))
    with pytest.raises(ConfigError, match="image_size"):
        parse_config(tiny_config(blob_manifest, data={"image_size": [16]}))
    with pytest.raises(ConfigError, match="unknown task"):
        parse_config({**tiny_config(blob_manifest), "task": "clasification"})


@pytest.mark.parametrize("space, words", [
    ({"type": "float", "low": 0.01, "high": 0.001}, "float needs low <= high"),
    ({"type": "float", "low": float("nan"), "high": 0.01}, "finite number"),
    ({"type": "float", "low": 0.0, "high": 0.1, "log": True}, "log needs low > 0"),
    ({"type": "int", "low": 1.5, "high": 3}, "int needs whole low and high"),
    ({"type": "categorical"}, "categorical needs choices"),
    ({"type": "float"}, "float needs low <= high"),
])  # fmt: skip
def test_a_tuning_range_optuna_cannot_draw_from_is_refused_when_read(blob_manifest: Path, space, words) -> None:
    """A NaN bound or a log range from 0 were tracebacks from inside Optuna / NumPy; the rest failed as trials."""
    with pytest.raises(ConfigError, match=words):
        parse_config(tiny_config(blob_manifest, tune={"space": {"train.lr": space}}))


@pytest.mark.parametrize("path, space, words", [
    ("train.lr", {"type": "float", "low": -5, "high": -1}, r"train.lr = -5.0 does not make a valid config \(train.lr"),
    ("train.nonexistent", {"type": "float", "low": 0.1, "high": 0.2}, "train.nonexistent = 0.1 does not make"),
    ("train.epochs", {"type": "int", "low": 1, "high": 10**9}, "train.epochs = 1000000000 does not make"),
    ("train.loss", {"type": "categorical", "choices": ["ce", "nope"]}, "train.loss = 'nope' does not make"),
])  # fmt: skip
def test_every_end_of_the_search_space_is_checked_before_any_data_is_read(blob_manifest: Path, path, space,
                                                                          words) -> None:  # fmt: skip
    from medanomaly.train.tune import tune

    def no_data(_cfg):
        raise AssertionError("data read before the search space was checked")

    cfg = parse_config(tiny_config(blob_manifest, tune={"space": {path: space}}))
    with pytest.raises(ConfigError, match=words):
        tune(cfg, load_data=no_data, build_model=build_model, train_settings=lambda c: None)


@pytest.mark.parametrize("path, space, words", [
    ("model.params.dropout", {"type": "float", "low": 0.0, "high": 1.5},
     r"model.params.dropout = 1.5 does not make a valid config \(model 'compact_cnn' cannot be built"),
    ("model.params.widths", {"type": "categorical", "choices": [[4, 8], [4, 8, 16, 32, 64, 64]]},
     r"model.params.widths = \[4, 8, 16, 32, 64, 64\] does not make a valid config \(model 'compact_cnn' cannot take "
     r"inputs of 1 x 16 x 16 \(data.image_size"),
])  # fmt: skip
def test_the_task_builds_the_network_of_every_end_of_the_search_space_before_any_data_is_read(
        blob_manifest: Path, monkeypatch, path, space, words) -> None:  # fmt: skip
    """``model.params`` are free: a dropout of 1.5 or widths too deep for 16 x 16 images failed as trials, after the
    data were read (each trial's traceback in Optuna's log)."""
    from medanomaly.classify import engine
    from medanomaly.classify.task import ClassificationTask

    def no_data(_cfg):
        raise AssertionError("data read before the networks of the search space were checked")

    monkeypatch.setattr(engine, "load_data", no_data)
    cfg = parse_config(tiny_config(blob_manifest, tune={"space": {path: space}}))
    with pytest.raises(ConfigError, match=words):
        ClassificationTask().tune(cfg, None, None)


@pytest.mark.parametrize("trials", [0, -1, 10**9])
def test_a_trial_count_outside_1_to_100000_is_refused_before_any_data_is_read(blob_manifest: Path, trials) -> None:
    """``--trials 0`` ran the config's 20 trials, -1 ran none and said "no tuning trial completed", 10**9 ran on."""
    from medanomaly.train.tune import tune

    def no_data(_cfg):
        raise AssertionError("data read before the trial count was checked")

    cfg = parse_config(tiny_config(blob_manifest, tune={"space": {"train.lr": {"type": "float", "low": 0.001,
                                                                                "high": 0.01}}}))  # fmt: skip
    with pytest.raises(InputError, match=rf"--trials must be 1\.\.100,000, got {trials}"):
        tune(cfg, trials, load_data=no_data, build_model=build_model, train_settings=lambda c: None)


def test_classify_bad_input_found_before_training(blob_manifest: Path) -> None:
    # a class with no samples in a split (splits given by the manifest)
    rows = ["path,label,patient_id,split", "img/p0_0.nrrd,normal,P00,train", "img/p1_0.nrrd,abnormal,P01,train",
            "img/p2_0.nrrd,normal,P02,val", "img/p4_0.nrrd,normal,P04,test", "img/p3_0.nrrd,abnormal,P03,test"]
    split_csv = blob_manifest.parent / "with_splits.csv"
    split_csv.write_text("\n".join(rows) + "\n")
    cfg = parse_config(tiny_config(split_csv))
    with pytest.raises(InputError, match=r"\['abnormal'\] have no samples in the 'val' split"):
        load_data(cfg)
    # model parameters that contradict the data
    cfg = parse_config(tiny_config(blob_manifest, model={"params": {"in_channels": 3, "widths": [4]}}))
    with pytest.raises(InputError, match="in_channels=3 contradicts the data"):
        build_model(cfg, 2)
    # wrong channel count
    with pytest.raises(InputError, match="channel"):
        load_data(parse_config(tiny_config(blob_manifest, data={"channels": 3})))


def test_classify_run_directory_and_reload(trained_run: Path) -> None:
    info = json.loads((trained_run / "classifier.json").read_text())
    assert info["members"] == 2 and info["fitted_on"] == "val" and info["decision"]["threshold"] is not None
    assert info["decision"]["threshold_rule"] == "youden" and info["decision"]["fitted_on"] == "val"
    splits = json.loads((trained_run / "splits.json").read_text())
    assert splits["train"]["patients"] + splits["val"]["patients"] + splits["test"]["patients"] == 12
    assert "P0" not in (trained_run / "splits.json").read_text()  # no patient ids written
    train = json.loads((trained_run / "train.json").read_text())
    assert len(train["members"]) == 2 and train["members"][0]["best_score"] > 0.5
    clf = load_classifier(trained_run)
    data = load_data(parse_config(json.loads(json.dumps(
        __import__("yaml").safe_load((trained_run / "config.yaml").read_text())))))
    p1, p2 = clf.predict_proba(data.images), load_classifier(trained_run).predict_proba(data.images)
    np.testing.assert_array_equal(p1, p2)
    assert np.allclose(p1.sum(axis=1), 1.0)
    from medanomaly.train.loop import quick_scores

    assert quick_scores(data.labels, p1)["auc"] > 0.8  # the bright square is learned


def test_classify_predict_files_abstains_and_skips_bad_files(trained_run: Path, blob_manifest: Path,
                                                              tmp_path: Path) -> None:
    images = sorted((blob_manifest.parent / "img").glob("*.nrrd"))[:4]
    bad = tmp_path / "broken.nrrd"
    bad.write_text("not an image")
    out = predict_paths(trained_run, [images[0], bad, images[1]])
    assert [p.name for p, _ in out] == [images[0].name, "broken.nrrd", images[1].name]
    assert isinstance(out[1][1], InputError)
    pred = out[0][1]
    assert pred.label in ("normal", "abnormal") and abs(sum(pred.scores) - 1) < 1e-6
    # with an abstention threshold above every confidence, every answer abstains (the call stays a class)
    info_path = trained_run / "classifier.json"
    original = json.loads(info_path.read_text())
    try:
        info_path.write_text(json.dumps({**original, "decision": {**original["decision"], "abstain_below": 0.999}}))
        preds = [p for _, p in predict_paths(trained_run, images)]
        assert all(p.abstained and p.decision == "abstain" and p.label in ("normal", "abnormal") for p in preds)
        info_path.write_text(json.dumps({**original, "decision": {**original["decision"], "threshold": float("nan")}}))
        with pytest.raises(InputError, match="no valid decision rule"):
            load_model(trained_run)
    finally:
        info_path.write_text(json.dumps(original))


def predict_paths(run: Path, paths: list[Path]) -> list[tuple[Path, object]]:
    return [(path, outcome) for path, outcome, _ in engine_predict_paths(load_model(run), paths)]


def test_classify_evaluate_writes_metrics(trained_run: Path) -> None:
    metrics = evaluate_run(trained_run, "test")
    assert json.loads((trained_run / "metrics.json").read_text())["split"] == "test"
    acc = metrics["accuracy"]
    assert acc["ci_low"] <= acc["value"] <= acc["ci_high"]
    assert metrics["calibration"]["fitted_on"] == "val" and metrics["abstention"]["fitted_on"] == "val"
    assert metrics["threshold_selection"]["rule"] == "youden"  # named in the report too
    assert "by rule &#39;youden&#39;" in (trained_run / "report.html").read_text() or \
        "by rule 'youden'" in (trained_run / "report.html").read_text()
    assert 0 < metrics["abstention"]["coverage"] <= 1
    assert metrics["synthetic"] is False
    cams = sorted((trained_run / "explain").glob("case*_overview.png"))
    assert 1 <= len(cams) <= 6  # evaluate.explain: most confident right/wrong per class, at most 6
    html = (trained_run / "report.html").read_text()
    for png in cams:
        assert f"explain/{png.name}" in html
    assert "Grad-CAM" in html and html.count("predicted ") >= len(cams)
    with pytest.raises(InputError, match="unknown split"):
        evaluate_run(trained_run, "holdout")


def test_classify_abstention_is_not_the_uncertain_class() -> None:
    from medanomaly.classify.engine import Classifier

    from medanomaly.classify.model import ClassificationModel
    from medanomaly.engine.run import RunInfo
    from medanomaly.evaluate.decision import DecisionRule

    names = ("benign", "uncertain", "malignant")
    clf = Classifier(models=(), class_names=names, image_size=(8, 8), channels=1,
                     decision=DecisionRule(abstain_below=0.6, abstain_rule="confidence 0.6"))
    model = ClassificationModel(RunInfo(task="classification", class_names=names), Path("run"), clf)
    preds = model.predictions(np.array([[0.1, 0.8, 0.1], [0.5, 0.3, 0.2], [0.05, 0.05, 0.9]]))
    assert [p.label for p in preds] == ["uncertain", "benign", "malignant"]
    assert [p.decision for p in preds] == ["uncertain", "abstain", "malignant"]  # class vs abstention
    assert [p.abstained for p in preds] == [False, True, False]


def test_classify_kfold_members_validate_on_held_out_patients(blob_manifest: Path) -> None:
    from medanomaly.classify.engine import fit_members

    cfg = parse_config(tiny_config(blob_manifest, ensemble={"folds": 2, "members": 1},
                                   train={"epochs": 1}))
    data = load_data(cfg)
    models, results, cv = fit_members(cfg, data, None, progress=False)
    assert len(models) == 2 and all(r.epochs_run == 1 for r in results)
    assert cv["folds"] == 2 and len(cv["fold_scores"]) == 2 and cv["metric"] == "val_auc"


def test_classify_pick_examples_most_confident_right_and_wrong_per_class() -> None:
    from medanomaly.classify.task import pick_examples

    labels = np.array([0, 0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7], [0.45, 0.55]])
    assert pick_examples(labels, probs, 6) == [0, 2, 3]  # class 1 has no wrong call
    assert pick_examples(labels, probs, 2) == [0, 2]
    assert pick_examples(labels, probs, 0) == []
    called = np.array([0, 1, 1, 1, 1])  # a decision threshold of 0.4 on class 1
    assert pick_examples(labels, probs, 6, called) == [0, 2, 3]  # case 2 (p=0.8 wrong) beats case 1 (p=0.4)


@pytest.mark.parametrize(("file", "edit", "words"), [
    ("model.json", lambda d: d.update(class_names=[]), "class names [] are not the classifier's"),
    ("model.json", lambda d: d.update(class_names=["normal"]), "class names ['normal'] are not the classifier's"),
    ("model.json", lambda d: d.update(class_names=["normal", "abnormal", "abnormal"]),
     "model.json is invalid: class_names: Value error, class names must be distinct"),  # the engine's own check
    ("model.json", lambda d: d["input"].update(spatial_dims=0), "input.spatial_dims: Input should be 2 or 3"),
    ("model.json", lambda d: d["input"].update(spatial_dims=3), "input {'spatial_dims': 3"),
    ("model.json", lambda d: d.update(input={}), "input {} is not the classifier's"),
    ("classifier.json", lambda d: d.update(members=0), "members must be at least 1, got 0"),
    ("classifier.json", lambda d: d.update(method="x"), "unknown ensemble method 'x'"),
    ("classifier.json", lambda d: d.update(weights="x"), "classifier values do not fit"),
    ("classifier.json", lambda d: d.update(weights=[1.0, float("nan")]), "finite non-negative numbers"),
])  # fmt: skip
def test_recorded_values_that_are_not_the_classifiers_are_one_line_at_load(trained_run: Path, tmp_path: Path, file: str,
                                                                            edit, words: str) -> None:  # noqa: ANN001
    """An edited or foreign model.json / classifier.json whose classes, input or ensemble do not fit the classifier and
    its weights was a traceback at the first prediction (``Prediction`` of 2 scores and 1 class, a conv of a 0-D
    input, ``np.stack`` of no members); now one InputError naming the file when the run is loaded."""
    import shutil

    run = shutil.copytree(trained_run, tmp_path / "run")
    doc = json.loads((run / file).read_text())
    edit(doc)
    (run / file).write_text(json.dumps(doc))
    with pytest.raises(InputError, match=re.escape(words)) as err:
        load_model(run)
    assert err.value.path in (run / file, run)  # the engine's model.json checks name the run folder


def test_weights_that_overflow_are_refused_not_reported_as_a_class(trained_run: Path, tmp_path: Path,
                                                                   blob_manifest: Path) -> None:
    """Finite weights of 1e30 pass every load check; the network then answers NaN and the run reported the class
    ``normal`` with null probabilities (after a NumPy warning). Now one InputError about the model's outputs."""
    import shutil

    from safetensors.numpy import load_file, save_file

    from medanomaly.io import read

    run = shutil.copytree(trained_run, tmp_path / "run")
    for weights in run.glob("members/*/model.safetensors"):
        state = load_file(str(weights))
        save_file({k: np.full_like(v, 1e30) if v.dtype.kind == "f" and v.ndim > 1 else v for k, v in state.items()},
                  str(weights))  # fmt: skip
    image = read(sorted((blob_manifest.parent / "img").glob("*.nrrd"))[0])
    with pytest.raises(InputError, match=r"NaN or infinite value\(s\) in the classifier's probabilities"):
        load_model(run).predict(image)


def test_a_stopped_search_keeps_its_trials_and_the_same_command_resumes_it(blob_manifest: Path, tmp_path: Path,
                                                                           monkeypatch, capfd) -> None:  # fmt: skip
    """Nothing of a search was written until its end: Ctrl-C at trial 15 of 20 lost 14 trials' work. The search lives
    in ``OUT/tune.db`` and the results are written after every trial; the same command again runs only the missing
    trials (more trials extend it); another config is refused for that folder."""
    from medanomaly.classify import engine
    from medanomaly.classify.task import ClassificationTask
    from medanomaly.train import loop

    cfg = parse_config(tiny_config(blob_manifest))
    out = tmp_path / "search"
    fits = []
    real_fit = loop.fit

    def fit_then_stop(*args, **kwargs):
        fits.append(1)
        if len(fits) == 2:
            raise KeyboardInterrupt  # Ctrl-C during the second trial
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(loop, "fit", fit_then_stop)
    with pytest.raises(KeyboardInterrupt):
        ClassificationTask().tune(cfg, 3, out)
    assert "Traceback" not in capfd.readouterr().err  # Optuna's failed-trial warning printed the trial's traceback
    kept = json.loads((out / "tune.json").read_text())
    assert [t["state"] for t in kept["trials"]] == ["COMPLETE"] and (out / "best.yaml").is_file()
    summary = ClassificationTask().tune(cfg, 3, out)  # resumed: two more finished trials, the stopped one failed
    assert [t["state"] for t in summary["trials"]] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"] and len(fits) == 4
    assert len({t["params"]["train.lr"] for t in summary["trials"]}) == 4, "a resumed search draws new values"
    import warnings

    import optuna

    with warnings.catch_warnings():  # "heartbeat_interval is an experimental feature" reached every run's terminal
        warnings.simplefilter("error", optuna.exceptions.ExperimentalWarning)
        assert ClassificationTask().tune(cfg, 3, out)["n_trials"] == 4 and len(fits) == 4  # nothing missing: no trial
    other = parse_config(tiny_config(blob_manifest, train={"epochs": 7}))
    monkeypatch.setattr(engine, "load_data", lambda _cfg: pytest.fail("data read for a folder of another search"))
    with pytest.raises(InputError, match="holds the search of another config"):
        ClassificationTask().tune(other, 3, out)


def test_a_search_draws_the_same_values_at_once_or_resumed_so_processes_sharing_it_draw_different_ones(
        blob_manifest: Path, tmp_path: Path) -> None:  # fmt: skip
    """Each trial's sampler is seeded by the config's seed and the trial's number: a search stopped and resumed draws
    what it would have drawn at once, and two processes sharing one folder (numbers handed out by the storage) draw
    different values; seeded alike per process, two had drawn the same values side by side (measured: 2 x 2 trials
    of 2 distinct values)."""
    from medanomaly.classify.task import ClassificationTask

    cfg = parse_config(tiny_config(blob_manifest))
    at_once = ClassificationTask().tune(cfg, 4, tmp_path / "once")
    ClassificationTask().tune(cfg, 2, tmp_path / "resumed")
    resumed = ClassificationTask().tune(cfg, 4, tmp_path / "resumed")
    values = [[t["params"]["train.lr"] for t in s["trials"]] for s in (at_once, resumed)]
    assert values[0] == values[1] and len(set(values[0])) == 4
