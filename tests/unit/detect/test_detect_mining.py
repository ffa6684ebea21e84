"""Hard negatives mined from the lung detector's own false positives (medanomaly.detect.mining)."""

from __future__ import annotations

import numpy as np
import pytest

from medanomaly.detect.detector import NoduleDetector
from medanomaly.detect.mining import false_positive_peaks
from medanomaly.detect.patches import GridScan, PatchSampler, to_grid_scan
from medanomaly.detect.simulate import simulate_scan

from .conftest import TINY

pytestmark = pytest.mark.xdist_group("lung_tiny_detector")

SHAPE = (8, 32, 32)


def _scan(bright: dict[tuple[int, int, int], float], nodule: tuple[int, int, int] | None = None,
          allowed: np.ndarray | None = None) -> GridScan:  # fmt: skip
    """A scan whose windowed image is 0 except the ``bright`` voxels; the stub network below turns them into peaks."""
    image = np.zeros(SHAPE, np.float32)
    for voxel, value in bright.items():
        image[voxel] = value
    target = np.zeros(SHAPE, np.uint8)
    if nodule is not None:
        target[nodule] = 1
    allowed = np.ones(SHAPE, bool) if allowed is None else allowed
    return GridScan("toy", image, target, allowed, np.zeros(SHAPE, bool), np.full(SHAPE, -1000.0, np.float32))


def _stub(x):  # logits: 0 -> -10 (probability ~0), 1 -> +10 (~1), 0.6 -> +2 (0.88)
    return x * 20.0 - 10.0


def test_peaks_outside_nodules_and_their_fringe_highest_first() -> None:
    allowed = np.ones(SHAPE, bool)
    allowed[:, :, 28:] = False
    scan = _scan({(4, 8, 8): 0.6, (4, 20, 8): 1.0, (4, 24, 24): 1.0, (4, 24, 26): 1.0, (4, 8, 30): 1.0},
                 nodule=(4, 24, 24), allowed=allowed)  # fmt: skip
    peaks = false_positive_peaks(_stub, scan, SHAPE, 0.25)
    # the nodule (24, 24) and its fringe 2 voxels away are not false positives, nor the voxel outside `allowed`
    assert peaks.tolist() == [[4, 20, 8], [4, 8, 8]]
    assert false_positive_peaks(_stub, scan, SHAPE, 0.25, max_per_scan=1).tolist() == [[4, 20, 8]]
    assert false_positive_peaks(_stub, scan, SHAPE, 0.25, level=0.95).tolist() == [[4, 20, 8]]
    assert false_positive_peaks(_stub, scan, SHAPE, 0.25, guard=0).tolist()[:3] == [[4, 20, 8], [4, 24, 26], [4, 8, 8]]


def test_a_scan_without_admissible_voxels_has_no_peaks() -> None:
    scan = _scan({(4, 8, 8): 1.0}, allowed=np.zeros(SHAPE, bool))
    assert false_positive_peaks(_stub, scan, SHAPE, 0.25).shape == (0, 3)


def test_mined_centres_are_drawn_and_inadmissible_ones_dropped() -> None:
    allowed = np.ones(SHAPE, bool)
    allowed[:, :, 28:] = False
    scan = _scan({(4, 16, 16): 0.9}, allowed=allowed)
    sampler = PatchSampler([scan], (4, 16, 16), positive_fraction=0.0, hard_negative_fraction=1.0, mined_fraction=1.0)
    sampler.set_mined(0, np.array([[4, 16, 16], [4, 16, 30]]))
    assert sampler._mined[0].tolist() == [[4, 16, 16]]  # (4, 16, 30) is not admissible
    x, _ = sampler.sample(np.random.default_rng(0), 32)
    # the centre's jitter is at most a quarter patch, so every patch holds the mined voxel (0.9 +- the HU offset)
    assert (x.reshape(32, -1).max(axis=1) > 0.85).all()


