"""k-fold cross-validation by patient: one model per fold, scored on its held-out patients.

The folds come from :func:`medanomaly.data.splits.patient_kfold` (scikit-learn's
``StratifiedGroupKFold``, groups = patients), so no patient is in a fold's training and validation
part at once. The fold models double as an ensemble (``ensemble.folds`` in the config).

Example:
    >>> import numpy as np
    >>> from medanomaly.data.arrays import LabelledImages
    >>> from medanomaly.registry import MODELS
    >>> from medanomaly.train.loop import TrainSettings
    >>> rng = np.random.default_rng(0)
    >>> data = LabelledImages(rng.random((12, 1, 8, 8)), np.arange(12) % 2, np.arange(12), ("a", "b"))
    >>> build = lambda: MODELS.create("compact_cnn", num_classes=2, widths=(4,), hidden=0)
    >>> cv = cross_validate(build, data, TrainSettings(epochs=1, batch_size=4, progress=False), k=3)
    >>> len(cv.fold_scores), cv.metric
    (3, 'auc')
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.data.arrays import LabelledImages


@dataclass(frozen=True, eq=False)
class CVResult:
    """Per-fold validation scores (the early-stopping metric at each fold's best epoch) and models."""

    metric: str
    fold_scores: tuple[float, ...]
    models: tuple[Any, ...]
    results: tuple[Any, ...]

    @property
    def mean(self) -> float:
        return float(np.nanmean(self.fold_scores))

    @property
    def std(self) -> float:
        """Sample standard deviation over folds (NaN for one fold)."""
        s = np.asarray(self.fold_scores, dtype=float)
        return float(np.nanstd(s, ddof=1)) if len(s) > 1 else math.nan

    def to_json(self) -> dict[str, Any]:
        return {"metric": f"val_{self.metric}", "folds": len(self.fold_scores), "fold_scores": list(self.fold_scores),
                "mean": self.mean, "std": self.std}


def cross_validate(build_model: Callable[[], Any], data: LabelledImages, settings, k: int = 5, seed: int = 0,
                   run_dir: str | Path | None = None, resume: bool = False) -> CVResult:
    """Train one model per patient-level fold of ``data`` and score it on the held-out fold.

    Args:
        build_model: returns a fresh (randomly initialised) model.
        data: the images to cross-validate (normally the training split only).
        settings: :class:`~medanomaly.train.loop.TrainSettings`; fold ``i`` uses seed ``settings.seed + i``.
        k: number of folds.
        seed: seed of the fold assignment.
        run_dir: fold ``i`` writes to ``run_dir/members/<i>`` (None = in memory).
        resume: resume each fold from its checkpoint.
    """
    import torch

    from medanomaly.data.splits import patient_kfold
    from medanomaly.train.loop import fit

    models, results = [], []
    for i, (tr, va) in enumerate(patient_kfold(data.patient_ids, data.labels, k, seed)):
        fold_settings = settings.replace(seed=settings.seed + i)
        torch.manual_seed(fold_settings.seed)
        model = build_model()
        out = Path(run_dir) / "members" / str(i) if run_dir is not None else None
        results.append(fit(model, data.subset(tr), data.subset(va), fold_settings, out, resume=resume))
        models.append(model)
    return CVResult(settings.early_stopping_metric, tuple(r.best_score for r in results), tuple(models),
                    tuple(results))
