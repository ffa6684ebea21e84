"""The ``lung_nodule`` task's config tree (pydantic); the defaults are the demo configuration.

Example:
    >>> cfg = LungNoduleConfig(task="lung_nodule")
    >>> cfg.grid.spacing_mm
    (1.25, 1.25, 5.0)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from medanomaly.config import ComponentConfig, RunConfig, first_repeat, ordered_pair
from medanomaly.detect.detection_config import Finite, PatchTrainConfig, SlidingInferConfig, check_window_sizes
from medanomaly.detect.luna16_source import Luna16Section
from medanomaly.preprocess.intensity import WINDOWS
from medanomaly.train.precision import Precision

Voxels = Annotated[int, Field(ge=1, le=1024)]
Spacing = Annotated[float, Field(ge=0.1, le=20.0)]
Diameter = Annotated[float, Field(gt=0.5, le=100.0)]


class SourceConfig(Finite):
    """One real chest CT used as background for simulation.

    Either ``case`` (a pyradiomics case name: lung1, lung2; its lesion mask is used as the
    exclusion zone) or ``image`` (a path) with an optional ``lesion_mask`` to exclude.
    """

    case: str | None = None
    image: Path | None = None
    lesion_mask: Path | None = None
    name: str | None = None

    @field_validator("case")
    @classmethod
    def _known_case(cls, v: str | None) -> str | None:
        from medanomaly.data.sources import PYRADIOMICS_CASES

        ct = [name for name, (modality, *_) in PYRADIOMICS_CASES.items() if modality == "CT"]
        if v is not None and v not in ct:
            raise ValueError(f"unknown chest CT case {v!r}; valid: {', '.join(ct)}")
        return v

    @model_validator(mode="after")
    def _one_image(self) -> SourceConfig:
        if (self.case is None) == (self.image is None):
            raise ValueError("give either case or image")
        return self


class SimulationConfig(Finite):
    """How the simulated training and held-out scans are made (see ``medanomaly.detect.simulate``)."""

    sources: tuple[SourceConfig, ...] = Field((SourceConfig(case="lung1"), SourceConfig(case="lung2")), max_length=1000)
    exclude_margin_mm: float = Field(20.0, ge=0.0, le=200.0)
    train_side: Literal[1, 2] = 1  # 1 = right lung for training, the left lung (2) is held out
    train_scans_per_source: int = Field(3, ge=1, le=1000)
    nodules_per_train_scan: int = Field(8, ge=1, le=200)
    test_scans_per_source: int = Field(5, ge=1, le=1000)  # 40 held-out nodules in the demo (full config: 80)
    nodules_per_test_scan: int = Field(4, ge=1, le=200)
    diameter_range_mm: tuple[Diameter, Diameter] = (3.0, 30.0)
    # Nodule shapes: ``lidc`` = the LIDC-IDRI radiologists' consensus shapes (train split for training
    # scans, val split for validation scans, test split for held-out scans: medanomaly.synth.insert),
    # ``procedural`` = medanomaly.synth.nodules (spheres, ellipsoids, lobulated, spiculated).
    # ``mixed`` = LIDC train shapes and procedural nodules in alternate training scans, LIDC shapes for
    # validation and test (medanomaly.detect.simulate.ScanSimulator).
    shapes: Literal["lidc", "procedural", "mixed"] = "mixed"
    # mixed: the procedural nodules' diameters, mm (None: diameter_range_mm)
    procedural_diameter_range_mm: tuple[Diameter, Diameter] | None = (3.0, 70.0)
    # Training scans only: LIDC train shapes of ground glass or part-solid texture (median rating < 4) are
    # drawn this many times as often as solid ones (1 = the library's own mix, ~18 % non-solid); validation
    # and held-out scans always keep the library's mix.
    non_solid_weight: float = Field(1.0, ge=1.0, le=20.0)
    val_scans_per_source: int = Field(1, ge=0, le=1000)  # validation scans (learning curve); 0 = none

    @field_validator("sources")
    @classmethod
    def _each_source_once(cls, sources: tuple[SourceConfig, ...]) -> tuple[SourceConfig, ...]:
        """A CT listed twice was simulated twice as often without a word (50 times: a run that never ended)."""
        repeated = first_repeat(source.case or str(source.image) for source in sources)
        if repeated is not None:
            raise ValueError(f"names the chest CT {repeated!r} twice: each source counts once "
                             "(more scans per source: train_scans_per_source)")  # fmt: skip
        return sources

    @field_validator("diameter_range_mm", "procedural_diameter_range_mm")
    @classmethod
    def _ordered(cls, v: tuple[float, float] | None, info: ValidationInfo) -> tuple[float, float] | None:
        return ordered_pair(str(info.field_name), v)


class GridConfig(Finite):
    """The detector grid: voxel spacing (mm, x/y/z) and HU window of the network input."""

    spacing_mm: tuple[Spacing, Spacing, Spacing] = (1.25, 1.25, 5.0)
    hu_window: tuple[float, float] = WINDOWS["lung_input"]

    @field_validator("hu_window")
    @classmethod
    def _window(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not -4000.0 <= v[0] < v[1] <= 40000.0:
            raise ValueError(f"hu_window [{v[0]}, {v[1]}] must be [low, high] HU with low < high")
        return v


class TrainConfig(PatchTrainConfig):
    """The lung recipe's training budget and 3D patch (z, y, x voxels); these are the only defaults
    (the detector and the patch sampler take theirs from here)."""

    steps: int = Field(1500, ge=1, le=1_000_000)
    patch_size: tuple[Voxels, Voxels, Voxels] = (8, 48, 48)
    # timed on the first 8 steps (2 threads vs 1 on a 2-core machine), the faster kept for training and inference
    threads: Annotated[int, Field(ge=1, le=256)] | Literal["auto"] = "auto"
    budget_minutes: float | None = Field(4.0, gt=0.0, le=100_000.0)  # wall clock: stop here or at `steps`
    # validation CPM every N steps and at the end (learning curve; 0 = none). The demo validates once, after the
    # budget: two validations inside the 4 min (steps 250, 500) took about 50 s of it (~20 %, ~120 steps)
    eval_every: int = Field(1500, ge=0, le=1_000_000)
    # which weights the run keeps: `best` validation CPM (the later on a tie) or the `last` step's (the curve is
    # then a record only: on a few validation nodules an early, unannealed checkpoint can win by noise)
    keep_weights: Literal["best", "last"] = "last"
    positive_sampling: Literal["voxel", "lesion"] = "lesion"  # lesion: each nodule equally often, whatever its size
    # dice_ce: Dice over the batch + BCE (large nodules weigh by their volume); dice_ce_patch: Dice per patch;
    # dice_focal_patch: Dice per patch + focal loss (medanomaly.detect.generic.heatmap_loss)
    loss: Literal["dice_ce", "dice_ce_patch", "dice_focal_patch"] = "dice_ce_patch"
    # bfloat16 where the CPU (AVX512-BF16, AMX) or GPU computes it natively, else fp32: on a 2-core AVX512-BF16 CPU a
    # training step x0.56 and the held-out detection x0.63 of fp32, with the same CPM (F14, docs/lung_nodules_runs.md)
    precision: Precision = "auto"


class InferConfig(SlidingInferConfig):
    """Whole-volume inference restricted to the lungs (grown by ``lung_margin_mm``) and post-processing."""

    roi_size: tuple[Voxels, Voxels, Voxels] = (16, 128, 128)
    lung_margin_mm: float = Field(5.0, ge=0.0, le=200.0)
    candidate_threshold: float = Field(0.15, ge=0.0, le=1.0)
    max_findings: int = Field(20, ge=1, le=10_000)
    hit_min_radius_mm: float = Field(5.0, ge=0.0, le=100.0)
    explain_top: int = Field(3, ge=0, le=100)  # Grad-CAM overlays of the top-N findings per real case (0 = off)
    # Test-time mirroring along x (left-right, nnU-Net's mirroring on one axis: 2 network passes): the held-out
    # lung is the other side from the training lung (docs/lung_nodules_runs.md, "Test-time mirroring").
    mirror_axes: list[Literal["x", "y", "z"]] = Field(default_factory=lambda: ["x"], max_length=3)
    # Image pyramid: the network also runs on the CT resampled to the grid's spacing times each factor above 1,
    # merged by the voxel-wise maximum (medanomaly.detect.infer.heatmap): at factor 2 a 60 mm tumour looks like
    # a 30 mm one, as trained. A coarser scale adds only components filling a ball of coarse_min_diameter_mm
    # (at mask_threshold; 30 mm = the upper end of the LIDC shapes' range), not more small candidates.
    # Chosen on validation scans (docs/lung_nodules_runs.md, "Image pyramid"); [1.0] = the detector grid only.
    scales: list[Annotated[float, Field(ge=1.0, le=4.0)]] = Field(default_factory=lambda: [1.0, 2.0], min_length=1,
                                                                   max_length=4)
    coarse_min_diameter_mm: float = Field(30.0, ge=0.0, le=200.0)
    # Valley splitting (SlidingInferConfig.split_depth) on for the lung: 0.3 cost nothing on validation scans and
    # large lesions and gave a nodule merged into a neighbouring candidate its own finding (docs/lung_nodules_runs.md,
    # "Valley splitting").
    split_depth: float | None = Field(0.3, gt=0.0, le=1.0)
    # Region growing of each finding's mask to the lesion's extent (medanomaly.detect.grow): within
    # grow_margin_mm of the network's mask, inside the lung, at the half-maximum HU level (never below
    # grow_min_hu: fainter ground glass keeps the network's mask), opened by a ball of radius
    # max(grow_opening_mm, grow_opening_fraction x the lesion's inscribed radius) that cuts vessels; a grown
    # mask less compact than grow_min_compactness (inscribed / equivalent-sphere radius) is a leak: the
    # network's mask is kept. grow_max_ratio (grown / network volume; None = off) is the rule of older runs.
    # grow_max_slice_rise: the grown mask's area per slice, walked out of the network's largest slice, may not
    # rise above this x its running minimum after a fall (a second body: the organ under the diaphragm dome a
    # basal tumour touches; medanomaly.detect.grow.drop_second_body; None = off).
    grow: bool = True
    grow_margin_mm: float = Field(30.0, gt=0.0, le=100.0)
    grow_opening_mm: float = Field(2.0, ge=0.0, le=10.0)
    grow_min_hu: float = Field(-700.0, ge=-1000.0, le=200.0)
    grow_opening_fraction: float = Field(0.5, ge=0.0, le=0.9)
    grow_min_compactness: float = Field(0.5, ge=0.0, le=1.0)
    grow_max_ratio: float | None = Field(None, ge=1.0, le=1000.0)
    grow_max_slice_rise: float | None = Field(1.25, ge=1.0, le=10.0)


class LungNoduleConfig(RunConfig):
    """Config of the ``lung_nodule`` task (train on simulated nodules, test on real ones)."""

    task: str = "lung_nodule"
    simulation: SimulationConfig = SimulationConfig()
    grid: GridConfig = GridConfig()
    model: ComponentConfig = ComponentConfig(name="nodule_unet", params={"filters": [8, 16, 32]})
    train: TrainConfig = TrainConfig()
    infer: InferConfig = InferConfig()
    luna16: Luna16Section | None = None  # train/test on LUNA16 folds instead of simulation (detect.luna16_source)

    @model_validator(mode="after")
    def _window_sizes(self) -> LungNoduleConfig:
        if not self.simulation.sources and self.luna16 is None:  # an empty list was a traceback after the data work
            raise ValueError("simulation.sources names no chest CT: give one (or a luna16 section)")
        check_window_sizes(self.model.name, 3, {"train.patch_size": self.train.patch_size,
                                                "infer.roi_size": self.infer.roi_size})  # fmt: skip
        return self
