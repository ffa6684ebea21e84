"""How a classifier turns probabilities into a call: learned once, on validation, in one place.

:func:`learn_decision` fits, on the VALIDATION split only,

1. a temperature (Guo et al. 2017) on the log of the raw probabilities (works for single models and
   ensembles alike), so the reported probabilities are calibrated;
2. the binary decision threshold on P(class 1) by a named rule (``youden``, ``f1``,
   ``sensitivity@0.9``, ``specificity@0.95``; ``argmax`` = none);
3. the abstention threshold on the top probability: a fixed confidence, or the one that answers
   a target fraction of validation cases.

The result, a :class:`DecisionRule`, is what a run stores (``model.json`` thresholds), what
``predict`` applies and what ``evaluate`` reports, so training, prediction and the report can
never disagree on the rule.

Example:
    >>> import numpy as np
    >>> y = np.array([0, 0, 1, 1]); p = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    >>> rule = learn_decision(y, p, calibrate=False, threshold_rule="youden")
    >>> rule.call(p)[0].tolist()
    [0, 0, 1, 1]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from numbers import Real
from typing import Any

import numpy as np

from medanomaly.errors import InputError

__all__ = ["DecisionRule", "learn_decision"]


@dataclass(frozen=True)
class DecisionRule:
    """The learned call: temperature, binary threshold, abstention threshold, and how each was chosen.

    Attributes:
        temperature: divides the log-probabilities (1 = no scaling).
        threshold: binary only: call class 1 when its calibrated probability is >= this (None: arg-max).
        threshold_rule: the rule that chose ``threshold`` on validation (None: arg-max).
        abstain_below: abstain when the top calibrated probability is below this (0 = never).
        abstain_rule: how ``abstain_below`` was set (``"confidence 0.7"``, ``"coverage 0.9 on val"``).
        fitted_on: the split everything was learned on.
    """

    temperature: float = 1.0
    threshold: float | None = None
    threshold_rule: str | None = None
    abstain_below: float = 0.0
    abstain_rule: str | None = None
    fitted_on: str = "val"

    def __post_init__(self) -> None:
        """Refuse values no learned rule has (a hand-edited or foreign model.json): ValueError naming the field."""
        values = {"temperature": self.temperature, "abstain_below": self.abstain_below, "threshold": self.threshold}
        for name, value in values.items():
            if value is None and name == "threshold":
                continue
            if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
                raise ValueError(f"decision rule {name} must be a finite number, got {value!r}")
        if self.temperature <= 0:
            raise ValueError(f"decision rule temperature must be > 0, got {self.temperature!r}")
        for name in ("abstain_below", "threshold"):
            if values[name] is not None and not 0.0 <= values[name] <= 1.0:  # type: ignore[operator]
                raise ValueError(f"decision rule {name} must lie in [0, 1] (a probability), got {values[name]!r}")

    def calibrate(self, raw_probs: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (N, K) from raw ones (temperature applied to their logs)."""
        from medanomaly.evaluate.calibration import softmax

        p = np.asarray(raw_probs, dtype=np.float64)
        if self.temperature == 1.0:
            return p
        return softmax(np.log(np.clip(p, 1e-12, 1.0)), self.temperature)

    def call(self, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(called class index per row, abstained mask) for calibrated probabilities (N, K)."""
        probs = np.asarray(probs)
        if self.threshold is not None and probs.shape[1] == 2:
            arg = (probs[:, 1] >= self.threshold).astype(int)
        else:
            arg = probs.argmax(axis=1)
        return arg, probs.max(axis=1) < self.abstain_below

    def describe(self, class_names: Sequence[str]) -> str:
        """The decision rule in words (for reports)."""
        if self.threshold is None:
            call = "arg-max of the calibrated class probabilities"
        else:
            call = (f"P({class_names[1]}) >= {self.threshold:.4f}, threshold learned on the {self.fitted_on} "
                    f"split by rule '{self.threshold_rule}'")  # fmt: skip
        if self.abstain_below > 0:
            call += (f"; abstain (no call, low confidence) when the top probability is below "
                     f"{self.abstain_below:.3f} ({self.abstain_rule})")  # fmt: skip
        return call

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def learn_decision(y_val: np.ndarray | Sequence[int], raw_val: np.ndarray, *, calibrate: bool = True,
                   threshold_rule: str = "youden", abstain_confidence: float | None = None,
                   abstain_coverage: float | None = None) -> DecisionRule:  # fmt: skip
    """Learn the :class:`DecisionRule` on the validation split.

    Args:
        y_val: (n,) true class indices of the validation split.
        raw_val: (n, K) raw (uncalibrated) probabilities of the validation split.
        calibrate: fit a temperature.
        threshold_rule: binary threshold rule (see :func:`medanomaly.evaluate.metrics.choose_threshold`),
            or ``"argmax"``; ignored for more than two classes.
        abstain_confidence: a fixed abstention confidence (takes precedence over coverage).
        abstain_coverage: answer this fraction of validation cases (< 1), abstain on the rest.

    Raises:
        InputError: an empty validation split.
    """
    from medanomaly.evaluate.calibration import TemperatureScaler, threshold_for_coverage
    from medanomaly.evaluate.metrics import choose_threshold

    y = np.asarray(y_val).astype(np.int64)
    raw = np.asarray(raw_val, dtype=np.float64)
    if y.size == 0:
        raise InputError("the validation split is empty: nothing to learn the decision rule on")
    temperature = 1.0
    if calibrate:
        temperature = float(TemperatureScaler().fit(np.log(np.clip(raw, 1e-12, 1.0)), y).temperature_)
    rule = DecisionRule(temperature=temperature)
    probs = rule.calibrate(raw)
    threshold = rule_name = None
    if probs.shape[1] == 2 and threshold_rule != "argmax":
        threshold, rule_name = float(choose_threshold(y, probs[:, 1], threshold_rule)), threshold_rule
    abstain, abstain_rule = 0.0, None
    if abstain_confidence is not None:
        abstain, abstain_rule = float(abstain_confidence), f"confidence {abstain_confidence:g}"
    elif abstain_coverage is not None and abstain_coverage < 1.0:
        abstain = float(threshold_for_coverage(probs, abstain_coverage))
        abstain_rule = f"coverage {abstain_coverage:g} on val"
    return DecisionRule(temperature, threshold, rule_name, abstain, abstain_rule)
