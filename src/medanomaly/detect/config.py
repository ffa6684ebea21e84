"""The ``lung_nodule`` task's config tree (pydantic); the defaults are the demo configuration.

Example:
    >>> cfg = LungNoduleConfig(task="lung_nodule")
    >>> cfg.grid.spacing_mm
    (1.25, 1.25, 5.0)
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from medanomaly.config import ComponentConfig, RunConfig, Section
from medanomaly.preprocess.intensity import WINDOWS


class SourceConfig(Section):
    """One real chest CT used as background for simulation.

    Either ``case`` (a pyradiomics case name: lung1, lung2; its lesion mask is used as the
    exclusion zone) or ``image`` (a path) with an optional ``lesion_mask`` to exclude.
    """

    case: str | None = None
    image: Path | None = None
    lesion_mask: Path | None = None
    name: str | None = None


class SimulationConfig(Section):
    """How the simulated training and held-out scans are made (see ``medanomaly.detect.simulate``)."""

    sources: tuple[SourceConfig, ...] = (SourceConfig(case="lung1"), SourceConfig(case="lung2"))
    exclude_margin_mm: float = 20.0
    train_side: int = 1  # 1 = right lung for training, the left lung (2) is held out
    train_scans_per_source: int = 3
    nodules_per_train_scan: int = 8
    test_scans_per_source: int = 3
    nodules_per_test_scan: int = 4
    diameter_range_mm: tuple[float, float] = (3.0, 30.0)


class GridConfig(Section):
    """The detector grid: voxel spacing (mm, x/y/z) and HU window of the network input."""

    spacing_mm: tuple[float, float, float] = (1.25, 1.25, 5.0)
    hu_window: tuple[float, float] = WINDOWS["lung_input"]


class TrainConfig(Section):
    """The detector's small training loop (Adam, Dice + BCE, one-cycle learning rate)."""

    steps: int = 250
    batch_size: int = 8
    patch_size: tuple[int, int, int] = (8, 48, 48)
    lr: float = 3e-3
    positive_fraction: float = 0.5
    hard_negative_fraction: float = 0.3
    threads: int = 1  # 1 beats 2 on a shared 2-core machine (no OpenMP oversubscription)


class InferConfig(Section):
    """Whole-volume inference and post-processing."""

    roi_size: tuple[int, int, int] = (16, 128, 128)
    overlap: float = 0.25
    lung_margin_mm: float = 5.0
    candidate_threshold: float = 0.15
    mask_threshold: float = 0.5
    max_findings: int = 20
    hit_min_radius_mm: float = 5.0
    explain_top: int = Field(3, ge=0)  # Grad-CAM overlays of the top-N findings per real case (0 = off)


class LungNoduleConfig(RunConfig):
    """Config of the ``lung_nodule`` task (train on simulated nodules, test on real ones)."""

    task: str = "lung_nodule"
    simulation: SimulationConfig = SimulationConfig()
    grid: GridConfig = GridConfig()
    model: ComponentConfig = ComponentConfig(name="nodule_unet", params={"filters": [8, 16, 32]})
    train: TrainConfig = TrainConfig()
    infer: InferConfig = InferConfig()
