"""Classifier training: :func:`fit` plugs a classifier into the one training loop.

:func:`fit` trains a classifier on a :class:`~medanomaly.data.arrays.LabelledImages` training set
and picks the best epoch on the validation set (never on test). The loop itself (seeding, step
budget, progress, resumable checkpoints, ``torchrun``) is :func:`medanomaly.train.engine.train`;
this module provides the classification hooks: class-weighted loss with L1/L2 penalties,
class-balanced sampling, batched augmentation, AdamW/SGD with a per-step schedule, and validation
scores. Batches are cut straight from the in-memory tensor (no per-image Python work unless
augmentation is on), so the loop costs little over a bare PyTorch loop;
``bench/bench_train_throughput.py`` measures the ratio.

Example:
    >>> import numpy as np
    >>> from medanomaly.data.arrays import LabelledImages
    >>> from medanomaly.registry import MODELS
    >>> rng = np.random.default_rng(0)
    >>> data = LabelledImages(rng.random((8, 1, 16, 16)), np.arange(8) % 2, np.arange(8), ("a", "b"))
    >>> net = MODELS.create("compact_cnn", num_classes=2, widths=(4, 8), hidden=0)
    >>> result = fit(net, data, data, TrainSettings(epochs=2, batch_size=4, progress=False))
    >>> result.epochs_run
    2
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from medanomaly.data.arrays import LabelledImages
from medanomaly.errors import InputError
from medanomaly.evaluate.calibration import softmax
from medanomaly.train.engine import FitResult, Hooks, LoopOptions, seed_everything
from medanomaly.train.distributed import module_device
from medanomaly.train.precision import resolve_precision
from medanomaly.train.engine import train as run_loop
from medanomaly.train.settings import TrainSettings

__all__ = ["METRICS", "TrainSettings", "FitResult", "fit", "predict_logits", "quick_scores", "seed_everything",
           "softmax"]

#: Validation metrics early stopping can watch, and whether higher is better.
METRICS = {"auc": True, "balanced_accuracy": True, "accuracy": True, "loss": False}


def predict_logits(model, images: np.ndarray, batch_size: int = 64):
    """Logits (N, K) of ``model`` in eval mode, as a float32 NumPy array (on the model's device)."""
    import torch

    model.eval()
    device = module_device(model)
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    outs = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            outs.append(model(x[i:i + batch_size].to(device)).float().cpu())
    return torch.cat(outs).numpy() if outs else np.zeros((0, getattr(model, "num_classes", 2)), np.float32)


def quick_scores(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Validation scores for model selection: loss (NLL), accuracy, balanced accuracy, macro AUC
    (one-vs-rest; NaN when the split lacks a class)."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    labels = np.asarray(labels)
    k = probs.shape[1]
    eps = 1e-7
    pred = probs.argmax(axis=1)
    out = {
        "loss": float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], eps, 1.0)))),
        "accuracy": float(np.mean(pred == labels)),
        "balanced_accuracy": float(balanced_accuracy_score(labels, pred)),
    }
    try:
        if k == 2:
            out["auc"] = float(roc_auc_score(labels, probs[:, 1]))
        else:
            out["auc"] = float(roc_auc_score(labels, probs, multi_class="ovr", average="macro",
                                             labels=list(range(k))))
    except ValueError:
        out["auc"] = float("nan")
    return out


def _criterion(s: TrainSettings, labels: np.ndarray, k: int) -> Callable:
    """The configured loss with its class weights (``balanced``: n / (k * count) on the training labels)."""
    from medanomaly.data.sampling import class_weights as balanced_weights
    from medanomaly.train.losses import make_loss

    if s.class_weights == "balanced":
        weights = balanced_weights(labels, k)
    elif s.class_weights is None or s.class_weights == "none":
        weights = None
    else:
        weights = np.asarray(s.class_weights, dtype=float)
    return make_loss(s.loss, k, weights, gamma=s.focal_gamma, label_smoothing=s.label_smoothing)


