"""The typed config of the ``classification`` task (``task: classification`` in YAML).

Example:
    >>> cfg = ClassificationConfig.model_validate({
    ...     "task": "classification",
    ...     "data": {"dataset": {"name": "manifest", "params": {"csv": "m.csv"}}, "image_size": [64, 64]},
    ...     "model": {"name": "compact_cnn"},
    ... })
    >>> cfg.train.loss, cfg.evaluate.abstain_coverage
    ('ce', 0.9)
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from medanomaly.config import ComponentConfig, RunConfig, Section


class DataConfig(Section):
    """Which images, at which size, split how.

    ``dataset`` names a registered dataset (manifest, medmnist, inbreast, lidc, mammo_phantom,
    ...) and its parameters. When the source gives no split (or ``resplit``), images are split
    by patient with ``val_fraction`` / ``test_fraction`` of the patients.
    """

    dataset: ComponentConfig
    class_names: list[str] | None = None
    image_size: list[int] = [128, 128]
    channels: int = Field(1, ge=1)
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    resplit: bool = False

    @field_validator("image_size")
    @classmethod
    def _size(cls, v: list[int]) -> list[int]:
        if len(v) not in (2, 3) or any(s < 8 for s in v):
            raise ValueError("image_size must be 2 or 3 sizes of at least 8 voxels")
        return v


class AugmentConfig(Section):
    """See :class:`medanomaly.train.augment.AugmentSpec` (degrees, fractions, probability)."""

    rotate_deg: float = Field(0.0, ge=0.0, le=180.0)
    scale: float = Field(0.0, ge=0.0, lt=1.0)
    crop: float = Field(0.0, ge=0.0, lt=1.0)
    flip: bool = False
    intensity: float = Field(0.0, ge=0.0, lt=1.0)
    noise_std: float = Field(0.0, ge=0.0)
    elastic: bool = False
    prob: float = Field(0.5, ge=0.0, le=1.0)


class TrainConfig(Section):
    """See :class:`medanomaly.train.loop.TrainSettings`."""

    epochs: int = Field(20, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    weight_decay: float = Field(1e-4, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    scheduler: Literal["none", "cosine", "step", "onecycle"] = "cosine"
    warmup_epochs: int = Field(0, ge=0)
    loss: Literal["ce", "bce", "focal"] = "ce"
    focal_gamma: float = Field(2.0, ge=0.0)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    class_weights: Literal["balanced", "none"] | list[float] = "none"
    weighted_sampling: bool = False
    l1: float = Field(0.0, ge=0.0)
    l2: float = Field(0.0, ge=0.0)
    dropout: float | None = Field(None, ge=0.0, lt=1.0)
    augment: AugmentConfig = AugmentConfig()
    early_stopping_metric: Literal["auc", "balanced_accuracy", "accuracy", "loss"] = "auc"
    patience: int = Field(10, ge=1)
    min_delta: float = Field(0.0, ge=0.0)
    max_steps_per_epoch: int | None = Field(None, ge=1)
    resume: bool = False
    progress: bool = True
    num_threads: int | None = Field(None, ge=1)


class EvaluateConfig(Section):
    """Evaluation: bootstrap, calibration, thresholds and abstention (all learned on validation).

    ``abstain_coverage``: the model answers this fraction of validation cases and says
    "uncertain" below the matching confidence; ``abstain_confidence`` fixes the threshold instead;
    both ``None`` = never abstain.
    """

    n_bootstrap: int = Field(1000, ge=0)
    calibrate: bool = True
    abstain_coverage: float | None = Field(0.9, gt=0.0, le=1.0)
    abstain_confidence: float | None = Field(None, ge=0.0, le=1.0)
    threshold_rule: str = "youden"
    tta: bool = False
    report: bool = True
    explain: int = Field(6, ge=0)  # Grad-CAM overlays in report.html: most confident right/wrong per class (0 = off)


class EnsembleConfig(Section):
    """``folds >= 2``: k-fold cross-validation (by patient) on the training split, one member per
    fold; else ``members`` models with different seeds. Combined by ``method``; ``weighted``
    weights members by their validation score."""

    folds: int = Field(0, ge=0)
    members: int = Field(1, ge=1)
    method: Literal["average", "vote"] = "average"
    weighted: bool = False


class ParamSpace(Section):
    """One searched hyper-parameter: a float or int range (optionally log-scaled) or choices."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None


class TuneConfig(Section):
    """Optuna search: ``space`` maps dotted config paths (``train.lr``, ``model.params.hidden``) to
    ranges; each trial trains ``epochs`` epochs (default: the config's) and is scored on validation."""

    trials: int = Field(20, ge=1)
    space: dict[str, ParamSpace] = {}
    epochs: int | None = Field(None, ge=1)
    metric: Literal["auc", "balanced_accuracy", "accuracy", "loss"] = "auc"
    sampler: Literal["tpe", "random"] = "tpe"
    pruning: bool = True


class ClassificationConfig(RunConfig):
    """A classification run: data, model, training, evaluation, ensembles and tuning."""

    task: Literal["classification"] = "classification"
    data: DataConfig
    model: ComponentConfig
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    ensemble: EnsembleConfig = EnsembleConfig()
    tune: TuneConfig = TuneConfig()