def test_without_mined_fraction_the_sampler_draws_as_before() -> None:
    scan = _scan({(4, 16, 16): 0.9})
    plain = PatchSampler([scan], (4, 16, 16), hard_negative_fraction=0.5)
    pooled = PatchSampler([scan], (4, 16, 16), hard_negative_fraction=0.5, mined_fraction=0.0)
    pooled.set_mined(0, np.array([[4, 16, 16]]))
    a = plain.sample(np.random.default_rng(3), 16)
    b = pooled.sample(np.random.default_rng(3), 16)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))


def _two_nodule_sampler(weight: float) -> PatchSampler:
    target_scan = _scan({(4, 8, 8): 1.0, (4, 24, 24): 1.0})
    target_scan.target[4, 8, 8] = 1
    target_scan.target[4, 24, 24] = 1
    return PatchSampler([target_scan], (4, 8, 8), positive_fraction=1.0, hard_negative_fraction=0.0,
                        per_lesion=True, hard_positive_weight=weight)  # fmt: skip


def test_missed_nodules_are_drawn_more_often_with_a_hard_positive_weight() -> None:
    prob = np.zeros(SHAPE, np.float32)
    prob[4, 8, 8] = 0.9  # found; (4, 24, 24) missed (0.0)
    weighted, plain = _two_nodule_sampler(9.0), _two_nodule_sampler(1.0)
    assert weighted.set_lesion_peaks(0, prob, 0.5) == 1 and plain.set_lesion_peaks(0, prob, 0.5) == 1
    rng = np.random.default_rng(0)
    drawn = [tuple(weighted._lesion_pool(0, rng)[0]) for _ in range(2000)]
    share = drawn.count((4, 24, 24)) / len(drawn)
    assert 0.86 < share < 0.94  # 9 : 1
    # weight 1: equal draws, and the same generator stream as a sampler never given peaks
    fresh = _two_nodule_sampler(1.0)
    a, b = plain.sample(np.random.default_rng(5), 8), fresh.sample(np.random.default_rng(5), 8)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))


def test_hard_positive_weight_needs_mining() -> None:
    from pydantic import ValidationError

    from medanomaly.detect.detection_config import PatchTrainConfig

    with pytest.raises(ValidationError, match="set mine_every > 0"):
        PatchTrainConfig(hard_positive_weight=4.0)
    assert PatchTrainConfig(hard_positive_weight=4.0, mine_every=100).hard_positive_weight == 4.0


def test_training_mines_every_n_steps_and_records_the_rounds(toy_source) -> None:
    sims = [simulate_scan(toy_source, 1, 3, np.random.default_rng([1, k]), (6.0, 15.0)) for k in range(2)]
    scans = [to_grid_scan(s, TINY["spacing_mm"], (-1000.0, 400.0)) for s in sims]
    det = NoduleDetector(**{**TINY, "steps": 7, "mine_every": 2}).fit(scans, progress=False)
    rounds = det.fit_.mining
    assert [r["step"] for r in rounds] == [2, 4]  # not 6: the last 10 % of the run mines nothing
    assert all(r["false_positives"] >= 0 and r["seconds"] >= 0 and r["missed_nodules"] >= 0 for r in rounds)
    assert det.fit_.to_json()["hard_negative_mining"] == rounds
    assert det.model_.training is False  # back in eval mode after training, mining rounds included
    assert NoduleDetector(**{**TINY, "steps": 3}).fit(scans, progress=False).fit_.mining == []


def test_a_mining_round_that_would_end_past_nine_tenths_of_the_budget_does_not_start() -> None:
    from medanomaly.detect.generic import mining_round_due

    assert [mining_round_due(s, 800, 8000, 0.0) for s in (1, 800, 801, 1601, 7201)] == [False, False, True, True, False]
    # F12 (0.8 mm grid): the round at step 2,400 started at 0.89 of the budget and took 177 s, a tenth of it.
    assert mining_round_due(2401, 800, 8000, 0.89) and not mining_round_due(2401, 800, 8000, 0.89 + 177 / 1800)
    assert not mining_round_due(801, 0, 8000, 0.0)  # mining off


@pytest.mark.parametrize("rounds", [[{"step": 800, "false_positives": 12.0, "scans_with_any": 3.0, "seconds": 41.6},
                                     {"step": 1600, "false_positives": 4.0, "scans_with_any": 2.0, "missed_nodules": 5.0,
                                      "seconds": 40.0}], None])
