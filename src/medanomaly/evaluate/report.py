"""The one classification evaluation: ``metrics.json``, plots and ``report.html`` for one split.

:func:`evaluate_classification` is the call every classifier-like task (classification, fusion)
makes once it has the raw probabilities of a split and the :class:`~medanomaly.evaluate.decision.DecisionRule`
the run learned on validation (temperature, binary threshold and rule, abstention threshold and
rule). It applies that rule (never learns on the reported split) and measures: metrics with bootstrap
CIs at the learned threshold, reliability before and after temperature scaling, the risk-coverage
curve and the selective accuracy at the learned abstention threshold. ``metrics.json`` has one
schema for every task; the report names the decision rule.

Example:
    >>> import numpy as np, tempfile
    >>> from medanomaly.evaluate.decision import learn_decision
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 80); p1 = np.clip(0.3 * y + rng.uniform(0, 0.7, 80), 0, 1)
    >>> p = np.stack([1 - p1, p1], axis=1)
    >>> rule = learn_decision(y, p, calibrate=False)
    >>> ev = evaluate_classification(tempfile.mkdtemp(), y, p, ("normal", "abnormal"), rule,
    ...                              n_bootstrap=50, synthetic=True)
    >>> sorted(p.name for p in ev.out_dir.iterdir())
    ['metrics.json', 'plots', 'report.html']
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.evaluate.calibration import ReliabilityCurve, RiskCoverage, reliability_curve, risk_coverage_curve
from medanomaly.evaluate.decision import DecisionRule
from medanomaly.evaluate.metrics import (
    CLASS_METRICS,
    Estimate,
    MetricsResult,
    classification_metrics,
    to_probabilities,
)
from medanomaly.jsonio import read_json
from medanomaly.types import ABSTAIN

__all__ = ["ClassificationEvaluation", "evaluate_classification"]

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
        metrics: metrics with bootstrap CIs on the reported split (at the learned threshold).
        decision: the rule learned on validation and applied here.
        reliability: ``{"uncalibrated": curve, "temperature-scaled": curve}`` (second only if scaled).
        risk_coverage: risk-coverage curve of the calibrated probabilities.
        selective_accuracy / coverage: on the reported split at the learned abstention threshold.
        n_abstained: cases of the split answered "abstain" (no call).
        split: name of the reported split.
        out_dir: folder holding ``metrics.json``, ``report.html`` and ``plots/``.
    """

    metrics: MetricsResult
    decision: DecisionRule
    reliability: Mapping[str, ReliabilityCurve]
    risk_coverage: RiskCoverage
    selective_accuracy: float | None
    coverage: float | None
    n_abstained: int
    split: str
    out_dir: Path

    def to_json(self) -> dict[str, Any]:
        """The ``metrics.json`` content (one schema for every task)."""
        d = self.decision
        out: dict[str, Any] = {"split": self.split, **self.metrics.to_json()}
        out["threshold_selection"] = {"rule": d.threshold_rule, "threshold": d.threshold,
                                      "fitted_on": d.fitted_on if d.threshold_rule else None}  # fmt: skip
        out["calibration"] = {
            "temperature": d.temperature,
            "fitted_on": d.fitted_on,
            **{f"ece_{k.replace('-', '_')}": round(v.ece, 6) for k, v in self.reliability.items()},
            "curves": {k: v.to_json() for k, v in self.reliability.items()},
        }
        out["abstention"] = {
            "decision": ABSTAIN,
            "confidence_threshold": d.abstain_below or None,
            "rule": d.abstain_rule,
            "fitted_on": d.fitted_on if d.abstain_rule else None,
            "coverage": self.coverage,
            "selective_accuracy": self.selective_accuracy,
            "n_abstained": self.n_abstained,
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
    warnings: Sequence[str] = (),
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
        warnings=list(warnings),
        version=pkg_version,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )


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
    )
    from medanomaly.io.staged import save_figure

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


def _run_info(run_dir: Path) -> dict[str, Any]:
    """Technical facts from the run's ``config.yaml`` (names and sizes only: no paths, no PHI)."""
    from medanomaly.config import read_yaml
    from medanomaly.errors import ConfigError

    try:
        cfg = read_yaml(run_dir / "config.yaml") or {}
    except ConfigError:
        return {"run": run_dir.name}
    if not isinstance(cfg, dict):
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


def chance_warnings(result: MetricsResult, split: str) -> list[str]:
    """One line when the split's ROC AUC (macro over classes) is compatible with chance: its bootstrap
    CI contains 0.5 (or, without a CI, the AUC itself is at most 0.5).

    Example:
        >>> from types import SimpleNamespace as N
        >>> chance_warnings(N(macro={"roc_auc": Estimate(0.55, 0.41, 0.68)}, ci_level=0.95), "test")[0][:37]
        'chance level: ROC AUC on test = 0.550'
    """
    auc = result.macro.get("roc_auc")
    if auc is None or not np.isfinite(auc.value):
        return []
    if np.isfinite(auc.low) and np.isfinite(auc.high):
        if auc.low <= 0.5 <= auc.high:
            level = int(round(result.ci_level * 100))
            return [f"chance level: ROC AUC on {split} = {auc.value:.3f}, its {level}% CI [{auc.low:.3f}, "
                    f"{auc.high:.3f}] contains 0.5: on this split the model is not distinguishable from guessing"]
        return []
    if auc.value <= 0.5:
        return [f"chance level: ROC AUC on {split} = {auc.value:.3f} (no CI): the model does no better than guessing"]
    return []


