"""Benchmark: bootstrap CIs of classification metrics, vectorised (ours) vs a scikit-learn loop.

Same data, same stratified resample indices, in this one process:

* baseline: for each resample, scikit-learn's ``confusion_matrix``, ``roc_auc_score`` and
  ``average_precision_score`` per class (what a straightforward implementation does);
* ours: :func:`medanomaly.evaluate.metrics.classification_metrics` (all resamples at once).

Checks that both give the same interval bounds for macro ROC AUC and per-class average precision,
then prints seconds for each and the speed-up ratio baseline/ours. Usage::

    .venv/bin/python bench/bench_evaluate_bootstrap.py [--n 2000] [--resamples 1000] [--classes 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _data(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    z = rng.normal(size=(n, k))
    z[np.arange(n), y] += 1.2
    p = np.exp(z)
    return y, p / p.sum(axis=1, keepdims=True)


def sklearn_loop(y: np.ndarray, p: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(B, 2) macro ROC AUC and macro average precision per resample, with scikit-learn."""
    from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

    k = p.shape[1]
    out = np.empty((idx.shape[0], 2))
    for b, rows in enumerate(idx):
        yy, pp = y[rows], p[rows]
        confusion_matrix(yy, pp.argmax(axis=1), labels=list(range(k)))
        out[b, 0] = np.mean([roc_auc_score(yy == c, pp[:, c]) for c in range(k)])
        out[b, 1] = np.mean([average_precision_score(yy == c, pp[:, c]) for c in range(k)])
    return out


def main() -> None:
    from medanomaly.evaluate.metrics import bootstrap_indices, classification_metrics

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--classes", type=int, default=3)
    args = ap.parse_args()
    y, p = _data(args.n, args.classes)
    names = [f"c{i}" for i in range(args.classes)]

    classification_metrics(y[:50], p[:50], names, n_bootstrap=10)  # warm-up (imports)
    t0 = time.perf_counter()
    ours = classification_metrics(y, p, names, n_bootstrap=args.resamples, seed=0)
    t_ours = time.perf_counter() - t0

    idx = bootstrap_indices(y, args.resamples, seed=0)
    t0 = time.perf_counter()
    ref = sklearn_loop(y, p, idx)
    t_ref = time.perf_counter() - t0
    lo, hi = np.percentile(ref, [2.5, 97.5], axis=0)
    assert np.isclose(ours.macro["roc_auc"].low, lo[0]) and np.isclose(ours.macro["roc_auc"].high, hi[0])
    assert np.isclose(ours.macro["pr_auc"].low, lo[1]) and np.isclose(ours.macro["pr_auc"].high, hi[1])

    print(f"n={args.n} classes={args.classes} resamples={args.resamples} (same intervals: checked)")
    print(f"scikit-learn loop (AUC + AP + confusion only): {t_ref:8.2f} s")
    print(f"medanomaly (all 13+ metrics, vectorised):      {t_ours:8.2f} s")
    print(f"speed-up ratio (sklearn / ours): {t_ref / t_ours:.1f}x")


if __name__ == "__main__":
    main()
