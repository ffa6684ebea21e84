"""Fusion training: modality dropout and branch supervision as hooks of the one training loop.

Fusion networks take a second input (the modality presence mask, (B, M)), training drops
modalities at random so the network learns to predict from what is there, and decision/hybrid
networks supervise every per-modality branch. These three things are the hooks this module hands
to :func:`medanomaly.train.engine.train` (batch transform: flips + modality dropout; loss: fused
plus per-branch cross-entropy over the present modalities; the model's ``forward_all``); the
loop, seeding, step budget, ``torchrun`` and checkpoints are shared with every other task.

Model selection is on the validation split (best AUC), never on test.

Example:
    >>> import numpy as np
    >>> from medanomaly.registry import MODELS
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(16, 2, 16, 16)).astype("float32"), np.arange(16) % 2
    >>> net = MODELS.create("fusion_decision", modalities=("T1", "PD"), widths=(4, 8))
    >>> result = fit_fusion(net, (x, y), (x, y), FusionTrainSettings(epochs=1, batch_size=8, progress=False))
    >>> result.epochs_run
    1
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from pydantic import Field

from medanomaly.errors import InputError
from medanomaly.train.distributed import module_device
from medanomaly.train.precision import resolve_precision
from medanomaly.train.settings import MAX_SEED, LoopControl

Split = tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]


class FusionTrainSection(LoopControl):
    """Training settings (the ``train:`` section of a fusion config; the only source of defaults).

    Attributes:
        epochs: passes over the training set.
        batch_size: GLOBAL samples per step (at least 2 per process: batch norm).
        lr / weight_decay: AdamW settings (one-cycle schedule).
        modality_dropout: probability of dropping each modality of a training sample (at least
            one modality is always kept); 0 disables it.
        branch_weight: weight of the per-modality branch losses (decision and hybrid networks).
        flips: random flips of every spatial axis (same flip for all modalities).
    """

    epochs: int = Field(15, ge=1, le=100_000)
    batch_size: int = Field(32, ge=2, le=65_536)
    lr: float = Field(2e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(1e-4, ge=0.0, le=10.0)
    modality_dropout: float = Field(0.3, ge=0.0, lt=1.0)
    branch_weight: float = Field(0.5, ge=0.0, le=100.0)
    flips: bool = True


class FusionTrainSettings(FusionTrainSection):
    """The ``train:`` section plus the seed (weights, batches, dropout and flips)."""

    seed: int = Field(0, ge=0, le=MAX_SEED)


@dataclass(frozen=True)
class FusionFitResult:
    """What :func:`fit_fusion` did: best epoch and validation AUC, time, per-epoch history, and
    whether the kept model is at chance level (validation AUC <= 0.55, also in ``warnings``)."""

    best_epoch: int
    best_val_auc: float
    epochs_run: int
    seconds: float
    history: tuple[dict[str, float], ...]
    chance_level: bool = False
    warnings: tuple[str, ...] = ()
    stop_reason: str = "epochs"

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
    """Class probabilities (N, K) of a fusion network in eval mode (on the model's device)."""
    import torch

    from medanomaly.evaluate.calibration import softmax

    model.eval()
    device = module_device(model)
    m = len(model.modalities)
    present = np.ones((len(x), m), bool) if present is None else np.asarray(present, bool)
    outs = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32)).to(device)
            pb = torch.from_numpy(present[i : i + batch_size]).to(device)
            outs.append(model(xb, pb).float().cpu().numpy())
    logits = np.concatenate(outs) if outs else np.zeros((0, model.num_classes), np.float32)
    return softmax(logits)


def _transform(settings: FusionTrainSettings, m: int, spatial_axes: tuple[int, ...]):
    """The batch hook: one random flip per spatial axis for the whole batch, then modality dropout
    (a sample never loses its last present modality)."""
    import torch

    def transform(x, y, extras, rng):
        if settings.flips:
            for axis in spatial_axes:
                if rng.random() < 0.5:
                    x = torch.flip(x, dims=(axis,))
        present = extras["present"]
        if settings.modality_dropout > 0 and m > 1:
            kept = present.numpy() & modality_dropout_mask(len(x), m, settings.modality_dropout, rng)
            empty = ~kept.any(axis=1)
            kept[empty] = present.numpy()[empty]
            present = torch.from_numpy(kept)
        return x, y, {"present": present}

    return transform


def _loss(settings: FusionTrainSettings, m: int):
    """Cross-entropy of the fused output plus ``branch_weight`` x the mean per-branch loss over the
    present modalities."""
    from torch import nn

    ce = nn.CrossEntropyLoss(reduction="none")

    def loss(x, y, net, extras):
        import torch

        present = extras["present"]
        logits, branches = net(x, present)
        total = ce(logits, y).mean()
        if branches is not None and settings.branch_weight > 0:
            per_branch = torch.stack([ce(branches[:, j], y) for j in range(m)], dim=1)
            pf = present.float()
            total = total + settings.branch_weight * (per_branch * pf).sum() / pf.sum()
        return total

    return loss


def fit_fusion(model, train: Split, val: Split | None, settings: FusionTrainSettings) -> FusionFitResult:
    """Train ``model`` in place; keep the weights of the best validation-AUC epoch.

    Args:
        model: a registered fusion network (``MODELS.create("fusion_...")``).
        train: (images (N, M, *S), labels (N,)[, presence (N, M)]).
        val: the same for validation, or None (then the last epoch is kept).
        settings: :class:`FusionTrainSettings`.
    """
    import torch

    from medanomaly.train.batches import ArrayBatches
    from medanomaly.train.engine import Hooks, LoopOptions
    from medanomaly.train.engine import train as run_loop
    from medanomaly.train.loop import quick_scores

    s, m = settings, len(model.modalities)
    x, y, present = _unpack(train, m)
    validate = None
    if val is not None:
        vx, vy, vpresent = _unpack(val, m)

        def validate(net) -> dict[str, float]:
            return quick_scores(vy, predict_proba(net, vx, vpresent))

    def optimizer(net, steps: int, total: int):
        opt = torch.optim.AdamW(net.parameters(), lr=s.lr, weight_decay=s.weight_decay)
        return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=total)

    def batches(ctx):
        return ArrayBatches(torch.from_numpy(x), torch.from_numpy(y), s.batch_size, s.seed, ctx,
                            extras={"present": torch.from_numpy(present)},
                            transform=_transform(s, m, tuple(range(2, x.ndim))), min_per_rank=2)

    hooks = Hooks(loss=_loss(s, m), optimizer=optimizer, validate=validate)
    options = LoopOptions(epochs=s.epochs, monitor="val_auc" if validate else None, higher=True, seed=s.seed,
                          device=s.device, progress=s.progress, max_minutes=s.max_minutes, title="train fusion",
                          chance_metric="val_auc" if validate else None, forward="forward_all",
                          find_unused_parameters=True, ema_decay=s.ema_decay,
                          precision=resolve_precision(s.precision, s.device))
    r = run_loop(model, batches, hooks, options)
    auc = r.best_score if validate is not None and np.isfinite(r.best_score) else float("nan")
    return FusionFitResult(best_epoch=r.best_epoch, best_val_auc=float(auc), epochs_run=r.epochs_run,
                           seconds=r.seconds, history=r.history, chance_level=r.chance_level,
                           warnings=r.warnings, stop_reason=r.stop_reason)