def classifier_hooks(model, train_set: LabelledImages, val: LabelledImages | None, s: TrainSettings,
                     on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> tuple[Hooks, Callable]:
    """(hooks, batch-source factory) that train a classifier with the loop of :mod:`medanomaly.train.engine`."""
    from medanomaly.train.augment import Augmenter
    from medanomaly.train.batches import ArrayBatches
    from medanomaly.train.optim import make_optimizer, make_scheduler
    from medanomaly.train.regularise import penalised_parameters, weight_penalty

    k = len(train_set.class_names)
    criterion = _criterion(s, train_set.labels, k)
    penalised = penalised_parameters(model) if (s.l1 or s.l2) else None

    def loss(x, y, net, extras):
        out = criterion(net(x), y)
        return out + weight_penalty(model, s.l1, s.l2, penalised) if penalised is not None else out

    def optimizer(net, steps: int, total: int):
        opt = make_optimizer(s.optimizer, net.parameters(), lr=s.lr, weight_decay=s.weight_decay, momentum=s.momentum)
        return opt, make_scheduler(s.scheduler, opt, total_steps=steps * s.epochs,
                                   warmup_steps=steps * s.warmup_epochs, steps_per_epoch=steps)

    validate = None
    if val is not None and len(val):
        def validate(net) -> dict[str, float]:
            return quick_scores(val.labels, softmax(predict_logits(net, val.images, s.batch_size * 2)))

    augmenter = Augmenter(s.augment, train_set.spatial_dims) if s.augment.active else None

    def batches(ctx):
        import torch

        weights = None
        if s.weighted_sampling:
            from medanomaly.data.sampling import sample_weights

            weights = sample_weights(train_set.labels, k)
        transform = (lambda x, y, e, rng: (augmenter.batch(x, rng)[0], y, e)) if augmenter is not None else None
        return ArrayBatches(torch.from_numpy(train_set.images), torch.from_numpy(train_set.labels), s.batch_size,
                            s.seed, ctx, weights=weights, transform=transform)

    return Hooks(loss=loss, optimizer=optimizer, validate=validate, on_epoch=on_epoch), batches


def fit(model, train: LabelledImages, val: LabelledImages | None, settings: TrainSettings,
        run_dir: str | Path | None = None, resume: bool = False,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> FitResult:
    """Train ``model`` in place and leave it at its best validation epoch.

    Args:
        model: a classifier (logits (B, K)).
        train: training images; val: validation images for early stopping (None: lowest training
            loss wins).
        settings: see :class:`~medanomaly.train.settings.TrainSettings` (``batch_size`` is global:
            under ``torchrun`` each process takes its share of every batch).
        run_dir: where ``model.safetensors`` (best weights), ``history.json`` and ``checkpoint/``
            (resumable state, written every epoch) go, by rank 0 only; None keeps everything in memory.
        resume: continue from ``run_dir/checkpoint`` when it exists.
        on_epoch: called after each epoch with (epoch, record); may raise to stop training
            (Optuna pruning does).

    Returns:
        A :class:`~medanomaly.train.engine.FitResult` (history per epoch: train loss and
        validation scores; ``chance_level`` when the kept model's validation AUC is <= 0.55).
    """
    from medanomaly.train.regularise import set_dropout

    s = settings
    if s.early_stopping_metric not in METRICS:
        raise InputError(f"unknown early-stopping metric {s.early_stopping_metric!r}; valid: {sorted(METRICS)}")
    expected = getattr(model, "in_channels", train.channels)
    if train.channels != expected:
        raise InputError(f"images have {train.channels} channel(s), the model expects {expected}")
    if s.dropout is not None:
        set_dropout(model, s.dropout)
    hooks, batches = classifier_hooks(model, train, val, s, on_epoch)
    validated = hooks.validate is not None
    options = LoopOptions(
        epochs=s.epochs, monitor=f"val_{s.early_stopping_metric}" if validated else "train_loss",
        higher=METRICS[s.early_stopping_metric] if validated else False, patience=s.patience,
        min_delta=s.min_delta, max_minutes=s.max_minutes, max_steps_per_epoch=s.max_steps_per_epoch,
        seed=s.seed, device=s.device, progress=s.progress, title="train",
        chance_metric="val_auc" if validated else None, ema_decay=s.ema_decay,
        precision=resolve_precision(s.precision, s.device))
    result = run_loop(model, batches, hooks, options, run_dir=run_dir, resume=resume)
    return replace(result, metric=s.early_stopping_metric)
