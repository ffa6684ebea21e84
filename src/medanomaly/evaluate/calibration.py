"""Calibration and abstention: reliability diagrams, ECE, temperature scaling, the "uncertain" option.

* :func:`reliability_curve` / :func:`expected_calibration_error`: top-label calibration in
  equal-width confidence bins (Guo et al. 2017): confidence = the largest class probability,
  correct = the arg-max class is the true class. ECE = sum_b (n_b / n) |accuracy_b - confidence_b|.
* :class:`TemperatureScaler`: one scalar T > 0 that divides the logits, fitted by minimising the
  negative log-likelihood on the VALIDATION split; it changes confidence, never the arg-max class.
  Written here rather than taken from scikit-learn because our models hand over logits (not a
  fitted scikit-learn estimator) and the fit is one bounded 1-D minimisation.
* Abstention: a case whose confidence is below a threshold is answered ``"uncertain"``.
  :func:`risk_coverage_curve` gives selective risk (error rate among answered cases) against
  coverage (fraction answered) and its area (AURC, lower is better);
  :func:`threshold_for_coverage` learns the confidence threshold on validation for a target coverage.

Example:
    >>> import numpy as np
    >>> p = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.45, 0.55]])
    >>> y = np.array([0, 1, 1, 1])
    >>> round(expected_calibration_error(y, p, n_bins=10), 4)
    0.1125
    >>> with_abstention(p, ("normal", "abnormal"), confidence_threshold=0.7)
    ('normal', 'uncertain', 'abnormal', 'uncertain')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medanomaly.errors import InputError
from medanomaly.evaluate.metrics import to_probabilities

__all__ = [
    "UNCERTAIN",
    "ReliabilityCurve",
    "RiskCoverage",
    "TemperatureScaler",
    "expected_calibration_error",
    "reliability_curve",
    "risk_coverage_curve",
    "selective_accuracy",
    "selective_accuracy_at_coverage",
    "softmax",
    "threshold_for_coverage",
    "with_abstention",
]

#: The label given when the model abstains.
UNCERTAIN = "uncertain"


def _probs_and_labels(
    y_true: np.ndarray | Sequence[int], probs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    p = to_probabilities(p, 2 if p.ndim == 1 else p.shape[1])
    y = np.asarray(y_true).astype(np.int64)
    if y.shape != (p.shape[0],):
        raise InputError(f"labels shape {y.shape} does not match probabilities {p.shape}")
    return p, y


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of (n, K) logits divided by ``temperature``; (n,) logits = binary."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 1:
        z = np.stack([np.zeros_like(z), z], axis=1)  # sigmoid(z) == softmax([0, z])[1]
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite logits give NaN rows, which the model refuses
        z = z / temperature
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- reliability
@dataclass(frozen=True, eq=False)
class ReliabilityCurve:
    """Top-label reliability diagram data in equal-width confidence bins.

    Attributes:
        edges: (n_bins + 1,) bin edges on confidence, 0..1.
        confidence: (n_bins,) mean confidence per bin (``nan`` where empty).
        accuracy: (n_bins,) fraction correct per bin (``nan`` where empty).
        count: (n_bins,) cases per bin.
        ece: expected calibration error (0..1).
    """

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray
    ece: float

    def to_json(self) -> dict[str, object]:
        def clean(a: np.ndarray) -> list[float | None]:
            return [None if not np.isfinite(v) else round(float(v), 6) for v in a]

        return {
            "ece": round(self.ece, 6),
            "bin_edges": clean(self.edges),
            "bin_confidence": clean(self.confidence),
            "bin_accuracy": clean(self.accuracy),
            "bin_count": [int(c) for c in self.count],
        }


def reliability_curve(
    y_true: np.ndarray | Sequence[int], probs: np.ndarray, n_bins: int = 15
) -> ReliabilityCurve:
    """Reliability diagram data and ECE (top-label, ``n_bins`` equal-width bins on 0..1).

    Args:
        y_true: (n,) class indices.
        probs: (n, K) probabilities, or (n,) P(class 1).
        n_bins: number of bins.
    """
    p, y = _probs_and_labels(y_true, probs)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # right-closed bins like scikit-learn's calibration_curve: bin b holds (e_b, e_{b+1}]
    which = np.clip(np.searchsorted(edges[1:-1], conf, side="left"), 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, weights=conf, minlength=n_bins) / count
        mean_acc = np.bincount(which, weights=correct, minlength=n_bins) / count
    filled = count > 0
    ece = float(np.sum(count[filled] * np.abs(mean_acc[filled] - mean_conf[filled])) / max(y.size, 1))
    return ReliabilityCurve(edges, mean_conf, mean_acc, count, ece)


def expected_calibration_error(
    y_true: np.ndarray | Sequence[int], probs: np.ndarray, n_bins: int = 15
) -> float:
    """Top-label ECE in ``n_bins`` equal-width bins (0 = perfectly calibrated, fraction 0..1)."""
    return reliability_curve(y_true, probs, n_bins).ece


# --------------------------------------------------------------------------- temperature
class TemperatureScaler:
    """Temperature scaling (Guo et al. 2017): ``softmax(logits / T)`` with T fitted on validation.

    Args:
        bounds: search interval for T.

    Attributes:
        temperature_: the fitted temperature (> 1 softens an over-confident model).
        nll_before_ / nll_after_: validation mean negative log-likelihood at T = 1 and at T.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> y = rng.integers(0, 3, 500)
        >>> logits = rng.normal(size=(500, 3)); logits[np.arange(500), y] += 1.0
        >>> ts = TemperatureScaler().fit(logits * 5, y)   # 5x over-confident
        >>> 3.5 < ts.temperature_ < 7.0
        True
    """

    def __init__(self, bounds: tuple[float, float] = (0.05, 20.0)) -> None:
        self.bounds = bounds

    @staticmethod
    def _nll(logits: np.ndarray, y: np.ndarray, t: float) -> float:
        z = logits / t
        z = z - z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-log_p[np.arange(y.size), y].mean())

    def fit(self, logits: np.ndarray, y_true: np.ndarray | Sequence[int]) -> TemperatureScaler:
        """Learn ``temperature_`` on validation logits (n, K) or binary logits (n,)."""
        from scipy.optimize import minimize_scalar

        z = np.asarray(logits, dtype=np.float64)
        if z.ndim == 1:
            z = np.stack([np.zeros_like(z), z], axis=1)
        y = np.asarray(y_true).astype(np.int64)
        if z.ndim != 2 or y.shape != (z.shape[0],) or y.size == 0:
            raise InputError(f"logits {z.shape} and labels {y.shape} do not match")
        if not np.all(np.isfinite(z)):
            raise InputError("logits contain NaN or infinite values")
        lo, hi = np.log(self.bounds[0]), np.log(self.bounds[1])
        res = minimize_scalar(
            lambda log_t: self._nll(z, y, float(np.exp(log_t))), bounds=(lo, hi), method="bounded"
        )
        self.temperature_ = float(np.exp(res.x))
        self.nll_before_ = self._nll(z, y, 1.0)
        self.nll_after_ = self._nll(z, y, self.temperature_)
        return self

    def transform(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (n, K) for logits (n, K) or binary logits (n,)."""
        if not hasattr(self, "temperature_"):
            raise RuntimeError("TemperatureScaler is not fitted: call fit(val_logits, val_labels)")
        return softmax(logits, self.temperature_)