def test_the_report_lists_the_mining_rounds(tmp_path, rounds) -> None:
    from medanomaly.evaluate.lung_report import write_lung_report

    training = {"steps_done": 900, "wall_seconds": 60.0, "cpu_seconds": 100.0, "budget_minutes": 1.0,
                "stop_reason": "steps", "best_step": None, "learning_curve": [], "hard_negative_mining": rounds}
    html = write_lung_report(tmp_path / "report.html", {"title": "t", "intro": "", "split": "", "froc": None,
                                                        "agreement": [], "cases": [], "training": training}).read_text()  # fmt: skip
    assert ("step 800: 12 peaks (42 s); step 1600: 4 peaks, 5 training nodules missed (40 s)." in html) == (rounds is not None)
    assert ("Hard negatives mined" in html) == (rounds is not None)


def test_one_slice_images_are_mined_with_the_2d_divisor() -> None:
    image = np.zeros((1, 32, 32), np.float32)
    image[0, 8, 8], image[0, 20, 24] = 0.9, 1.0
    target = np.zeros(image.shape, np.uint8)
    target[0, 20, 24] = 1
    scan = GridScan("slice", image, target, np.ones(image.shape, bool), np.zeros(image.shape, bool), image)
    peaks = false_positive_peaks(lambda x: x * 20.0 - 10.0, scan, (1, 32, 32), 0.25, divisor=(1, 4, 4))
    assert peaks.tolist() == [[0, 8, 8]]


def test_the_2d_heatmap_detector_mines_its_training_images() -> None:
    import torch

    from medanomaly.detect.generic import HeatmapDetector

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    det = HeatmapDetector(model_params={"filters": [4, 8, 16]}, region="none", patch_size=(1, 16, 16), steps=30,
                          batch_size=4, roi_size=(1, 32, 32), lr=1e-2, mine_every=10, seed=0)
    scans = []
    for i in range(3):
        image = rng.normal(0.3, 0.03, (1, 32, 32)).astype(np.float32)
        target = np.zeros(image.shape, np.uint8)
        target[0, 10:14, 10:14], image[0, 10:14, 10:14] = 1, 0.9
        scans.append(GridScan(f"s{i}", image, target, np.ones(image.shape, bool), np.zeros(image.shape, bool), image))
    det.fit(scans, progress=False)
    assert [r["step"] for r in det.mining_] == [10, 20]  # none in the last 10 % of the steps
    assert all(set(r) == {"step", "false_positives", "scans_with_any", "seconds"} for r in det.mining_)
    assert HeatmapDetector(**det.get_params()).mine_every == 10  # saved with the detector's parameters


def test_a_nodule_smaller_than_a_grid_voxel_keeps_its_centre_voxel(toy_source) -> None:
    """Nearest-neighbour labels lost such a nodule (5 of 295 training nodules of a full run): the network was then
    taught that it is background, and the hard-negative sampler could centre patches on it."""
    from types import SimpleNamespace

    from medanomaly.detect.grid import to_grid
    from medanomaly.detect.simulate import SimScan

    ct = toy_source.ct
    labels = np.zeros(ct.shape, np.uint8)
    labels[8, 30, 26] = 1  # one 2.5 x 2.5 x 5 mm voxel
    centre = tuple(float(c) for c in ct.index_to_physical([26, 30, 8]))
    sim = SimScan("tiny", toy_source, 1, ct, ct.with_array(labels), [SimpleNamespace(center_mm=centre)])
    spacing = (5.0, 5.0, 10.0)
    assert not np.asarray(to_grid(sim.labels, spacing, nearest=True).array).any()  # lost by nearest neighbour
    grid = to_grid_scan(sim, spacing, (-1000.0, 400.0))
    assert int(grid.target.sum()) == 1
    voxel = np.argwhere(grid.target)[0][::-1].astype(float)
    assert np.linalg.norm(to_grid(ct, spacing).index_to_physical(voxel) - np.asarray(centre)) <= 6.0
