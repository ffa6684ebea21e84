"""Evaluation plots (matplotlib, no display needed): ROC with a bootstrap band, precision-recall,
confusion matrix, reliability diagram and risk-coverage curve.

Every function returns a :class:`matplotlib.figure.Figure` built without ``pyplot`` (no global
state, no GUI backend: safe in servers and test workers); :func:`medanomaly.io.staged.save_figure` writes a PNG.
Titles say "(synthetic data)" when ``synthetic=True``.

Example:
    >>> import numpy as np
    >>> y = np.array([0, 1, 0, 1, 1, 0]); p = np.array([.2, .8, .4, .6, .9, .1])
    >>> fig = plot_roc(y, p, ("normal", "abnormal"), n_bootstrap=20)
    >>> fig.axes[0].get_xlabel()
    'False-positive rate (1 - specificity)'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from medanomaly.evaluate.metrics import roc_curve_band, to_probabilities

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from medanomaly.evaluate.calibration import ReliabilityCurve, RiskCoverage
    from medanomaly.evaluate.metrics import MetricsResult

__all__ = [
    "plot_confusion",
    "plot_pr",
    "plot_reliability",
    "plot_risk_coverage",
    "plot_roc",
]

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


def _figure(width: float = 5.6, height: float = 4.8) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _title(text: str, synthetic: bool) -> str:
    return f"{text}\n(synthetic data)" if synthetic else text


def _curve_classes(class_names: Sequence[str]) -> list[int]:
    """Binary: only the positive class (index 1); multi-class: every class one-vs-rest."""
    return [1] if len(class_names) == 2 else list(range(len(class_names)))


def plot_roc(
    y_true: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    result: MetricsResult | None = None,
    n_bootstrap: int = 200,
    seed: int = 0,
    synthetic: bool = False,
) -> Figure:
    """ROC curve per class (one-vs-rest; binary: the positive class) with a 95% bootstrap band.

    The legend gives the AUC and, when ``result`` is given, its bootstrap 95% CI.
    """
    p = to_probabilities(probs, len(class_names))
    y = np.asarray(y_true).astype(int)
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", lw=1, color="0.6", label="chance (AUC 0.5)")
    for i, c in enumerate(_curve_classes(class_names)):
        band = roc_curve_band(y == c, p[:, c], n_bootstrap=n_bootstrap, seed=seed)
        colour = _COLOURS[i % len(_COLOURS)]
        label = f"{class_names[c]}: AUC {band.auc:.3f}"
        if result is not None:
            e = result.per_class[class_names[c]]["roc_auc"]
            label += f" [{e.low:.3f}, {e.high:.3f}]"
        ax.fill_between(band.x, band.low, band.high, color=colour, alpha=0.18, lw=0)
        ax.plot(band.x, band.y, color=colour, lw=2, label=label)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
    ax.set_xlabel("False-positive rate (1 - specificity)")
    ax.set_ylabel("True-positive rate (sensitivity)")
    kind = "one-vs-rest " if len(class_names) > 2 else ""
    ax.set_title(_title(f"ROC, {kind}shaded: 95% bootstrap band", synthetic))
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_pr(
    y_true: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    result: MetricsResult | None = None,
    synthetic: bool = False,
) -> Figure:
    """Precision-recall curve per class with average precision (and its CI when ``result`` is given).

    The dotted line of each colour is that class's prevalence (a random classifier's precision).
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve

    p = to_probabilities(probs, len(class_names))
    y = np.asarray(y_true).astype(int)
    fig = _figure()
    ax = fig.add_subplot()
    for i, c in enumerate(_curve_classes(class_names)):
        colour = _COLOURS[i % len(_COLOURS)]
        prec, rec, _ = precision_recall_curve(y == c, p[:, c])
        ap = average_precision_score(y == c, p[:, c])
        label = f"{class_names[c]}: AP {ap:.3f}"
        if result is not None:
            e = result.per_class[class_names[c]]["pr_auc"]
            label += f" [{e.low:.3f}, {e.high:.3f}]"
        ax.step(rec, prec, where="post", color=colour, lw=2, label=label)
        ax.axhline(np.mean(y == c), color=colour, ls=":", lw=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.02))
    ax.set_xlabel("Recall (sensitivity)")
    ax.set_ylabel("Precision (positive predictive value)")
    ax.set_title(_title("Precision-recall (dotted: prevalence)", synthetic))
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_confusion(
    confusion: Sequence[Sequence[int]] | np.ndarray,
    class_names: Sequence[str],
    synthetic: bool = False,
    threshold: float | None = None,
) -> Figure:
    """Confusion matrix: colour = fraction of the true class (row), text = count and row %."""
    cm = np.asarray(confusion, dtype=float)
    rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k = len(class_names)
    fig = _figure(4.2 + 0.5 * k, 3.8 + 0.4 * k)
    ax = fig.add_subplot()
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            colour = "white" if rows[i, j] > 0.55 else "black"
            ax.text(j, i, f"{int(cm[i, j])}\n{100 * rows[i, j]:.0f}%", ha="center", va="center",
                    color=colour, fontsize=10)
    ax.set_xticks(range(k), labels=list(class_names), rotation=30, ha="right")
    ax.set_yticks(range(k), labels=list(class_names))
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    rule = f"threshold P({class_names[1]}) >= {threshold:.3f}" if threshold is not None else "arg-max"
    ax.set_title(_title(f"Confusion matrix ({rule})", synthetic))
    fig.colorbar(im, ax=ax, label="fraction of true class")
    return fig


