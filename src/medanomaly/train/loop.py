"""The training loop: seeded, weighted, regularised, augmented, early-stopped, resumable.

:func:`fit` trains a classifier on a :class:`~medanomaly.data.arrays.LabelledImages` training set
and picks the best epoch on the validation set (never on test). Batches are cut straight from
the in-memory tensor (no per-image Python work unless augmentation is on), so the loop costs
little over a bare PyTorch loop; ``bench/bench_train_throughput.py`` measures the ratio.

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

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.data.arrays import LabelledImages
from medanomaly.errors import InputError
from medanomaly.evaluate.calibration import softmax
from medanomaly.train.augment import Augmenter, AugmentSpec

#: Validation metrics early stopping can watch, and whether higher is better.
METRICS = {"auc": True, "balanced_accuracy": True, "accuracy": True, "loss": False}


@dataclass(frozen=True)
class TrainSettings:
    """Everything :func:`fit` needs besides model and data (see the ``train:`` config section)."""

    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    momentum: float = 0.9
    scheduler: str = "cosine"
    warmup_epochs: int = 0
    loss: str = "ce"
    focal_gamma: float = 2.0
    label_smoothing: float = 0.0
    class_weights: str | tuple[float, ...] | None = None
    weighted_sampling: bool = False
    l1: float = 0.0
    l2: float = 0.0
    dropout: float | None = None
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    early_stopping_metric: str = "auc"
    patience: int = 10
    min_delta: float = 0.0
    max_steps_per_epoch: int | None = None
    seed: int = 0
    progress: bool = True


@dataclass(frozen=True)
class FitResult:
    """What a training run did. Scores are on the validation split."""

    best_epoch: int
    best_score: float
    metric: str
    epochs_run: int
    stopped_early: bool
    seconds: float
    images_per_second: float
    history: tuple[dict[str, float], ...]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "history": list(self.history)}


def seed_everything(seed: int) -> None:
    """Seed torch's global RNG (weight init, dropout); batches and augmentation use their own seeded
    generators, so a run is reproducible on the same machine and thread count."""
    import torch

    torch.manual_seed(seed)


def predict_logits(model, images: np.ndarray, batch_size: int = 64):
    """Logits (N, K) of ``model`` in eval mode, as a float32 NumPy array."""
    import torch

    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    outs = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            outs.append(model(x[i:i + batch_size]).float())
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


class _Batches:
    """Batch index streams: a seeded permutation, or a class-balanced weighted sampler."""

    def __init__(self, labels: np.ndarray, n_classes: int, batch_size: int, weighted: bool, seed: int):
        import torch

        self.labels, self.n_classes, self.batch_size, self.weighted = labels, n_classes, batch_size, weighted
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def epoch(self):
        import torch

        n = len(self.labels)
        if self.weighted:
            from medanomaly.data.sampling import sample_weights

            w = torch.as_tensor(sample_weights(self.labels, self.n_classes), dtype=torch.double)
            order = torch.multinomial(w, n, replacement=True, generator=self.generator)
        else:
            order = torch.randperm(n, generator=self.generator)
        return order.split(self.batch_size)


def _progress(enabled: bool, total_steps: int):
    """A rich progress bar (or a no-op stand-in)."""
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("[bold]train[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), transient=False)
    return progress


def fit(model, train: LabelledImages, val: LabelledImages | None, settings: TrainSettings,
        run_dir: str | Path | None = None, resume: bool = False,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> FitResult:
    """Train ``model`` in place and leave it at its best validation epoch.

    Args:
        model: a classifier (logits (B, K)).
        train: training images; val: validation images for early stopping (None: last epoch wins).
        settings: see :class:`TrainSettings`.
        run_dir: where ``model.safetensors`` (best weights), ``history.json`` and ``checkpoint/``
            (resumable state, written every epoch) go; None keeps everything in memory.
        resume: continue from ``run_dir/checkpoint`` when it exists.
        on_epoch: called after each epoch with (epoch, record); may raise to stop training
            (Optuna pruning does).

    Returns:
        A :class:`FitResult` (history per epoch: train loss and validation scores).
    """
    import torch

    from medanomaly.data.sampling import class_weights as balanced_weights
    from medanomaly.train.checkpoint import (has_training_state, load_training_state, save_training_state,
                                             save_weights)
    from medanomaly.train.losses import make_loss
    from medanomaly.train.optim import make_optimizer, make_scheduler
    from medanomaly.train.regularise import penalised_parameters, set_dropout, weight_penalty

    s = settings
    if s.early_stopping_metric not in METRICS:
        raise InputError(f"unknown early-stopping metric {s.early_stopping_metric!r}; valid: {sorted(METRICS)}")
    k = len(train.class_names)
    expected = getattr(model, "in_channels", train.channels)
    if train.channels != expected:
        raise InputError(f"images have {train.channels} channel(s), the model expects {expected}")
    seed_everything(s.seed)
    np_rng = np.random.default_rng(s.seed)
    if s.dropout is not None:
        set_dropout(model, s.dropout)

    if s.class_weights == "balanced":
        weights = balanced_weights(train.labels, k)
    elif s.class_weights is None or s.class_weights == "none":
        weights = None
    else:
        weights = np.asarray(s.class_weights, dtype=float)
    criterion = make_loss(s.loss, k, weights, gamma=s.focal_gamma, label_smoothing=s.label_smoothing)
    batches = _Batches(train.labels, k, s.batch_size, s.weighted_sampling, s.seed)
    steps = len(batches) if s.max_steps_per_epoch is None else min(len(batches), s.max_steps_per_epoch)
    optimizer = make_optimizer(s.optimizer, model.parameters(), lr=s.lr, weight_decay=s.weight_decay,
                               momentum=s.momentum)
    scheduler = make_scheduler(s.scheduler, optimizer, total_steps=steps * s.epochs,
                               warmup_steps=steps * s.warmup_epochs, steps_per_epoch=steps)
    augmenter = Augmenter(s.augment, train.spatial_dims) if s.augment.active else None
    penalised = penalised_parameters(model) if (s.l1 or s.l2) else None

    x_all = torch.from_numpy(train.images)
    y_all = torch.from_numpy(train.labels)
    higher = METRICS[s.early_stopping_metric]
    run_dir = Path(run_dir) if run_dir is not None else None
    ckpt_dir = run_dir / "checkpoint" if run_dir is not None else None
    history: list[dict[str, float]] = []
    best = {"epoch": -1, "score": -math.inf if higher else math.inf, "stale": 0}
    best_state: dict[str, Any] | None = None
    start_epoch = 0
    if resume and ckpt_dir is not None and has_training_state(ckpt_dir):
        info = load_training_state(ckpt_dir, model, optimizer, scheduler, np_rng)
        start_epoch, history, best = info["epoch"] + 1, info["history"], info["best"]
        batches.generator.set_state(torch.tensor(info["batch_rng"], dtype=torch.uint8))
        if run_dir is not None and (run_dir / "model.safetensors").is_file():
            from safetensors.torch import load_file

            best_state = load_file(str(run_dir / "model.safetensors"))

    progress = _progress(s.progress, steps * (s.epochs - start_epoch))
    task_id = progress.add_task("", total=steps * (s.epochs - start_epoch)) if progress else None
    if progress:
        progress.start()
    t0, n_images, stopped = time.perf_counter(), 0, False
    try:
        for epoch in range(start_epoch, s.epochs):
            model.train()
            running = torch.zeros(())
            for step, idx in enumerate(batches.epoch()):
                if step >= steps:
                    break
                x, y = x_all[idx], y_all[idx]
                if augmenter is not None:
                    x = augmenter.batch(x, np_rng)[0]
                loss = criterion(model(x), y)
                if penalised is not None:
                    loss = loss + weight_penalty(model, s.l1, s.l2, penalised)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                running += loss.detach()
                n_images += len(idx)
                if progress:
                    progress.update(task_id, advance=1, description=f"epoch {epoch + 1}/{s.epochs}")
            if not torch.isfinite(running):
                raise InputError("training diverged (loss is not finite); lower the learning rate")
            record = {"epoch": epoch, "train_loss": float(running) / max(steps, 1),
                      "lr": float(optimizer.param_groups[0]["lr"])}
            if val is not None and len(val):
                scores = quick_scores(val.labels, softmax(predict_logits(model, val.images, s.batch_size * 2)))
                record.update({f"val_{m}": v for m, v in scores.items()})
                score = scores[s.early_stopping_metric]
            else:
                score = -record["train_loss"] if higher else record["train_loss"]
            history.append(record)
            if progress:  # one line per epoch: visible in a terminal and in a redirected log alike
                progress.console.print(f"epoch {epoch + 1}/{s.epochs}: " + ", ".join(
                    f"{k} {v:.4g}" for k, v in record.items() if k != "epoch"))
            improved = (score > best["score"] + s.min_delta) if higher else (score < best["score"] - s.min_delta)
            if improved or best["epoch"] < 0 or (math.isnan(best["score"]) and not math.isnan(score)):
                best = {"epoch": epoch, "score": float(score), "stale": 0}
                best_state = {k2: v.detach().clone() for k2, v in model.state_dict().items()}
                if run_dir is not None:
                    save_weights(model, run_dir / "model.safetensors")
            else:
                best["stale"] += 1
            if run_dir is not None:
                (run_dir / "history.json").write_text(json.dumps(history, indent=1))
                save_training_state(ckpt_dir, model, optimizer, scheduler,
                                    {"epoch": epoch, "history": history, "best": best,
                                     "batch_rng": batches.generator.get_state().tolist()}, np_rng)
            if on_epoch is not None:
                on_epoch(epoch, record)
            if best["stale"] >= s.patience:
                stopped = True
                break
    finally:
        if progress:
            progress.stop()
    seconds = time.perf_counter() - t0
    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(best_epoch=int(best["epoch"]), best_score=float(best["score"]), metric=s.early_stopping_metric,
                     epochs_run=len(history), stopped_early=stopped, seconds=seconds,
                     images_per_second=n_images / seconds if seconds > 0 else float("nan"),
                     history=tuple(history))
