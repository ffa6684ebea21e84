"""A small training loop for fusion networks: modality dropout and branch supervision.

Why not :func:`medanomaly.train.loop.fit`: fusion networks take a second input (the modality
presence mask, (B, M)), training must drop modalities at random so the network learns to predict
from what is there, and decision/hybrid networks supervise every per-modality branch. The
generic loop has none of these, so this loop does those three things and reuses the generic
helpers (``seed_everything``, ``softmax``, ``quick_scores``) and the safetensors checkpoints;
the lead can fold a ``present``/auxiliary-loss hook into the generic loop later.

Model selection is on the validation split (best AUC), never on test.

Example:
    >>> import numpy as np
    >>> from medanomaly.registry import MODELS
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(16, 2, 16, 16)).astype("float32"), np.arange(16) % 2
    >>> net = MODELS.create("fusion_decision", modalities=("T1", "PD"), widths=(4, 8))
    >>> result = fit_fusion(net, (x, y), (x, y), FusionTrainSettings(epochs=1, batch_size=8))
    >>> result.epochs_run
    1
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from medanomaly.errors import InputError

Split = tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class FusionTrainSettings:
    """Training settings (the ``train:`` section of a fusion config).

    Attributes:
        epochs: passes over the training set.
        batch_size: samples per step.
        lr / weight_decay: AdamW settings.
        modality_dropout: probability of dropping each modality of a training sample (at least
            one modality is always kept); 0 disables it.
        branch_weight: weight of the per-modality branch losses (decision and hybrid networks).
        flips: random flips of every spatial axis (same flip for all modalities).
        seed: seeds weights, batches, dropout and flips.
    """

    epochs: int = 15
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    modality_dropout: float = 0.3
    branch_weight: float = 0.5
    flips: bool = True
    seed: int = 0


@dataclass(frozen=True)
class FusionFitResult:
    """What :func:`fit_fusion` did: best epoch and validation AUC, time, per-epoch history."""

    best_epoch: int
    best_val_auc: float
    epochs_run: int
    seconds: float
    history: tuple[dict[str, float], ...]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def modality_dropout_mask(n: int, m: int, p: float, rng: np.random.Generator) -> np.ndarray:
    """(n, m) presence mask: each modality dropped with probability ``p``; one is always kept."""
    present = rng.random((n, m)) >= p
    none = ~present.any(axis=1)
    if none.any():
        present[np.flatnonzero(none), rng.integers(m, size=int(none.sum()))] = True
    return present


def _unpack(split: Split, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y = np.asarray(split[0], np.float32), np.asarray(split[1], np.int64)
    present = np.asarray(split[2], bool) if len(split) == 3 else np.ones((len(x), m), bool)
    if x.ndim < 4 or x.shape[1] != m or len(y) != len(x) or present.shape != (len(x), m):
        raise InputError(f"fusion data must be (N, {m}, *spatial) with N labels and an (N, {m}) mask")
    return x, y, present


def predict_proba(model, x: np.ndarray, present: np.ndarray | None = None, batch_size: int = 128) -> np.ndarray:
    """Class probabilities (N, K) of a fusion network in eval mode."""
    import torch

    from medanomaly.evaluate.calibration import softmax

    model.eval()
    m = len(model.modalities)
    present = np.ones((len(x), m), bool) if present is None else np.asarray(present, bool)
    outs = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32))
            outs.append(model(xb, torch.from_numpy(present[i : i + batch_size])).float().numpy())
    logits = np.concatenate(outs) if outs else np.zeros((0, model.num_classes), np.float32)
    return softmax(logits)


def fit_fusion(model, train: Split, val: Split | None, settings: FusionTrainSettings) -> FusionFitResult:
    """Train ``model`` in place; keep the weights of the best validation-AUC epoch.

    Args:
        model: a registered fusion network (``MODELS.create("fusion_...")``).
        train: (images (N, M, *S), labels (N,)[, presence (N, M)]).
        val: the same for validation, or None (then the last epoch is kept).
        settings: :class:`FusionTrainSettings`.
    """
    import torch
    from torch import nn

    from medanomaly.train.loop import quick_scores, seed_everything

    m = len(model.modalities)
    x, y, present = _unpack(train, m)
    if val is not None:
        vx, vy, vpresent = _unpack(val, m)
    if settings.epochs < 1 or settings.batch_size < 1:
        raise InputError("epochs and batch_size must be >= 1")
    seed_everything(settings.seed)
    rng = np.random.default_rng(settings.seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps = settings.epochs * int(np.ceil(len(x) / settings.batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=settings.lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss(reduction="none")
    spatial_axes = tuple(range(2, x.ndim))
    best_state, best_auc, best_epoch, history = None, -np.inf, 0, []
    start = time.perf_counter()
    for epoch in range(settings.epochs):
        model.train()
        order = rng.permutation(len(x))
        total = 0.0
        for i in range(0, len(x), settings.batch_size):
            idx = order[i : i + settings.batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            xb = x[idx]
            if settings.flips:
                for axis in spatial_axes:
                    if rng.random() < 0.5:
                        xb = np.flip(xb, axis=axis)
            pb = present[idx]
            if settings.modality_dropout > 0 and m > 1:
                pb = pb & modality_dropout_mask(len(idx), m, settings.modality_dropout, rng)
                empty = ~pb.any(axis=1)
                pb[empty] = present[idx][empty]
            xt = torch.from_numpy(np.ascontiguousarray(xb))
            yt = torch.from_numpy(y[idx])
            pt = torch.from_numpy(pb)
            logits, branches = model.forward_all(xt, pt)
            loss = loss_fn(logits, yt).mean()
            if branches is not None and settings.branch_weight > 0:
                per_branch = torch.stack([loss_fn(branches[:, j], yt) for j in range(m)], dim=1)
                pf = pt.float()
                loss = loss + settings.branch_weight * (per_branch * pf).sum() / pf.sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        record = {"epoch": epoch, "train_loss": total / len(x)}
        if val is not None:
            scores = quick_scores(vy, predict_proba(model, vx, vpresent))
            record.update({f"val_{k}": v for k, v in scores.items()})
            if np.isfinite(scores["auc"]) and scores["auc"] > best_auc:
                best_auc, best_epoch = scores["auc"], epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        history.append(record)
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_epoch = settings.epochs - 1
    return FusionFitResult(
        best_epoch=best_epoch,
        best_val_auc=float(best_auc) if np.isfinite(best_auc) else float("nan"),
        epochs_run=settings.epochs,
        seconds=time.perf_counter() - start,
        history=tuple(history),
    )