# --------------------------------------------------------------------------- abstention
def with_abstention(
    probs: np.ndarray, class_names: Sequence[str], confidence_threshold: float
) -> tuple[str, ...]:
    """Predicted class names, or ``"uncertain"`` where the top probability < ``confidence_threshold``."""
    p = to_probabilities(probs, len(class_names))
    conf, arg = p.max(axis=1), p.argmax(axis=1)
    return tuple(
        UNCERTAIN if c < confidence_threshold else str(class_names[a]) for c, a in zip(conf, arg, strict=True)
    )


@dataclass(frozen=True, eq=False)
class RiskCoverage:
    """Selective risk against coverage, answering the most confident cases first.

    Attributes:
        coverage: (m,) fraction of cases answered, increasing to 1.
        risk: (m,) error rate among the answered cases.
        thresholds: (m,) confidence threshold that gives each coverage (answer if conf >= t).
        aurc: area under the risk-coverage curve (mean selective risk over all coverages; lower
            is better; equals the error rate when confidence carries no information).
    """

    coverage: np.ndarray
    risk: np.ndarray
    thresholds: np.ndarray
    aurc: float

    def to_json(self) -> dict[str, object]:
        step = max(1, self.coverage.size // 100)  # at most ~100 points in metrics.json
        keep = np.unique(np.r_[np.arange(0, self.coverage.size, step), self.coverage.size - 1])
        return {
            "aurc": round(self.aurc, 6),
            "coverage": [round(float(v), 6) for v in self.coverage[keep]],
            "risk": [round(float(v), 6) for v in self.risk[keep]],
            "threshold": [round(float(v), 6) for v in self.thresholds[keep]],
        }


def risk_coverage_curve(y_true: np.ndarray | Sequence[int], probs: np.ndarray) -> RiskCoverage:
    """Risk-coverage curve of top-label confidence (Geifman & El-Yaniv 2017).

    Cases with equal confidence enter together, so the curve does not depend on their order.
    """
    p, y = _probs_and_labels(y_true, probs)
    if y.size == 0:
        raise InputError("risk-coverage needs at least one case")
    conf = p.max(axis=1)
    err = (p.argmax(axis=1) != y).astype(np.float64)
    order = np.argsort(-conf, kind="stable")
    c, e = conf[order], np.cumsum(err[order])
    ends = np.r_[c[:-1] != c[1:], True]
    k = np.flatnonzero(ends) + 1  # number answered at each distinct threshold
    risk = e[k - 1] / k
    coverage = k / y.size
    sizes = np.diff(np.r_[0, k])
    aurc = float(np.sum(risk * sizes) / y.size)
    return RiskCoverage(coverage, risk, c[k - 1], aurc)


def threshold_for_coverage(p_val: np.ndarray, coverage: float = 0.9) -> float:
    """Confidence threshold (learned on VALIDATION) that answers about ``coverage`` of the cases.

    Returns the largest threshold t with fraction(conf >= t) >= coverage.
    """
    if not 0.0 < coverage <= 1.0:
        raise InputError(f"coverage must be in (0, 1], got {coverage}")
    p = np.asarray(p_val, dtype=np.float64)
    p = to_probabilities(p, 2 if p.ndim == 1 else p.shape[1])
    conf = np.sort(p.max(axis=1))[::-1]
    k = int(np.ceil(coverage * conf.size))
    return float(conf[max(k, 1) - 1])


def selective_accuracy(
    y_true: np.ndarray | Sequence[int], probs: np.ndarray, confidence_threshold: float
) -> tuple[float, float]:
    """(accuracy on answered cases, coverage) when abstaining below ``confidence_threshold``."""
    p, y = _probs_and_labels(y_true, probs)
    answered = p.max(axis=1) >= confidence_threshold
    cov = float(answered.mean()) if y.size else 0.0
    if not answered.any():
        return float("nan"), cov
    return float((p[answered].argmax(axis=1) == y[answered]).mean()), cov


def selective_accuracy_at_coverage(
    y_true: np.ndarray | Sequence[int], probs: np.ndarray, coverage: float = 0.9
) -> float:
    """Accuracy on the ``coverage`` fraction of most confident cases of this split (descriptive).

    Reads the risk-coverage curve at the first point whose coverage reaches ``coverage`` (tied
    confidences enter together). To *deploy* abstention, learn the threshold on validation with
    :func:`threshold_for_coverage` and apply it with :func:`selective_accuracy` instead.
    """
    if not 0.0 < coverage <= 1.0:
        raise InputError(f"coverage must be in (0, 1], got {coverage}")
    curve = risk_coverage_curve(y_true, probs)
    i = int(np.searchsorted(curve.coverage, coverage - 1e-12, side="left"))
    return float(1.0 - curve.risk[min(i, curve.risk.size - 1)])
