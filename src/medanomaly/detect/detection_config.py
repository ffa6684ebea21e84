"""The ``detection`` task's config tree: data source, grid, search region, detector, lesion classifier.

One config describes a 2D (or 3D) heatmap detector: which images it learns from (a phantom or a
real-format loader), the grid and intensity mapping of the network input (recorded in
``model.json`` as preprocessing steps), the search-region plug-in, the network and its training
budget, and the second stage that calls each found lesion benign / uncertain / malignant.

Example:
    >>> cfg = DetectionConfig(task="detection", data={"source": "mammo_phantom"})
    >>> cfg.grid.spacing_mm, cfg.region.name, cfg.input_modality
    ((0.5, 0.5, 1.0), 'breast', 'MG')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from medanomaly.config import ComponentConfig, RunConfig, Section
from medanomaly.train.precision import Precision

#: Largest side (voxels) of a window, patch or crop a detection config may set.
MAX_SIDE = 4096
Voxels = Annotated[int, Field(ge=1, le=MAX_SIDE)]
Spacing = Annotated[float, Field(ge=0.01, le=20.0)]

#: Data source -> the modality of its images.
SOURCE_MODALITY = {"mammo_phantom": "MG", "us_phantom": "US", "inbreast": "MG", "cbis_ddsm": "MG", "busi": "US"}


def check_saved(params: Mapping[str, Any], sections: Sequence[type[Section]]) -> None:
    """Check a saved detector's parameters (a run's detector file) with the bounds of the config sections they
    came from: the values of each section's fields are validated, so a hand-edited file fails when it is
    loaded, not at detect time.

    Raises:
        pydantic.ValidationError: a value out of its section's bounds (a ValueError: :func:`medanomaly.errors.unfit_file`
            makes it one InputError naming the file).
    """
    for section in sections:
        section.model_validate({k: v for k, v in params.items() if k in section.model_fields})


#: Sizes (z, y, x) a network's input must be a multiple of, by name and spatial dims: its poolings halve them, and
#: the U-Net's skip connections need the halves to line up (a patch of 33 x 31 was a tensor-size traceback).
NETWORK_DIVISORS: dict[tuple[str, int], tuple[int, int, int]] = {
    ("heatmap_unet", 2): (1, 4, 4),  # two in-plane poolings on one slice
    ("heatmap_unet", 3): (4, 4, 4),
    ("nodule_unet", 3): (2, 4, 4),  # DynUNet strides (1,1,1), (1,2,2), (2,2,2)
}


def check_window_sizes(model: str, spatial_dims: int, sizes: Mapping[str, Sequence[int]]) -> None:
    """Each named window size (``train.patch_size``, ``infer.roi_size``; z, y, x) must be a multiple of the
    network's :data:`NETWORK_DIVISORS` on every axis (a registered model of another name is not checked).

    Raises:
        ValueError: naming the size, the multiple and the nearest sizes that work (pydantic reports it).
    """
    divisor = NETWORK_DIVISORS.get((model, spatial_dims))
    if divisor is None:
        return
    for name, size in sizes.items():
        if any(int(n) % d for n, d in zip(size, divisor, strict=True)):
            fixed = [max(d, int(n) // d * d) for n, d in zip(size, divisor, strict=True)]
            raise ValueError(f"{name} {list(size)} must be a multiple of {list(divisor)} (z, y, x) for {model}, "
                             f"e.g. {fixed}")  # fmt: skip


class Finite(Section):
    """Sections whose floats must be finite (NaN / inf are refused at load)."""

    model_config = ConfigDict(allow_inf_nan=False)


class PatchTrainConfig(Finite):
    """What every heatmap detector's training shares (Dice + BCE, AdamW, one-cycle rate, through
    :func:`medanomaly.train.engine.train`): the budget, the patch mix and the CPU threads.
    ``batch_size`` is global (split over ``torchrun`` processes). Recipes add their patch size."""

    steps: int = Field(300, ge=1, le=1_000_000)
    batch_size: int = Field(8, ge=1, le=1024)
    lr: float = Field(3e-3, gt=0.0, le=10.0)
    positive_fraction: float = Field(0.5, ge=0.0, le=1.0)
    hard_negative_fraction: float = Field(0.3, ge=0.0, le=1.0)
    # torch CPU threads, or "auto": timed on the first training steps (1 beats 2 where another process holds a core,
    # 2 beats 1 on an idle 2-core machine: medanomaly.train.thread_probe)
    threads: Annotated[int, Field(ge=1, le=256)] | Literal["auto"] = 1
    # where the network trains: "auto" (a CUDA GPU when present, else the CPU), "cpu" (also on a GPU machine: the
    # evaluation then stays on the CPU too) or "cuda" (refused in one line without a GPU)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # exponential moving average of the weights, validated, kept and saved instead of the live ones (0 = off; the
    # decay warms up as (1 + n) / (10 + n), so 0.995 holds from about step 1,800: medanomaly.train.averaging)
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0)
    # the network's arithmetic in training, validation, mining and detection: "fp32", "bf16" (bfloat16 autocast, float32
    # weights and losses) or "auto" (bf16 where the CPU or GPU computes it natively, else fp32; resolved on each
    # machine: medanomaly.train.precision)
    precision: Precision = "fp32"
    # hard negatives mined from the network's own false positives on the training scans every N steps (0 = off;
    # medanomaly.detect.mining); `mined_fraction` of the hard-negative patches are then centred on them
    mine_every: int = Field(0, ge=0, le=1_000_000)
    mined_fraction: float = Field(0.5, ge=0.0, le=1.0)
    # with positive_sampling "lesion": nodules the network missed at the last mining round (peak under 0.5) are drawn
    # this many times as often as the others until the next round (1 = off; needs mine_every > 0)
    hard_positive_weight: float = Field(1.0, ge=1.0, le=100.0)

    @model_validator(mode="after")
    def _mix(self) -> PatchTrainConfig:
        if self.positive_fraction + self.hard_negative_fraction > 1.0:
            raise ValueError("positive_fraction + hard_negative_fraction must be at most 1")
        if self.mine_every and (self.hard_negative_fraction == 0 or self.mined_fraction == 0):
            raise ValueError("mine_every > 0 mines hard negatives for nothing when hard_negative_fraction or "
                             "mined_fraction is 0; set both above 0 or mine_every to 0")
        if self.hard_positive_weight != 1.0 and not self.mine_every:
            raise ValueError("hard_positive_weight weighs the nodules each mining round misses: set mine_every > 0")
        return self


class SlidingInferConfig(Finite):
    """What every heatmap detector's inference shares: sliding-window overlap and the findings
    (components of the heatmap above ``candidate_threshold``, masks at ``mask_threshold``)."""

    overlap: float = Field(0.25, ge=0.0, lt=1.0)
    candidate_threshold: float = Field(0.2, ge=0.0, le=1.0)
    mask_threshold: float = Field(0.5, ge=0.0, le=1.0)
    max_findings: int = Field(10, ge=1, le=10_000)
    # Test-time mirroring: the heatmap averaged over every flip of these image axes (nnU-Net's mirroring;
    # 2^k network passes). [] = one pass.
    mirror_axes: list[Literal["x", "y", "z"]] = Field(default_factory=list, max_length=3)
    # Components of the heatmap split at probability valleys at least this deep (medanomaly.detect.infer.
    # split_at_valleys): a lesion touching a vessel's or another candidate's probability keeps its own finding
    # and centre. None = whole components (and runs saved before it).
    split_depth: float | None = Field(None, gt=0.0, le=1.0)

    @field_validator("mirror_axes")
    @classmethod
    def _distinct_axes(cls, axes: list[str]) -> list[str]:
        if len(set(axes)) != len(axes):
            raise ValueError(f"mirror_axes repeats an axis: {axes}")
        return axes


class DataConfig(Finite):
    """Where the annotated images come from (:mod:`medanomaly.data.lesions2d` sets).

    ``mammo_phantom`` / ``us_phantom``: synthetic cohorts drawn here (``n_patients``, ``size``
    pixels, ``seed``). ``inbreast`` / ``busi`` / ``cbis_ddsm``: the real-format loaders on ``root``
    (``max_side`` pixels for the mammograms). Splits are by patient (``val``, ``test`` fractions).
    """

    source: Literal["mammo_phantom", "us_phantom", "inbreast", "busi", "cbis_ddsm"] = "mammo_phantom"
    root: Path | None = None
    n_patients: int = Field(40, ge=3, le=100_000)
    size: int = Field(256, ge=32, le=4096)
    max_lesions: int = Field(2, ge=1, le=20)
    normal_fraction: float = Field(0.2, ge=0.0, le=0.9)
    max_side: int | None = Field(1024, ge=64, le=8192)
    val: float = Field(0.2, ge=0.0, le=0.5)
    test: float = Field(0.2, ge=0.05, le=0.5)

    @model_validator(mode="after")
    def _root(self) -> DataConfig:
        if self.source not in ("mammo_phantom", "us_phantom") and self.root is None:
            raise ValueError(f"data.source {self.source} needs data.root (the dataset folder)")
        return self


class GridConfig(Finite):
    """The network grid (mm, x/y/z; z of a 2D image is its one slice) and the input intensity:
    ``window`` maps [low, high] to [0, 1]; ``percentile`` maps the 0.5-99.5th percentiles of each
    image to [0, 1] (images without an absolute unit: ultrasound, PNG mammograms)."""

    spacing_mm: tuple[Spacing, Spacing, Spacing] = (0.5, 0.5, 1.0)
    intensity: Literal["window", "percentile"] = "window"
    window: tuple[float, float] = (0.0, 1.0)

    @model_validator(mode="after")
    def _ordered(self) -> GridConfig:
        if not self.window[0] < self.window[1]:
            raise ValueError(f"grid.window [{self.window[0]}, {self.window[1]}] must be [low, high] with low < high")
        return self


class RegionConfig(Finite):
    """The search-region plug-in (:data:`medanomaly.detect.regions.SEARCH_REGIONS`) and its margin."""

    name: str = "breast"
    margin_mm: float = Field(2.0, ge=0.0, le=100.0)


class TrainConfig(PatchTrainConfig):
    """Heatmap training; ``patch_size`` (z, y, x) voxels, z = 1 for 2D. ``hard_level``: input
    intensity (0..1) above which a searched pixel outside lesions is a hard negative."""

    patch_size: tuple[Voxels, Voxels, Voxels] = (1, 64, 64)
    hard_level: float = Field(0.5, ge=-10_000.0, le=10_000.0)


class InferConfig(SlidingInferConfig):
    """Sliding-window inference (``roi_size`` z, y, x voxels) and the finding call threshold."""

    roi_size: tuple[Voxels, Voxels, Voxels] = (1, 256, 256)
    finding_threshold: float = Field(0.5, ge=0.0, le=1.0)


class ClassifierConfig(Finite):
    """Second stage: a small CNN on lesion crops (benign / uncertain / malignant), with abstention.

    ``abstain_coverage``: answer this fraction of validation lesions, abstain on the rest (1 = never).
    """

    enabled: bool = True
    model: ComponentConfig = ComponentConfig(name="compact_cnn", params={})
    crop_size: tuple[Voxels, Voxels] = (48, 48)
    epochs: int = Field(30, ge=1, le=10_000)
    batch_size: int = Field(32, ge=1, le=4096)
    lr: float = Field(2e-3, gt=0.0, le=10.0)
    abstain_coverage: float = Field(0.9, gt=0.0, le=1.0)


class EvalConfig(Finite):
    """Evaluation: a finding hits a lesion when its centre lies within max(lesion radius,
    ``hit_min_radius_mm``) of the lesion centre; bootstrap over images / lesions."""

    hit_min_radius_mm: float = Field(4.0, ge=0.0, le=100.0)
    n_bootstrap: int = Field(500, ge=0, le=100_000)
    overlays: int = Field(6, ge=0, le=200)


class DetectionConfig(RunConfig):
    """Config of the ``detection`` task (a heatmap detector and a lesion classifier, 2D or 3D)."""

    task: str = "detection"
    spatial_dims: Literal[2, 3] = 2
    data: DataConfig = DataConfig()
    grid: GridConfig = GridConfig()
    region: RegionConfig = RegionConfig()
    model: ComponentConfig = ComponentConfig(name="heatmap_unet", params={"filters": [8, 16, 32]})
    train: TrainConfig = TrainConfig()
    infer: InferConfig = InferConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    evaluation: EvalConfig = EvalConfig()

    @property
    def input_modality(self) -> str:
        """The modality the run accepts (MG or US for the breast sources)."""
        return SOURCE_MODALITY[self.data.source]

    @model_validator(mode="after")
    def _dims(self) -> DetectionConfig:
        if self.spatial_dims == 2 and (self.train.patch_size[0] != 1 or self.infer.roi_size[0] != 1):
            raise ValueError("a 2D detector needs train.patch_size and infer.roi_size with z = 1")
        if self.spatial_dims == 3:
            raise ValueError("spatial_dims 3 is served by the lung_nodule recipe for now (its 3D data source)")
        check_window_sizes(self.model.name, self.spatial_dims,
                           {"train.patch_size": self.train.patch_size, "infer.roi_size": self.infer.roi_size})
        return self
