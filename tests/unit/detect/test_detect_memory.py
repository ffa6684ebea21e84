"""The lung simulation's memory is checked before any scan is made, and the scans are made one at a time."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from medanomaly.detect.config import LungNoduleConfig
from medanomaly.detect.task import check_training_memory
from medanomaly.errors import InputError


def _source(shape=(48, 512, 512), spacing=(0.7, 0.7, 5.0)) -> SimpleNamespace:
    return SimpleNamespace(ct=SimpleNamespace(shape=shape, spacing=spacing))


def _config(train: int, val: int) -> LungNoduleConfig:
    return LungNoduleConfig.model_validate({"simulation": {"train_scans_per_source": train, "val_scans_per_source": val},
                                            "grid": {"spacing_mm": [1.4, 1.4, 5.0]}})  # fmt: skip


def test_the_estimate_counts_grid_training_scans_and_full_resolution_validation_scans() -> None:
    sources = [_source(), _source()]
    need = check_training_memory(_config(3, 1), sources, available=1 << 40)  # type: ignore[arg-type]
    grid = 48 * 256 * 256  # 512 x 0.7 / 1.4 = 256 per side, the same 48 slices
    assert need == 2 * (3 * grid * 11 + 1 * 48 * 512 * 512 * 3)


def test_a_simulation_that_cannot_fit_is_one_line_naming_the_keys_before_any_scan_is_made() -> None:
    sources = [_source(), _source()]
    with pytest.raises(InputError) as info:
        check_training_memory(_config(1000, 2), sources, available=8 << 30)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message and "of memory (1000 training and 2 validation scan(s) per source, 2 source(s)" in message
    assert "8 GiB is available" in message and "simulation.train_scans_per_source" in message


def test_a_grid_too_fine_to_fit_names_the_grid_and_says_to_coarsen_it() -> None:
    """A grid of 0.1 mm in-plane (49x the voxels of 0.7 mm) with the shipped scan counts: the message names the grid
    and the key to change, not only the scan counts."""
    cfg = LungNoduleConfig.model_validate({"grid": {"spacing_mm": [0.1, 0.1, 5.0]}})
    with pytest.raises(InputError) as info:
        check_training_memory(cfg, [_source(), _source()], available=8 << 30)  # type: ignore[arg-type]
    message = str(info.value)
    assert "grid 0.1 x 0.1 x 5 mm" in message and "coarsen grid.spacing_mm" in message


def test_the_training_set_is_resampled_scan_by_scan(monkeypatch) -> None:
    from medanomaly.detect import task

    made: list[str] = []
    held: list[int] = []

    def fake_iter(cfg, sources, purpose, progress):
        for k in range(3):
            made.append(f"scan{k}")
            held.append(len(made) - len(grid))  # full-resolution scans alive when the next one is made
            yield f"scan{k}"

    grid: list[str] = []
    monkeypatch.setattr(task, "iter_simulated", fake_iter)
    monkeypatch.setattr("medanomaly.detect.patches.to_grid_scan", lambda scan, spacing, window: grid.append(scan) or scan)
    assert task.simulate_training_set(_config(3, 0), [], progress=False) == ["scan0", "scan1", "scan2"]
    assert held == [1, 1, 1]


def test_a_phantom_cohort_too_large_for_memory_is_refused_before_it_is_drawn() -> None:
    from medanomaly.detect.detection_config import DataConfig
    from medanomaly.detect.detection_task import check_phantom_memory

    assert check_phantom_memory(DataConfig(n_patients=40, size=256), available=1 << 34) == 40 * 2 * 256 * 256 * 4
    with pytest.raises(InputError) as info:
        check_phantom_memory(DataConfig(n_patients=100_000, size=4096), available=24 << 30)
    message = str(info.value)
    assert "\n" not in message and "100000 patients at 4096 px needs about 12.21 TiB" in message
    assert "lower data.n_patients or data.size" in message