def plot_reliability(
    curves: dict[str, ReliabilityCurve],
    synthetic: bool = False,
) -> Figure:
    """Reliability diagram(s): accuracy vs confidence per bin, with the case count per bin below.

    Args:
        curves: ``{"before": curve, "after temperature scaling": curve}`` or a single entry.
    """
    fig = _figure(5.6, 6.0)
    ax, hist = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    ax.plot([0, 1], [0, 1], ls="--", lw=1, color="0.5", label="perfect calibration")
    n = len(curves)
    for i, (name, curve) in enumerate(curves.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        width = np.diff(curve.edges)
        centres = curve.edges[:-1] + width / 2
        filled = curve.count > 0
        offset = (i - (n - 1) / 2) * width / (n + 1)
        ax.bar(centres[filled] + offset[filled], curve.accuracy[filled], width=width[filled] / (n + 1),
               color=colour, alpha=0.75, label=f"{name}: ECE {curve.ece:.3f}")
        ax.plot(curve.confidence[filled], curve.accuracy[filled], "o-", color=colour, ms=3, lw=1)
        hist.bar(centres + offset, curve.count, width=width / (n + 1), color=colour, alpha=0.75)
    ax.set(xlim=(0, 1), ylim=(0, 1.02))
    ax.set_ylabel("Accuracy in bin (fraction correct)")
    ax.set_title(_title("Reliability diagram (top-label confidence)", synthetic))
    ax.legend(loc="best", fontsize=8, framealpha=0.9)
    ax.grid(alpha=0.3)
    hist.set_xlabel("Confidence (largest class probability)")
    hist.set_ylabel("Cases per bin")
    hist.grid(alpha=0.3)
    return fig


def plot_risk_coverage(
    curves: dict[str, RiskCoverage],
    operating_point: tuple[float, float] | None = None,
    synthetic: bool = False,
) -> Figure:
    """Selective risk (error rate among answered cases) vs coverage, one line per curve.

    Args:
        curves: ``{name: RiskCoverage}``.
        operating_point: (coverage, risk) of the abstention threshold learned on validation.
    """
    fig = _figure()
    ax = fig.add_subplot()
    for i, (name, curve) in enumerate(curves.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        ax.step(curve.coverage, curve.risk, where="post", color=colour, lw=2,
                label=f"{name}: AURC {curve.aurc:.3f}")
        ax.axhline(curve.risk[-1], color=colour, ls=":", lw=1)
    if operating_point is not None:
        ax.plot(*operating_point, "k*", ms=12,
                label=f"abstention threshold: coverage {operating_point[0]:.2f}, risk {operating_point[1]:.3f}")
    top = max(float(np.max(c.risk)) for c in curves.values()) if curves else 1.0
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, max(top * 1.35, 0.05))  # head-room for the legend
    ax.set_xlabel("Coverage (fraction of cases answered)")
    ax.set_ylabel("Selective risk (error rate among answered)")
    ax.set_title(_title("Risk-coverage: abstain on low confidence\n(dotted: risk with no abstention)", synthetic))
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return fig
