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

from pydantic import ConfigDict, Field, field_validator, model_validator

from medanomaly.config import ComponentConfig, RunConfig, Section
from medanomaly.preprocess.resize import MAX_VOXELS, voxel_count
from medanomaly.train.augment import AugmentSpec as AugmentConfig
from medanomaly.train.settings import TrainSection
from medanomaly.train.tune import MAX_TRIALS

__all__ = ["AugmentConfig", "ClassificationConfig", "DataConfig", "EnsembleConfig", "EvaluateConfig", "ParamSpace",
           "TrainConfig", "TuneConfig"]



class DataConfig(Section):
    """Which images, at which size, split how.

    ``dataset`` names a registered dataset (manifest, medmnist, inbreast, lidc, mammo_phantom,
    ...) and its parameters. When the source gives no split (or ``resplit``), images are split
    by patient with ``val_fraction`` / ``test_fraction`` of the patients.
    """

    dataset: ComponentConfig
    class_names: list[str] | None = None
    image_size: list[int] = [128, 128]
    channels: int = Field(1, ge=1, le=64)
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    resplit: bool = False

    @field_validator("image_size")
    @classmethod
    def _size(cls, v: list[int]) -> list[int]:
        if len(v) not in (2, 3) or any(s < 8 for s in v):
            raise ValueError("image_size must be 2 or 3 sizes of at least 8 voxels")
        if voxel_count(v) > MAX_VOXELS:
            raise ValueError(f"image_size {v} is {voxel_count(v):,} voxels per image; "
                             f"the limit is {MAX_VOXELS:,}")
        return v


class TrainConfig(TrainSection):
    """The ``train:`` section: :class:`medanomaly.train.settings.TrainSection` (its defaults and
    limits are the only ones; ``augment`` is :class:`medanomaly.train.augment.AugmentSpec`), plus:

    Attributes:
        resume: continue each member from its checkpoint in the run folder.
        num_threads: torch CPU threads while training (None = torch's default).
    """

    resume: bool = False
    num_threads: int | None = Field(None, ge=1, le=1024)


class EvaluateConfig(Section):
    """Evaluation: bootstrap, calibration, thresholds and abstention (all learned on validation).

    ``abstain_coverage``: the model answers this fraction of validation cases and says
    "uncertain" below the matching confidence; ``abstain_confidence`` fixes the threshold instead;
    both ``None`` = never abstain.
    """

    n_bootstrap: int = Field(1000, ge=0, le=1_000_000)
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

    folds: int = Field(0, ge=0, le=100)
    members: int = Field(1, ge=1, le=100)
    method: Literal["average", "vote"] = "average"
    weighted: bool = False


class ParamSpace(Section):
    """One searched hyper-parameter: a float or int range (optionally log-scaled) or choices."""

    model_config = ConfigDict(allow_inf_nan=False)

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _a_range_optuna_can_draw_from(self) -> ParamSpace:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs choices")
            return self
        if self.low is None or self.high is None or self.low > self.high:
            raise ValueError(f"{self.type} needs low <= high, got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log needs low > 0, got {self.low}")
        if self.type == "int" and not (self.low.is_integer() and self.high.is_integer()):
            raise ValueError(f"int needs whole low and high, got {self.low}, {self.high}")
        return self


class TuneConfig(Section):
    """Optuna search: ``space`` maps dotted config paths (``train.lr``, ``model.params.hidden``) to
    ranges; each trial trains ``epochs`` epochs (default: the config's) and is scored on validation."""

    trials: int = Field(20, ge=1, le=MAX_TRIALS)
    space: dict[str, ParamSpace] = {}
    epochs: int | None = Field(None, ge=1, le=100_000)
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
