"""Classification metrics with stratified bootstrap 95% confidence intervals.

One entry point, :func:`classification_metrics`, computes accuracy and, per class (one-vs-rest)
and macro-averaged, precision, recall (= sensitivity), specificity, F1, ROC AUC and PR AUC
(average precision), each with a percentile bootstrap confidence interval, plus the confusion
matrix. Binary and multi-class problems share the same code path: a binary problem is a
two-class problem whose positive class is ``class_names[1]``.

Why our own code and not a loop over scikit-learn: a 2,000-resample bootstrap calls each
scikit-learn metric 2,000 times (seconds to minutes per metric on a test set of a few thousand).
Here all resamples are scored at once with NumPy: confusion matrices by one ``bincount``, ROC AUC
and average precision from one sort per class (cumulative counts at distinct thresholds). The
unit tests check every statistic against scikit-learn on fixed arrays and on single resamples;
``bench/bench_evaluate_bootstrap.py`` prints the speed-up over a scikit-learn loop.

Decision thresholds are *learned on validation* (:func:`choose_threshold`) and then applied to
the test split: never chosen on the split that is reported.

Example:
    >>> import numpy as np
    >>> y = np.array([0, 0, 1, 1, 0, 1, 0, 1])
    >>> p = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.6, 0.7])
    >>> res = classification_metrics(y, p, ("normal", "abnormal"), n_bootstrap=200)
    >>> round(res.macro["roc_auc"].value, 4)
    0.875
    >>> res.confusion
    ((3, 1), (1, 3))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from medanomaly.errors import InputError

__all__ = [
    "CLASS_METRICS",
    "Estimate",
    "MetricsResult",
    "bootstrap_indices",
    "choose_threshold",
    "classification_metrics",
    "predict_labels",
    "roc_curve_band",
    "to_probabilities",
]

#: Metrics reported per class (one-vs-rest) and as a macro average, in report order.
CLASS_METRICS: tuple[str, ...] = (
    "precision",
    "recall",
    "specificity",
    "f1",
    "roc_auc",
    "pr_auc",
)

#: Resamples scored per vectorised block (bounds memory at ~block x n x 8 bytes per array).
_BLOCK = 250


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its bootstrap confidence interval (same unit as the metric, 0..1).

    Attributes:
        value: the metric on the full split.
        low / high: percentile bootstrap bounds (``nan`` if the metric is undefined).
    """

    value: float
    low: float
    high: float

    def to_json(self) -> dict[str, float | None]:
        def clean(x: float) -> float | None:
            return None if not np.isfinite(x) else round(float(x), 6)

        return {"value": clean(self.value), "ci_low": clean(self.low), "ci_high": clean(self.high)}

    def __format__(self, spec: str) -> str:
        spec = spec or ".3f"
        return f"{self.value:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"


