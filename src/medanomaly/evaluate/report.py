"""Evaluate a classifier's predictions on one split and write ``metrics.json``, plots and ``report.html``.

:func:`evaluate_classification` is the one call a task's ``evaluate(run_dir, split)`` makes once it
has the model's outputs. Everything that is *learned* is learned on the validation split and only
applied to the reported split:

1. temperature scaling (if validation logits are given) -> calibrated probabilities;
2. the binary decision threshold (``threshold_rule``, e.g. Youden or ``sensitivity@0.9``);
3. the abstention threshold on confidence that answers ``target_coverage`` of validation cases.

Then the reported split gets metrics with bootstrap CIs, reliability before/after scaling, the
risk-coverage curve and the selective accuracy at the learned abstention threshold. Without a
validation split, nothing is learned: threshold 0.5 / arg-max, no abstention threshold, T = 1.

Example:
    >>> import numpy as np, tempfile
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 80); p = np.clip(0.3 * y + rng.uniform(0, 0.7, 80), 0, 1)
    >>> ev = evaluate_classification(tempfile.mkdtemp(), y, p, ("normal", "abnormal"),
    ...                              y_val=y, p_val=p, n_bootstrap=50, synthetic=True)
    >>> sorted(p.name for p in ev.out_dir.iterdir())
    ['metrics.json', 'plots', 'report.html']
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.errors import InputError
from medanomaly.evaluate.calibration import (
    ReliabilityCurve,
    RiskCoverage,
    TemperatureScaler,
    reliability_curve,
    risk_coverage_curve,
    selective_accuracy,
    threshold_for_coverage,
)
from medanomaly.evaluate.metrics import (
    CLASS_METRICS,
    Estimate,
    MetricsResult,
    choose_threshold,
    classification_metrics,
    to_probabilities,
)

__all__ = ["ClassificationEvaluation", "evaluate_classification", "render_report", "write_classification_report"]

METRIC_LABELS = {
    "precision": "precision (PPV)",
    "recall": "recall / sensitivity",
    "specificity": "specificity",
    "f1": "F1",
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC (average precision)",
}


@dataclass(frozen=True, eq=False)
class ClassificationEvaluation:
    """Everything measured on one split, plus where it was written.

    Attributes:
        metrics: metrics with bootstrap CIs on the reported split.
        reliability: ``{"uncalibrated": curve, "temperature-scaled": curve}`` (second only if fitted).
        risk_coverage: risk-coverage curve of the (calibrated) probabilities.
        temperature: fitted temperature, or ``None`` when no validation logits were given.
        threshold_rule: the rule used to learn the binary threshold on validation (or ``None``).
        abstention_threshold: confidence threshold learned on validation, or ``None``.
        target_coverage: the validation coverage the abstention threshold was chosen for.
        selective_accuracy / coverage: on the reported split at that threshold.
        split: name of the reported split.
        out_dir: folder holding ``metrics.json``, ``report.html`` and ``plots/``.
    """

    metrics: MetricsResult
    reliability: Mapping[str, ReliabilityCurve]
    risk_coverage: RiskCoverage
    temperature: float | None
    threshold_rule: str | None
    abstention_threshold: float | None
    target_coverage: float
    selective_accuracy: float | None
    coverage: float | None
    split: str
    out_dir: Path

    def to_json(self) -> dict[str, Any]:
        """The ``metrics.json`` content."""
        out: dict[str, Any] = {"split": self.split, **self.metrics.to_json()}
        out["threshold_selection"] = {
            "rule": self.threshold_rule,
            "learned_on": "val" if self.threshold_rule else None,
            "threshold": self.metrics.threshold,
        }
        out["calibration"] = {
            "temperature": self.temperature,
            "learned_on": "val" if self.temperature is not None else None,
            **{f"ece_{k.replace('-', '_')}": round(v.ece, 6) for k, v in self.reliability.items()},
            "curves": {k: v.to_json() for k, v in self.reliability.items()},
        }
        out["abstention"] = {
            "label": "uncertain",
            "confidence_threshold": self.abstention_threshold,
            "learned_on": "val" if self.abstention_threshold is not None else None,
            "target_coverage": self.target_coverage,
            "coverage": self.coverage,
            "selective_accuracy": self.selective_accuracy,
            "risk_coverage": self.risk_coverage.to_json(),
        }
        return out


def _fmt(e: Estimate) -> str:
    if not np.isfinite(e.value):
        return "n/a"
    if not np.isfinite(e.low):
        return f"{e.value:.3f}"
    return f'{e.value:.3f} <span class="ci">[{e.low:.3f}, {e.high:.3f}]</span>'


def _html(
    result: MetricsResult,
    figures: Sequence[tuple[Path, str]],
    run_info: Mapping[str, Any],
    calibration_rows: Sequence[tuple[str, str]],
    decision_rule: str,
    split: str,
    title: str,
    explanations: Sequence[tuple[Path, str]] = (),
) -> str:
    """Fill the jinja2 template (self-contained HTML: plots embedded as base64 PNG)."""
    from importlib.metadata import PackageNotFoundError, version

    from jinja2 import Environment, FileSystemLoader, select_autoescape
    from markupsafe import Markup

    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=select_autoescape(["html", "j2"]),
    )
    template = env.get_template("classification_report.html.j2")
    try:
        pkg_version = version("medanomaly")
    except PackageNotFoundError:  # pragma: no cover
        pkg_version = "dev"
    figs = [{"data": base64.b64encode(Path(p).read_bytes()).decode("ascii"), "caption": cap} for p, cap in figures]
    cams = [{"data": base64.b64encode(Path(p).read_bytes()).decode("ascii"), "caption": cap} for p, cap in explanations]
    return template.render(
        title=title,
        synthetic=result.synthetic,
        run_info={str(k): str(v) for k, v in run_info.items()},
        split=split,
        m=result,
        fmt=lambda e: Markup(_fmt(e)),
        metric_names=CLASS_METRICS,
        metric_labels=METRIC_LABELS,
        decision_rule=decision_rule,
        calibration_rows=list(calibration_rows),
        figures=figs,
        explanations=cams,
        version=pkg_version,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )


def _decision_rule(result: MetricsResult, rule: str | None) -> str:
    if result.threshold is None:
        return "arg-max of the class probabilities"
    how = f" by rule '{rule}'" if rule else ""
    return f"P({result.class_names[1]}) >= {result.threshold:.4f}, threshold learned on the validation split{how}"


def render_report(
    evaluation: ClassificationEvaluation,
    figures: Sequence[tuple[Path, str]],
    run_info: Mapping[str, Any],
    title: str = "Classification evaluation",
) -> str:
    """The HTML report of a :class:`ClassificationEvaluation` (plots embedded as base64 PNG)."""
    rows: list[tuple[str, str]] = []
    for name, curve in evaluation.reliability.items():
        rows.append((f"ECE ({name}, {curve.count.size} equal-width bins)", f"{curve.ece:.4f}"))
    rows.append(("temperature (learned on val)", "not fitted" if evaluation.temperature is None
                 else f"{evaluation.temperature:.3f}"))
    rows.append(("AURC (area under risk-coverage, lower is better)", f"{evaluation.risk_coverage.aurc:.4f}"))
    if evaluation.abstention_threshold is not None:
        rows.append((f"abstain below confidence (learned on val for {evaluation.target_coverage:.0%} coverage)",
                     f"{evaluation.abstention_threshold:.3f}"))
        rows.append((f"coverage on {evaluation.split}", f"{evaluation.coverage:.3f}"))
        sel = evaluation.selective_accuracy
        rows.append((f"selective accuracy on {evaluation.split} (answered cases)",
                     "n/a" if sel is None else f"{sel:.3f}"))
    else:
        rows.append(("abstention threshold", "not learned (no validation split)"))
    return _html(evaluation.metrics, figures, run_info, rows,
                 _decision_rule(evaluation.metrics, evaluation.threshold_rule), evaluation.split, title)


def _figures(
    plots: Path,
    y: np.ndarray,
    p: np.ndarray,
    class_names: Sequence[str],
    result: MetricsResult,
    reliability: Mapping[str, ReliabilityCurve],
    rc: RiskCoverage,
    operating_point: tuple[float, float] | None,
    seed: int,
) -> list[tuple[Path, str]]:
    """Draw and save the five evaluation plots; returns (path, caption) pairs."""
    from medanomaly.evaluate.plots import (
        plot_confusion,
        plot_pr,
        plot_reliability,
        plot_risk_coverage,
        plot_roc,
        save_figure,
    )

    syn = result.synthetic
    n_band = max(50, min(result.n_bootstrap, 200))
    return [
        (save_figure(plot_roc(y, p, class_names, result, n_band, seed, syn), plots / "roc.png"),
         "ROC curves with 95% bootstrap bands"),
        (save_figure(plot_pr(y, p, class_names, result, syn), plots / "pr.png"), "Precision-recall curves"),
        (save_figure(plot_confusion(result.confusion, class_names, syn, result.threshold), plots / "confusion.png"),
         "Confusion matrix"),
        (save_figure(plot_reliability(dict(reliability), syn), plots / "reliability.png"), "Reliability diagram"),
        (save_figure(plot_risk_coverage({"model": rc}, operating_point, syn), plots / "risk_coverage.png"),
         "Risk-coverage curve (abstention)"),
    ]


def evaluate_classification(
    out_dir: str | Path,
    y_true: np.ndarray | Sequence[int],
    probs: np.ndarray | None,
    class_names: Sequence[str],
    *,
    logits: np.ndarray | None = None,
    y_val: np.ndarray | Sequence[int] | None = None,
    p_val: np.ndarray | None = None,
    logits_val: np.ndarray | None = None,
    threshold_rule: str = "youden",
    target_coverage: float = 0.9,
    n_bootstrap: int = 1000,
    seed: int = 0,
    synthetic: bool = False,
    split: str = "test",
    run_info: Mapping[str, Any] | None = None,
    title: str = "Classification evaluation",
    n_bins: int = 15,
) -> ClassificationEvaluation:
    """Measure a classifier on one split and write ``metrics.json``, ``plots/*.png``, ``report.html``.

    Args:
        out_dir: folder to write into (created).
        y_true: (n,) true class indices of the reported split.
        probs: (n, K) probabilities of the reported split (or ``None`` when ``logits`` is given).
        class_names: K class names (binary: ``class_names[1]`` is the positive class).
        logits: (n, K) logits of the reported split; needed for temperature scaling.
        y_val / p_val / logits_val: the validation split, used only to learn the temperature,
            the binary threshold and the abstention threshold.
        threshold_rule: see :func:`medanomaly.evaluate.metrics.choose_threshold` (binary only).
        target_coverage: fraction of validation cases answered at the abstention threshold.
        n_bootstrap / seed: bootstrap settings.
        synthetic: the data are simulated (banner in the report, flag in the JSON).
        split: name of the reported split.
        run_info: technical facts about the run shown in the report (no PHI).
        title: report title.
        n_bins: bins of the reliability diagram / ECE.

    Returns:
        A :class:`ClassificationEvaluation`.
    """
    from medanomaly.evaluate.calibration import softmax

    out = Path(out_dir)
    k = len(class_names)
    if probs is None and logits is None:
        raise InputError("give probabilities or logits of the evaluated split")
    raw = to_probabilities(softmax(logits) if probs is None else probs, k)
    y = np.asarray(y_true).astype(np.int64)
    has_val = y_val is not None and (p_val is not None or logits_val is not None)

    temperature = None
    p = raw
    p_val_cal = None
    if has_val:
        p_val_cal = to_probabilities(softmax(logits_val) if p_val is None else p_val, k)
    if has_val and logits is not None and logits_val is not None:
        scaler = TemperatureScaler().fit(logits_val, y_val)
        temperature = scaler.temperature_
        p = scaler.transform(logits)
        p_val_cal = scaler.transform(logits_val)

    threshold = rule = None
    if k == 2 and has_val:
        rule = threshold_rule
        threshold = choose_threshold(y_val, p_val_cal, threshold_rule)
    metrics = classification_metrics(y, p, class_names, threshold, n_bootstrap, seed, synthetic=synthetic)

    reliability = {"uncalibrated": reliability_curve(y, raw, n_bins)}
    if temperature is not None:
        reliability["temperature-scaled"] = reliability_curve(y, p, n_bins)
    rc = risk_coverage_curve(y, p)
    abst = sel_acc = cov = None
    if has_val:
        abst = threshold_for_coverage(p_val_cal, target_coverage)
        sel_acc, cov = selective_accuracy(y, p, abst)
        sel_acc = None if not np.isfinite(sel_acc) else sel_acc
    evaluation = ClassificationEvaluation(
        metrics=metrics,
        reliability=reliability,
        risk_coverage=rc,
        temperature=temperature,
        threshold_rule=rule,
        abstention_threshold=abst,
        target_coverage=target_coverage,
        selective_accuracy=sel_acc,
        coverage=cov,
        split=split,
        out_dir=out,
    )

    op = (cov, 1.0 - sel_acc) if (cov is not None and sel_acc is not None) else None
    figures = _figures(out / "plots", y, p, class_names, metrics, reliability, rc, op, seed)
    (out / "metrics.json").write_text(json.dumps(evaluation.to_json(), indent=2))
    info = {"split": split, "classes": ", ".join(class_names), **dict(run_info or {})}
    (out / "report.html").write_text(render_report(evaluation, figures, info, title))
    return evaluation


def _run_info(run_dir: Path) -> dict[str, Any]:
    """Technical facts from the run's ``config.yaml`` (names and sizes only: no paths, no PHI)."""
    import yaml

    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {"run": run_dir.name}
    data, model, train = cfg.get("data") or {}, cfg.get("model") or {}, cfg.get("train") or {}
    info: dict[str, Any] = {"run": run_dir.name, "task": cfg.get("task", "?")}
    if cfg.get("name"):
        info["config name"] = cfg["name"]
    if isinstance(data.get("dataset"), dict):
        info["dataset"] = data["dataset"].get("name", "?")
    if data.get("image_size"):
        info["input size (voxels)"] = " x ".join(str(s) for s in data["image_size"])
    if model.get("name"):
        info["model"] = model["name"]
    for key in ("epochs", "batch_size", "optimizer", "loss"):
        if key in train:
            info[f"train {key}"] = train[key]
    info["seed"] = cfg.get("seed", 0)
    return info


def write_classification_report(
    run_dir: str | Path,
    metrics: Mapping[str, Any],
    result: MetricsResult,
    y_true: np.ndarray | Sequence[int],
    probs: np.ndarray,
    class_names: Sequence[str],
    raw_probs: np.ndarray | None = None,
    split: str | None = None,
    title: str | None = None,
    explanations: Sequence[tuple[Path, str]] | None = None,
) -> Path:
    """Plots and ``report.html`` for metrics a task has already computed (``metrics.json`` content).

    This is the hook the ``classification`` task calls after writing ``metrics.json``: the
    temperature, decision threshold and abstention threshold were learned on validation at
    training time and are read from ``metrics`` (keys ``calibration`` and ``abstention``).

    Args:
        run_dir: the run directory (``config.yaml`` is read for the run summary; plots go to
            ``run_dir/plots``, the report to ``run_dir/report.html``).
        metrics: the task's metrics dict.
        result: the :class:`MetricsResult` behind it.
        y_true: (n,) class indices of the evaluated split.
        probs: (n, K) probabilities as evaluated (after temperature scaling, if any).
        class_names: K class names.
        raw_probs: (n, K) probabilities before temperature scaling, to show both reliability curves.
        split: split name (default ``metrics["split"]``).
        title: report title.
        explanations: ``(png, caption)`` explanation overlays (e.g. Grad-CAM of chosen test images),
            embedded in their own section.

    Returns:
        Path of ``report.html``.
    """
    run_dir = Path(run_dir)
    y = np.asarray(y_true).astype(np.int64)
    p = to_probabilities(probs, len(class_names))
    split = split or str(metrics.get("split", "test"))
    cal = dict(metrics.get("calibration") or {})
    ab = dict(metrics.get("abstention") or {})
    temperature = cal.get("temperature")
    reliability: dict[str, ReliabilityCurve] = {}
    if raw_probs is not None:
        reliability["uncalibrated"] = reliability_curve(y, raw_probs)
    scaled = temperature is not None and abs(float(temperature) - 1.0) > 1e-9
    reliability["temperature-scaled" if scaled else "model"] = reliability_curve(y, p)
    rc = risk_coverage_curve(y, p)
    cov, sel = ab.get("coverage"), ab.get("selective_accuracy")
    op = None
    if cov is not None and sel is not None and np.isfinite(float(sel)):
        op = (float(cov), 1.0 - float(sel))
    figures = _figures(run_dir / "plots", y, p, class_names, result, reliability, rc, op, result.seed)

    def num(value: Any, digits: int = 4) -> str:
        try:
            return f"{float(value):.{digits}f}"
        except (TypeError, ValueError):
            return "n/a"

    rows = [(f"ECE ({name}, {c.count.size} equal-width bins)", f"{c.ece:.4f}") for name, c in reliability.items()]
    if "ece_before" in cal and raw_probs is None:
        rows.insert(0, ("ECE before temperature scaling (task)", num(cal["ece_before"])))
    rows.append(("temperature (learned on val)", "not fitted" if temperature is None else num(temperature, 3)))
    rows.append(("AURC (area under risk-coverage, lower is better)", f"{rc.aurc:.4f}"))
    if ab.get("confidence_threshold") is not None:
        rows.append(("abstain ('uncertain') below confidence (learned on val)", num(ab["confidence_threshold"], 3)))
        rows.append((f"coverage on {split}", num(cov, 3)))
        rows.append((f"selective accuracy on {split} (answered cases)", num(sel, 3)))
        n_abstained = int(np.sum(p.max(axis=1) < float(ab["confidence_threshold"])))
        rows.append((f"cases abstained on {split} (answer 'uncertain')", f"{n_abstained} of {y.size}"))
    else:
        rows.append(("abstention", "off"))
    info = {**_run_info(run_dir), "split": split, "classes": ", ".join(class_names)}
    ens = metrics.get("ensemble")
    if isinstance(ens, Mapping):
        info["ensemble"] = f"{ens.get('members', 1)} member(s), {ens.get('method', '?')}, TTA {ens.get('tta', False)}"
    rule = None
    if result.threshold is not None:
        sel_rule = metrics.get("threshold_selection")
        rule = sel_rule.get("rule") if isinstance(sel_rule, Mapping) else None
    html = _html(result, figures, info, rows, _decision_rule(result, rule), split,
                 title or f"Classification evaluation: {info.get('config name', run_dir.name)}", explanations or ())
    out = run_dir / "report.html"
    out.write_text(html)
    return out
