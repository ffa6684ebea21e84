"""The run's validation data, as export needs it: the fp32 match check, int8 calibration and the
int8 guard. Never the test split.

* classification: the validation split of the run's dataset (model inputs and labels);
* fusion: the validation split (inputs, labels, presence); the match check also hides modalities;
* lung_nodule: it has no validation split, so validation scans are simulated like the training
  ones (nodules in the **training** lung) from a separate seed stream: neither the training scans
  (stream 0) nor the held-out test scans (the other lung) are used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ValidationData", "validation_data", "VALIDATION_SEED_OFFSET"]

#: Seed offset of the simulated lung validation scans (training uses the run's seed).
VALIDATION_SEED_OFFSET = 104729


@dataclass(frozen=True, eq=False)
class ValidationData:
    """Validation inputs of one run.

    Attributes:
        inputs: network inputs (N, C, *spatial) float32 (detection: sliding windows (N, 1, *roi)).
        labels: class labels (N,) (None for detection windows).
        present: fusion presence masks (N, M) (None otherwise).
        synthetic: the data is simulated.
        sources: detection only: the source CTs (with lungs and real lesions) of the run's config.
    """

    inputs: np.ndarray
    labels: np.ndarray | None = None
    present: np.ndarray | None = None
    synthetic: bool = False
    sources: Any = None


def validation_data(run_dir: str | Path, task: str, limit: int | None = None) -> ValidationData:
    """The validation data of a finished run (at most ``limit`` items)."""
    from medanomaly.config import load_config

    cfg = load_config(Path(run_dir) / "config.yaml")
    if task == "classification":
        from medanomaly.classify.engine import load_data

        val = load_data(cfg).split("val")
        images, labels = np.asarray(val.images, np.float32), np.asarray(val.labels)
        return ValidationData(images[:limit], labels[:limit], synthetic=bool(getattr(val, "synthetic", False)))
    if task == "fusion":
        from medanomaly.fusion.task import build_splits

        splits = build_splits(cfg)
        x, y, present = splits.arrays["val"]
        return ValidationData(np.asarray(x, np.float32)[:limit], np.asarray(y)[:limit],
                              np.asarray(present, bool)[:limit], synthetic=splits.synthetic)  # fmt: skip
    if task == "lung_nodule":
        from medanomaly.io.limits import check_voxel_bytes

        limit = limit or 16
        check_voxel_bytes((limit, *cfg.infer.roi_size), 4, Path(run_dir), what="calibration windows")
        return _lung_windows(cfg, limit)
    from medanomaly.errors import InputError

    raise InputError(f"no validation data for task {task!r}", run_dir)


def _lung_windows(cfg: Any, limit: int) -> ValidationData:
    """Sliding-window inputs from simulated validation scans (training lung, separate seed)."""
    from medanomaly.detect.infer import region_box
    from medanomaly.detect.patches import to_grid_scan
    from medanomaly.detect.simulate import simulate_scan
    from medanomaly.detect.task import load_sources

    sim = cfg.simulation
    sources = load_sources(sim, progress=False)
    roi = tuple(cfg.infer.roi_size)
    windows = []
    rng = np.random.default_rng([cfg.seed + VALIDATION_SEED_OFFSET, 2])
    for si, src in enumerate(sources):
        scan = simulate_scan(src, sim.train_side, sim.nodules_per_train_scan, np.random.default_rng(
            [cfg.seed + VALIDATION_SEED_OFFSET, 2, si]), sim.diameter_range_mm, name=f"{src.name}-val")  # fmt: skip
        grid = to_grid_scan(scan, cfg.grid.spacing_mm, cfg.grid.hu_window)
        image = grid.image
        box = region_box(grid.target > 0, roi)  # all of the image when it holds no nodule
        for _ in range(max(1, limit // len(sources))):
            start = [int(rng.integers(max(b.start - r // 2, 0), max(min(b.stop, n - r), 0) + 1))
                     for b, r, n in zip(box, roi, image.shape, strict=True)]  # fmt: skip
            crop = image[tuple(slice(s, s + r) for s, r in zip(start, roi, strict=True))]
            pads = [(0, r - c) for r, c in zip(roi, crop.shape, strict=True)]
            windows.append(np.pad(crop, pads)[None])
    return ValidationData(np.stack(windows)[:limit].astype(np.float32), synthetic=True, sources=sources)
