"""Training settings: one typed section, the only source of defaults and limits.

:class:`TrainSection` is the ``train:`` section of a classification config (the classification
task adds its own run-level keys to it) and :class:`TrainSettings` is the same plus the seed: what
:func:`medanomaly.train.loop.fit` takes. Nothing is copied field by field:
``TrainSettings.from_config(cfg.train, seed=cfg.seed)`` keeps the section's values.

Impossible values (NaN or infinite floats, negative counts, absurd sizes) are refused when the
config is loaded, in one line naming the key.

Example:
    >>> TrainSettings(epochs=2).replace(lr=0.01).lr
    0.01
    >>> TrainSettings(lr=float("nan"))  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    pydantic_core._pydantic_core.ValidationError: ...
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from medanomaly.config import MAX_SEED, Section
from medanomaly.train.augment import AugmentSpec
from medanomaly.train.precision import Precision

PositiveWeight = Annotated[float, Field(gt=0.0, le=1e6)]


class LoopControl(Section):
    """Budget, device and reporting of the shared training loop (:mod:`medanomaly.train.engine`).

    Attributes:
        max_minutes: stop after this many minutes of training (wall clock; None = no limit).
        device: ``auto`` (a CUDA device when there is one, else the CPU), ``cpu`` or ``cuda``.
        progress: show a progress bar and one line per epoch.
        ema_decay: an exponential moving average of the weights is validated, kept and returned instead of the
            live weights (0 = off; :mod:`medanomaly.train.averaging`).
        precision: the training forward pass's arithmetic: ``fp32``, ``bf16`` (bfloat16 autocast, float32 weights
            and loss) or ``auto`` (bf16 where the device computes it natively; :mod:`medanomaly.train.precision`).
            Prediction stays float32 (a classifier's one forward pass per image is not where the time goes).
    """

    model_config = ConfigDict(allow_inf_nan=False)

    max_minutes: float | None = Field(None, gt=0.0, le=60 * 24 * 30)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    progress: bool = True
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0)
    precision: Precision = "fp32"


class TrainSection(LoopControl):
    """The classifier training settings (the ``train:`` section of a classification config).

    Attributes:
        epochs / batch_size: passes over the training split and GLOBAL images per step (under
            ``torchrun`` each of the N processes takes batch_size / N of them).
        lr, optimizer, weight_decay, momentum, scheduler, warmup_epochs: see :mod:`medanomaly.train.optim`.
        loss, focal_gamma, label_smoothing, class_weights: see :mod:`medanomaly.train.losses`;
            ``class_weights`` is ``balanced`` (n / (k * count)), ``none`` or one weight per class.
        weighted_sampling: draw batches class-balanced (with replacement).
        l1 / l2 / dropout: regularisation (see :mod:`medanomaly.train.regularise`).
        augment: see :class:`medanomaly.train.augment.AugmentSpec`.
        early_stopping_metric / patience / min_delta: model selection on the validation split.
        max_steps_per_epoch: cap the steps of an epoch (None = the whole training split).
    """

    epochs: int = Field(20, ge=1, le=100_000)
    batch_size: int = Field(32, ge=1, le=65_536)
    lr: float = Field(1e-3, gt=0.0, le=10.0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    weight_decay: float = Field(1e-4, ge=0.0, le=10.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    scheduler: Literal["none", "cosine", "step", "onecycle"] = "cosine"
    warmup_epochs: int = Field(0, ge=0, le=100_000)
    loss: Literal["ce", "bce", "focal"] = "ce"
    focal_gamma: float = Field(2.0, ge=0.0, le=100.0)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    class_weights: Literal["balanced", "none"] | tuple[PositiveWeight, ...] | None = "none"
    weighted_sampling: bool = False
    l1: float = Field(0.0, ge=0.0, le=10.0)
    l2: float = Field(0.0, ge=0.0, le=10.0)
    dropout: float | None = Field(None, ge=0.0, lt=1.0)
    augment: AugmentSpec = AugmentSpec()
    early_stopping_metric: Literal["auc", "balanced_accuracy", "accuracy", "loss"] = "auc"
    patience: int = Field(10, ge=1)
    min_delta: float = Field(0.0, ge=0.0)
    max_steps_per_epoch: int | None = Field(None, ge=1)


class TrainSettings(TrainSection):
    """Everything :func:`medanomaly.train.loop.fit` needs besides model and data: the ``train:``
    section plus the seed (weights, batches, augmentation)."""

    seed: int = Field(0, ge=0, le=MAX_SEED)

    @classmethod
    def from_config(cls, section: Section, seed: int = 0, **changes: Any) -> TrainSettings:
        """Settings from a ``train:`` section (a :class:`TrainSection` or subclass: extra run-level
        keys such as ``resume`` are left out), the run's seed and optional overrides."""
        keep = {k: getattr(section, k) for k in TrainSection.model_fields}
        return cls.model_validate({**keep, "seed": seed, **changes})

    def replace(self, **changes: Any) -> TrainSettings:
        """A validated copy with ``changes`` (``dataclasses.replace`` for these settings)."""
        return type(self).model_validate({**dict(self), **changes})
