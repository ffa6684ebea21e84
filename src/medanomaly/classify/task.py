"""The ``classification`` task: what ``medanomaly train / evaluate / predict / tune`` dispatch to.

Example:
    >>> from medanomaly.registry import TASKS
    >>> TASKS.get("classification").config_class.__name__
    'ClassificationConfig'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.classify.config import ClassificationConfig
from medanomaly.engine.run import MODEL_JSON, RunInfo, write_run_info
from medanomaly.errors import InputError
from medanomaly.registry import TASKS


def evaluate_run(run_dir: str | Path, split: str = "test") -> dict[str, Any]:
    """Metrics of a trained run on ``split`` under the decision rule it learned on validation
    (:func:`medanomaly.evaluate.report.evaluate_classification`: bootstrap CIs, calibration,
    abstention, plots, ``metrics.json`` and ``report.html``); returns the metrics without curve points.
    """
    from medanomaly.classify.engine import load_classifier, load_data
    from medanomaly.config import load_config
    from medanomaly.evaluate.report import evaluate_classification

    run_dir = Path(run_dir)
    cfg = load_config(run_dir / "config.yaml")
    if split not in ("train", "val", "test"):
        raise InputError(f"unknown split {split!r}; expected train, val or test")
    clf = load_classifier(run_dir)
    data = load_data(cfg).split(split)
    if len(data) == 0:
        raise InputError(f"the {split!r} split is empty", run_dir)
    raw = clf.raw_proba(data.images)
    explained = explain_examples(clf, data.images, data.labels, clf.decision.calibrate(raw), run_dir / "explain",
                                 cfg.evaluate.explain, keys=data.keys) if cfg.evaluate.report else []  # fmt: skip
    extra = {"synthetic": bool(clf.synthetic),
             "data_note": "SYNTHETIC data: simulated images, not patients" if clf.synthetic else "",
             "ensemble": {"members": len(clf.models), "method": clf.method, "tta": clf.tta}}  # fmt: skip
    ev = evaluate_classification(run_dir, data.labels, raw, clf.class_names, clf.decision,
                                 n_bootstrap=cfg.evaluate.n_bootstrap, seed=cfg.seed, synthetic=clf.synthetic,
                                 split=split, title=f"{cfg.name or 'classification'}: {split} split",
                                 explanations=explained, extra=extra)  # fmt: skip
    return _without_curves({**ev.to_json(), **extra})


def pick_examples(labels: np.ndarray, probs: np.ndarray, limit: int, pred: np.ndarray | None = None) -> list[int]:
    """Indices to explain: per class, the most confident correct and the most confident wrong call
    (true class = that class), in class order, at most ``limit``.

    Args:
        pred: the called class per row (default the most probable; pass the decision-threshold call).
    """
    pred = probs.argmax(axis=1) if pred is None else np.asarray(pred)
    conf = probs[np.arange(len(pred)), pred]
    picked: list[int] = []
    for c in range(probs.shape[1]):
        for correct in (True, False):
            idx = np.flatnonzero((labels == c) & ((pred == c) == correct))
            if idx.size:
                picked.append(int(idx[np.argmax(conf[idx])]))
    return picked[:limit]


def explain_examples(clf: Any, images: np.ndarray, labels: np.ndarray, probs: np.ndarray, out_dir: Path,
                     limit: int, keys: Any = None) -> list[tuple[Path, str]]:  # fmt: skip
    """Grad-CAM overlays of :func:`pick_examples` into ``out_dir`` (``<split index>_overview.png``);
    returns ``(png, caption)`` pairs naming the case by its key (the file name the manifest gave, or
    the loader's id; ``keys``) with the true and predicted class. Images are model inputs (no
    patient geometry): the overlay's axes are in model pixels and say so."""
    if limit <= 0 or len(images) == 0:
        return []
    import dataclasses

    from medanomaly.explain.adapters import from_classifier
    from medanomaly.explain.findings import explain_findings
    from medanomaly.types import Volume

    ex = dataclasses.replace(from_classifier(clf), preprocess=None)  # images are already model inputs
    names = clf.class_names
    probs = np.asarray(probs)
    pred_all, abstained = clf.call(probs)
    out: list[tuple[Path, str]] = []
    for i in pick_examples(np.asarray(labels), probs, limit, pred_all):
        x = np.asarray(images[i], np.float32)  # (C, *spatial)
        data = x.reshape((x.shape[0], 1, *x.shape[1:])) if x.ndim == 3 else x
        data = data[0] if x.shape[0] == 1 else np.moveaxis(data, 0, -1)
        meta = {"model_pixels": True, **({"synthetic": True} if getattr(clf, "synthetic", False) else {})}
        try:
            pngs = explain_findings(ex, Volume(data, meta=meta), [], out_dir, method="gradcam", stem=f"case{i}",
                                    target=int(pred_all[i]))  # fmt: skip
        except InputError:
            continue
        pred = int(pred_all[i])
        verdict = "correct" if pred == int(labels[i]) else "wrong"
        verdict += ", abstained: no call (low confidence)" if abstained[i] else ""
        case = f"case {keys[i]}" if keys is not None else f"case {i} of the split"
        out += [(p, f"Grad-CAM of the predicted class, {case}: true {names[int(labels[i])]}, "
                    f"predicted {names[pred]} (p = {probs[i, pred]:.2f}, {verdict}) - {out_dir.name}/{p.name}")
                for p in pngs]  # fmt: skip
    return out


def _without_curves(metrics: dict[str, Any]) -> dict[str, Any]:
    """What ``medanomaly evaluate`` prints: everything in ``metrics.json`` except the curve points."""
    out = dict(metrics)
    out["calibration"] = {k: v for k, v in metrics["calibration"].items() if k != "curves"}
    out["abstention"] = {k: v for k, v in metrics["abstention"].items() if k != "risk_coverage"}
    out["abstention"]["aurc"] = metrics["abstention"]["risk_coverage"]["aurc"]
    return out


class ClassificationTask:
    """Binary / multi-class disease classification (2D and 3D)."""

    config_class = ClassificationConfig

    def train(self, config: ClassificationConfig, run_dir: Path) -> Path:
        from medanomaly.classify.engine import member_weights, train_run
        from medanomaly.classify.model import run_info

        clf = train_run(config, run_dir)
        write_run_info(run_dir, run_info(clf, member_weights(Path(run_dir), len(clf.models))))
        return Path(run_dir)

    def load(self, run_dir: Path, info: RunInfo) -> Any:
        """The calibrated classifier of a checked run folder, behind the engine contract."""
        from medanomaly.classify.engine import load_classifier
        from medanomaly.classify.model import ClassificationModel, check_recorded

        classifier = load_classifier(run_dir)
        check_recorded(info, classifier, Path(run_dir) / MODEL_JSON)
        return ClassificationModel(info, run_dir, classifier)

    def evaluate(self, run_dir: Path, split: str = "test") -> dict[str, Any]:
        return evaluate_run(run_dir, split)

    def tune(self, config: ClassificationConfig, trials: int | None, out_dir: Path) -> dict[str, Any]:
        from medanomaly.classify.engine import build_model, check_model_input, load_data, train_settings
        from medanomaly.train.tune import tune

        return tune(config, trials=trials, out_dir=out_dir, load_data=load_data, build_model=build_model,
                    train_settings=train_settings, check_config=check_model_input)


TASKS.register("classification")(ClassificationTask())