def run_warnings(run_dir: Path) -> list[str]:
    """The training's warnings recorded in the run's ``status.json`` (``warnings``; none when absent)."""

    try:
        items = read_json(Path(run_dir) / "status.json").get("warnings") or []
    except (OSError, ValueError, AttributeError):
        return []
    return [f"training: {w}" for w in items if isinstance(w, str)]


def _calibration_rows(ev: ClassificationEvaluation) -> list[tuple[str, str]]:
    d, split = ev.decision, ev.split
    rows = [(f"ECE ({name}, {c.count.size} equal-width bins)", f"{c.ece:.4f}") for name, c in ev.reliability.items()]
    rows.append((f"temperature (learned on {d.fitted_on})", f"{d.temperature:.3f}"))
    rows.append(("AURC (area under risk-coverage, lower is better)", f"{ev.risk_coverage.aurc:.4f}"))
    if d.abstain_below > 0:
        rows.append((f"abstain (no call) below confidence ({d.abstain_rule})", f"{d.abstain_below:.3f}"))
        rows.append((f"coverage on {split}", "n/a" if ev.coverage is None else f"{ev.coverage:.3f}"))
        sel = ev.selective_accuracy
        rows.append((f"selective accuracy on {split} (answered cases)", "n/a" if sel is None else f"{sel:.3f}"))
        rows.append((f"cases abstained on {split}", f"{ev.n_abstained} of {ev.metrics.n_samples}"))
    else:
        rows.append(("abstention", "off"))
    return rows


def evaluate_classification(
    out_dir: str | Path,
    y_true: np.ndarray | Sequence[int],
    raw_probs: np.ndarray,
    class_names: Sequence[str],
    decision: DecisionRule | None = None,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    synthetic: bool = False,
    split: str = "test",
    run_info: Mapping[str, Any] | None = None,
    title: str = "Classification evaluation",
    explanations: Sequence[tuple[Path, str]] = (),
    extra: Mapping[str, Any] | None = None,
    n_bins: int = 15,
    warnings: Sequence[str] | None = None,
) -> ClassificationEvaluation:
    """Measure a classifier on one split under its learned rule; write metrics.json, plots, report.html.

    Args:
        out_dir: folder to write into (a run folder: its ``config.yaml`` is summarised in the report).
        y_true: (n,) true class indices of the reported split.
        raw_probs: (n, K) raw probabilities (before temperature scaling).
        class_names: K class names (binary: ``class_names[1]`` is the positive class).
        decision: the rule learned on validation (None: arg-max, no scaling, no abstention).
        n_bootstrap / seed: bootstrap settings.
        synthetic: the data are simulated (banner in the report, flag in the JSON).
        split: name of the reported split.
        run_info: technical facts shown in the report (no PHI); default: from ``out_dir/config.yaml``.
        title: report title.
        explanations: ``(png, caption)`` explanation overlays embedded in the report.
        extra: task-specific keys added to ``metrics.json`` (ensemble, data note ...).
        n_bins: bins of the reliability diagram / ECE.
        warnings: the training's warnings (default: ``out_dir/status.json``'s); with a split AUC
            whose CI contains 0.5 (:func:`chance_warnings`) they make a banner in the report and
            ``warnings`` in ``metrics.json``.
    """
    from medanomaly.evaluate.calibration import selective_accuracy
    from medanomaly.jsonio import write_json, write_text_atomic

    out = Path(out_dir)
    d = decision or DecisionRule(fitted_on="none")
    y = np.asarray(y_true).astype(np.int64)
    raw = to_probabilities(raw_probs, len(class_names))
    p = d.calibrate(raw)
    metrics = classification_metrics(y, p, class_names, d.threshold, n_bootstrap, seed, synthetic=synthetic)
    reliability = {"uncalibrated": reliability_curve(y, raw, n_bins)}
    if d.temperature != 1.0:
        reliability["temperature-scaled"] = reliability_curve(y, p, n_bins)
    rc = risk_coverage_curve(y, p)
    sel = cov = None
    if d.abstain_below > 0:
        sel, cov = selective_accuracy(y, p, d.abstain_below)
        sel = None if not np.isfinite(sel) else sel
    ev = ClassificationEvaluation(metrics, d, reliability, rc, sel, cov, int(d.call(p)[1].sum()), split, out)
    op = (cov, 1.0 - sel) if (cov is not None and sel is not None) else None
    figures = _figures(out / "plots", y, p, class_names, metrics, reliability, rc, op, seed)
    notes = [*(run_warnings(out) if warnings is None else warnings), *chance_warnings(metrics, split)]
    write_json(out / "metrics.json", {**ev.to_json(), **dict(extra or {}), "warnings": notes})
    info = {**(run_info if run_info is not None else _run_info(out)), "split": split, "classes": ", ".join(class_names)}
    html = _html(metrics, figures, info, _calibration_rows(ev), d.describe(class_names), split, title, explanations,
                 notes)  # fmt: skip
    write_text_atomic(out / "report.html", html)
    return ev