@dataclass(frozen=True, eq=False)
class MetricsResult:
    """Metrics of one classifier on one split.

    Attributes:
        class_names: class names in probability-column order.
        accuracy: overall accuracy.
        per_class: ``{class: {metric: Estimate}}`` for every metric in :data:`CLASS_METRICS`,
            one-vs-rest.
        macro: unweighted mean over classes of each per-class metric.
        confusion: confusion matrix, rows = true class, columns = predicted class (counts).
        threshold: the binary decision threshold on P(positive) that was applied, or ``None``
            (multi-class: arg-max).
        n_samples: number of cases scored.
        n_bootstrap / ci_level / seed: how the intervals were computed.
        synthetic: True when the data are simulated (reports say so).
    """

    class_names: tuple[str, ...]
    accuracy: Estimate
    per_class: Mapping[str, Mapping[str, Estimate]]
    macro: Mapping[str, Estimate]
    confusion: tuple[tuple[int, ...], ...]
    threshold: float | None
    n_samples: int
    n_bootstrap: int
    ci_level: float
    seed: int
    synthetic: bool = False
    class_counts: tuple[int, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict (the ``metrics.json`` schema)."""
        return {
            "synthetic": self.synthetic,
            "class_names": list(self.class_names),
            "n_samples": self.n_samples,
            "class_counts": list(self.class_counts),
            "threshold": self.threshold,
            "bootstrap": {
                "n_resamples": self.n_bootstrap,
                "ci_level": self.ci_level,
                "method": "percentile, stratified by true class",
                "seed": self.seed,
            },
            "accuracy": self.accuracy.to_json(),
            "macro": {k: v.to_json() for k, v in self.macro.items()},
            "per_class": {c: {k: v.to_json() for k, v in m.items()} for c, m in self.per_class.items()},
            "confusion_matrix": [list(r) for r in self.confusion],
        }

    def summary(self) -> str:
        """A few human-readable lines (what ``medanomaly evaluate`` prints)."""
        tag = " (SYNTHETIC DATA)" if self.synthetic else ""
        pct = round(self.ci_level * 100)
        lines = [f"n={self.n_samples}{tag}; {pct}% bootstrap CIs ({self.n_bootstrap} resamples)"]
        lines.append(f"  accuracy      {self.accuracy}")
        for name in CLASS_METRICS:
            lines.append(f"  macro {name:<12}{self.macro[name]}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- input handling
def to_probabilities(probs: np.ndarray | Sequence[float], n_classes: int) -> np.ndarray:
    """Return an (n, K) probability matrix; a 1-D binary input is P(class 1).

    Raises:
        InputError: wrong shape, non-finite values, or a column count that is not ``n_classes``.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        if n_classes != 2:
            raise InputError(f"1-D scores need exactly 2 classes, got {n_classes} class names")
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2 or p.shape[1] != n_classes:
        raise InputError(f"probabilities must have shape (n, {n_classes}), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise InputError("probabilities contain NaN or infinite values")
    return p


def _check_labels(y_true: np.ndarray | Sequence[int], n_classes: int, n: int) -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1 or y.shape[0] != n:
        raise InputError(f"labels must be a 1-D array of {n} class indices, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        else:
            raise InputError(f"labels must be integer class indices, got dtype {y.dtype}")
    if n and (y.min() < 0 or y.max() >= n_classes):
        raise InputError(f"labels must lie in 0..{n_classes - 1}, got {y.min()}..{y.max()}")
    return y.astype(np.int64)


def predict_labels(p: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Class indices from an (n, K) probability matrix.

    Binary with a threshold: class 1 when ``P(class 1) >= threshold``; otherwise arg-max.
    """
    if threshold is not None:
        if p.shape[1] != 2:
            raise InputError("a decision threshold applies to binary problems only")
        return (p[:, 1] >= threshold).astype(np.int64)
    return np.argmax(p, axis=1).astype(np.int64)


# --------------------------------------------------------------------------- bootstrap
def bootstrap_indices(y: np.ndarray, n_bootstrap: int, seed: int = 0) -> np.ndarray:
    """Stratified bootstrap resamples: an (n_bootstrap, n) index matrix.

    Every resample keeps each class's count (cases are drawn with replacement within their own
    true class), so every class is present in every resample and AUCs are always defined.
    """
    rng = np.random.default_rng(seed)
    out = np.empty((n_bootstrap, y.shape[0]), dtype=np.int64)
    for k in np.unique(y):
        members = np.flatnonzero(y == k)
        out[:, members] = members[rng.integers(0, members.size, size=(n_bootstrap, members.size))]
    return out


def _confusions(y: np.ndarray, pred: np.ndarray, idx: np.ndarray, k: int) -> np.ndarray:
    """(B, K, K) confusion matrices of the resamples ``idx`` (rows true, columns predicted)."""
    b = idx.shape[0]
    codes = (np.arange(b)[:, None] * k * k + y[idx] * k + pred[idx]).ravel()
    return np.bincount(codes, minlength=b * k * k).reshape(b, k, k)


def _auc_ap_rows(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC AUC and average precision per row from one sort (tied scores grouped).

    ROC AUC is the trapezoidal area under the ROC points at distinct thresholds, which equals the
    Mann-Whitney statistic with ties counted one half. Average precision is scikit-learn's
    step-wise definition: AP = sum_t (R_t - R_{t-1}) P_t over distinct thresholds, high to low.

    Args:
        scores: (B, n) scores, higher = more likely positive.
        positive: (B, n) boolean truth.
    """
    order = np.argsort(-scores, axis=1, kind="stable")
    s = np.take_along_axis(scores, order, axis=1)
    pos = np.take_along_axis(positive, order, axis=1)
    tp = np.cumsum(pos, axis=1, dtype=np.float64)
    fp = np.arange(1, s.shape[1] + 1, dtype=np.float64) - tp
    # a threshold "ends" where the next score differs (and at the last case)
    ends = np.ones_like(pos, dtype=bool)
    ends[:, :-1] = s[:, :-1] != s[:, 1:]

    def previous_at_ends(counts: np.ndarray) -> np.ndarray:
        prev = np.zeros_like(counts)
        prev[:, 1:] = np.maximum.accumulate(np.where(ends, counts, 0.0), axis=1)[:, :-1]
        return prev

    tp_prev, fp_prev = previous_at_ends(tp), previous_at_ends(fp)
    n_pos = tp[:, -1]
    n_neg = fp[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        area = np.where(ends, (fp - fp_prev) * (tp + tp_prev) / 2.0, 0.0).sum(axis=1)
        auc = np.where((n_pos > 0) & (n_neg > 0), area / (n_pos * n_neg), np.nan)
        gain = np.where(ends, tp - tp_prev, 0.0)
        ap = np.where(n_pos > 0, (gain * tp / (tp + fp)).sum(axis=1) / n_pos, np.nan)
    return auc, ap


def _auc_rows(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """ROC AUC per row (see :func:`_auc_ap_rows`)."""
    return _auc_ap_rows(scores, positive)[0]


def _average_precision_rows(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Average precision per row (see :func:`_auc_ap_rows`)."""
    return _auc_ap_rows(scores, positive)[1]


def _block_stats(y: np.ndarray, p: np.ndarray, pred: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """All statistics for the resamples ``idx``: (B, 1 + K * len(CLASS_METRICS)) array.

    Column 0 is accuracy; then per class, in :data:`CLASS_METRICS` order.
    """
    k = p.shape[1]
    cm = _confusions(y, pred, idx, k).astype(np.float64)
    n = cm.sum(axis=(1, 2))
    tp = np.diagonal(cm, axis1=1, axis2=2)
    fp = cm.sum(axis=1) - tp
    fn = cm.sum(axis=2) - tp
    tn = n[:, None] - tp - fp - fn

    def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # zero_division=0, like scikit-learn
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(b > 0, a / np.where(b > 0, b, 1.0), 0.0)

    precision = ratio(tp, tp + fp)
    recall = ratio(tp, tp + fn)
    specificity = ratio(tn, tn + fp)
    f1 = ratio(2 * tp, 2 * tp + fp + fn)
    yi = y[idx]
    auc = np.empty_like(tp)
    ap = np.empty_like(tp)
    for c in range(k):
        auc[:, c], ap[:, c] = _auc_ap_rows(p[idx, c], yi == c)
    if k == 2:
        auc[:, 0] = auc[:, 1]  # binary: class 0's ROC AUC mirrors class 1's (same curve)
    acc = ratio(tp.sum(axis=1), n)
    per_class = np.stack([precision, recall, specificity, f1, auc, ap], axis=2)  # (B, K, M)
    return np.concatenate([acc[:, None], per_class.reshape(idx.shape[0], -1)], axis=1)


# --------------------------------------------------------------------------- entry point
def classification_metrics(
    y_true: np.ndarray | Sequence[int],
    probs: np.ndarray,
    class_names: Sequence[str],
    threshold: float | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci_level: float = 0.95,
    synthetic: bool = False,
) -> MetricsResult:
    """Accuracy plus per-class and macro metrics, each with a bootstrap CI, and the confusion matrix.

    Args:
        y_true: (n,) integer class indices (0..K-1).
        probs: (n, K) class probabilities, or (n,) P(class 1) for a binary problem.
        class_names: K names; binary problems: ``class_names[1]`` is the positive (abnormal) class.
        threshold: binary only, the decision threshold on P(class 1) (learn it on validation with
            :func:`choose_threshold`); ``None`` = arg-max (0.5 for binary).
        n_bootstrap: number of stratified resamples (0 = no intervals, bounds are ``nan``).
        seed: seed of the resampling.
        ci_level: confidence level of the percentile interval.
        synthetic: mark the result as measured on simulated data.

    Returns:
        A :class:`MetricsResult`; every value is a fraction in 0..1.

    Raises:
        InputError: shapes disagree, labels out of range, or a class has no cases.
    """
    names = tuple(str(c) for c in class_names)
    k = len(names)
    if k < 2:
        raise InputError(f"need at least 2 classes, got {k}")
    p = to_probabilities(probs, k)
    y = _check_labels(y_true, k, p.shape[0])
    counts = np.bincount(y, minlength=k)
    if np.any(counts == 0):
        missing = [names[i] for i in np.flatnonzero(counts == 0)]
        raise InputError(f"no cases of class(es) {missing} in this split: metrics undefined")
    pred = predict_labels(p, threshold)

    point = _block_stats(y, p, pred, np.arange(y.shape[0])[None, :])[0]
    boot = _bootstrap_stats(y, p, pred, n_bootstrap, seed)
    alpha = (1.0 - ci_level) / 2
    m = len(CLASS_METRICS)
    cols = [[1 + c * m + j for j in range(m)] for c in range(k)]
    accuracy = _estimates(point[:1], None if boot is None else boot[:, :1], alpha)[0]
    per_class = {names[c]: MappingProxyType(dict(zip(CLASS_METRICS, _estimates(
        point[cols[c]], None if boot is None else boot[:, cols[c]], alpha), strict=True))) for c in range(k)}
    macro_point = np.array([point[[cols[c][j] for c in range(k)]].mean() for j in range(m)])
    macro_boot = None if boot is None else np.stack(
        [boot[:, [cols[c][j] for c in range(k)]].mean(axis=1) for j in range(m)], axis=1)
    macro = dict(zip(CLASS_METRICS, _estimates(macro_point, macro_boot, alpha), strict=True))
    cm = _confusions(y, pred, np.arange(y.shape[0])[None, :], k)[0]
    return MetricsResult(
        class_names=names,
        accuracy=accuracy,
        per_class=MappingProxyType(per_class),
        macro=MappingProxyType(macro),
        confusion=tuple(tuple(int(v) for v in row) for row in cm),
        threshold=None if threshold is None else float(threshold),
        n_samples=int(y.shape[0]),
        n_bootstrap=int(n_bootstrap),
        ci_level=float(ci_level),
        seed=int(seed),
        synthetic=bool(synthetic),
        class_counts=tuple(int(c) for c in counts),
    )


def _bootstrap_stats(y: np.ndarray, p: np.ndarray, pred: np.ndarray, n_bootstrap: int, seed: int) -> np.ndarray | None:
    """The statistics of every stratified bootstrap resample (n_bootstrap, n_stats), or None."""
    if n_bootstrap <= 0:
        return None
    idx_all = bootstrap_indices(y, n_bootstrap, seed)
    blocks = [_block_stats(y, p, pred, idx_all[start : start + _BLOCK]) for start in range(0, n_bootstrap, _BLOCK)]
    return np.concatenate(blocks, axis=0)


def _estimates(point: np.ndarray, boot: np.ndarray | None, alpha: float) -> list[Estimate]:
    """Point values with their percentile interval over the resampled values (NaN bounds without)."""
    if boot is None:
        return [Estimate(float(v), float("nan"), float("nan")) for v in point]
    low, high = np.nanpercentile(boot, [100 * alpha, 100 * (1 - alpha)], axis=0)
    return [Estimate(float(v), float(lo), float(hi)) for v, lo, hi in zip(point, low, high, strict=True)]


# --------------------------------------------------------------------------- thresholds
def choose_threshold(
    y_val: np.ndarray | Sequence[int],
    p_val: np.ndarray | Sequence[float],
    rule: str = "youden",
) -> float:
    """Learn a binary decision threshold on P(positive) from the VALIDATION split.

    Rules:
        ``"youden"``: maximise sensitivity + specificity - 1.
        ``"f1"``: maximise F1 of the positive class.
        ``"sensitivity@X"``: highest threshold whose sensitivity is at least X (e.g. ``0.9``),
            i.e. the best specificity at that sensitivity (screening operating point).
        ``"specificity@X"``: lowest threshold whose specificity is at least X.

    Args:
        y_val: (n,) 0/1 labels of the validation split.
        p_val: (n,) P(class 1), or (n, 2) probabilities.
        rule: one of the rules above.

    Returns:
        The threshold t; apply it as ``P(class 1) >= t`` on the test split.
    """
    from sklearn.metrics import precision_recall_curve, roc_curve

    p = to_probabilities(p_val, 2)[:, 1]
    y = _check_labels(y_val, 2, p.shape[0])
    if y.min() == y.max():
        raise InputError("threshold selection needs both classes in the validation split")
    fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)
    thr = np.minimum(thr, 1.0)  # scikit-learn's first threshold is +inf (nothing positive)
    if rule == "youden":
        return float(thr[int(np.argmax(tpr - fpr))])
    if rule == "f1":
        prec, rec, pthr = precision_recall_curve(y, p)
        f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0.0)[:-1]
        return float(pthr[int(np.argmax(f1))])
    name, _, value = rule.partition("@")
    try:
        target = float(value)
    except ValueError:
        raise InputError(f"unknown threshold rule {rule!r}") from None
    if not 0.0 < target <= 1.0:
        raise InputError(f"target in {rule!r} must be in (0, 1]")
    if name == "sensitivity":
        ok = np.flatnonzero(tpr >= target)
        return float(thr[ok[0]])  # thresholds decrease: the first one that reaches the target
    if name == "specificity":
        ok = np.flatnonzero(1.0 - fpr >= target)
        return float(thr[ok[-1]])
    raise InputError(f"unknown threshold rule {rule!r} (youden, f1, sensitivity@X, specificity@X)")


# --------------------------------------------------------------------------- curves
@dataclass(frozen=True, eq=False)
class CurveBand:
    """A curve on a fixed x grid with a pointwise bootstrap band (for ROC plots).

    Attributes:
        x: grid (false-positive rate for ROC), 0..1.
        y: the curve on the full split, interpolated on ``x``.
        low / high: pointwise percentile band over bootstrap resamples.
        auc: area under the full-split curve.
    """

    x: np.ndarray
    y: np.ndarray
    low: np.ndarray
    high: np.ndarray
    auc: float


def _roc_on_grid(scores: np.ndarray, positive: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Step ROC per row, evaluated on an FPR grid: TPR(x) = max TPR among thresholds with FPR <= x.

    Args:
        scores: (B, n) scores; positive: (B, n) boolean truth; grid: (G,) FPR values.

    Returns:
        (B, G) TPR values.
    """
    order = np.argsort(-scores, axis=1, kind="stable")
    s = np.take_along_axis(scores, order, axis=1)
    pos = np.take_along_axis(positive, order, axis=1)
    tp = np.cumsum(pos, axis=1)
    fp = np.cumsum(~pos, axis=1)
    ends = np.ones_like(pos, dtype=bool)
    ends[:, :-1] = s[:, :-1] != s[:, 1:]
    out = np.empty((s.shape[0], grid.size))
    for b in range(s.shape[0]):
        n_pos, n_neg = max(tp[b, -1], 1), max(fp[b, -1], 1)
        fpr = np.r_[0.0, fp[b, ends[b]] / n_neg]
        tpr = np.r_[0.0, tp[b, ends[b]] / n_pos]
        out[b] = tpr[np.searchsorted(fpr, grid, side="right") - 1]
    return out


def roc_curve_band(
    y_true: np.ndarray,
    scores: np.ndarray,
    n_bootstrap: int = 200,
    seed: int = 0,
    ci_level: float = 0.95,
    n_grid: int = 201,
) -> CurveBand:
    """ROC curve of binary ``y_true`` (0/1) vs ``scores`` with a pointwise bootstrap band.

    Curves are step functions on an FPR grid (the best TPR reachable at each FPR); resamples are
    stratified like :func:`bootstrap_indices`.
    """
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y_true).astype(np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if y.min() == y.max():
        raise InputError("a ROC curve needs both classes")
    grid = np.linspace(0.0, 1.0, n_grid)
    curve = _roc_on_grid(s[None, :], (y == 1)[None, :], grid)[0]
    idx = bootstrap_indices(y, n_bootstrap, seed)
    boots = _roc_on_grid(s[idx], y[idx] == 1, grid)
    alpha = (1.0 - ci_level) / 2
    low, high = np.percentile(boots, [100 * alpha, 100 * (1 - alpha)], axis=0)
    return CurveBand(grid, curve, low, high, float(roc_auc_score(y, s)))
