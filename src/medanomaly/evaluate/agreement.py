"""Bland-Altman agreement between a measurement and a reference (e.g. measured vs simulated volume).

Bias = mean difference (measured - reference); 95 % limits of agreement = bias +- 1.96 SD of the
differences (Bland & Altman 1986). ``relative=True`` uses percentage differences relative to the
pair mean, the usual choice for volumes whose error grows with size.

Example:
    >>> ba = bland_altman([1.1, 2.0, 2.9], [1.0, 2.0, 3.0])
    >>> round(ba.bias, 3), ba.n
    (0.0, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["BlandAltman", "bland_altman"]


@dataclass(frozen=True)
class BlandAltman:
    """Agreement summary.

    Attributes:
        bias: mean difference (unit of the measure, or % when relative).
        sd: standard deviation of the differences.
        loa_low / loa_high: 95 % limits of agreement.
        n: number of pairs.
        relative: differences are percentages of the pair mean.
        means / diffs: per-pair means and differences (for the plot).
    """

    bias: float
    sd: float
    loa_low: float
    loa_high: float
    n: int
    relative: bool
    means: tuple[float, ...]
    diffs: tuple[float, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "bias": self.bias,
            "sd": self.sd,
            "loa_low": self.loa_low,
            "loa_high": self.loa_high,
            "n": self.n,
            "relative_percent": self.relative,
        }


def bland_altman(measured: Sequence[float], reference: Sequence[float], relative: bool = False) -> BlandAltman:
    """Bias and 95 % limits of agreement of ``measured`` against ``reference``.

    Raises:
        ValueError: lengths differ or fewer than 2 pairs.
    """
    m = np.asarray(measured, float)
    r = np.asarray(reference, float)
    if m.shape != r.shape:
        raise ValueError(f"measured and reference differ in length: {m.shape} vs {r.shape}")
    if m.size < 2:
        raise ValueError("Bland-Altman needs at least 2 pairs")
    means = (m + r) / 2.0
    diffs = m - r
    if relative:
        diffs = 100.0 * diffs / np.where(means == 0, np.nan, means)
    ok = np.isfinite(diffs)
    d = diffs[ok]
    bias = float(d.mean())
    sd = float(d.std(ddof=1)) if d.size > 1 else 0.0
    return BlandAltman(
        bias=bias,
        sd=sd,
        loa_low=bias - 1.96 * sd,
        loa_high=bias + 1.96 * sd,
        n=int(d.size),
        relative=relative,
        means=tuple(float(v) for v in means[ok]),
        diffs=tuple(float(v) for v in d),
    )
