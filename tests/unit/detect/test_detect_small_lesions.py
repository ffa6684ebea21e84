"""What makes the lung detector see small nodules (issue 16): per-patch losses and the ``mixed`` shapes."""

from __future__ import annotations

import numpy as np
import pytest

from medanomaly.detect.detector import NoduleDetector
from medanomaly.detect.generic import HEATMAP_LOSSES, heatmap_loss
from medanomaly.detect.patches import to_grid_scan
from medanomaly.detect.simulate import ScanSimulator, simulate_scan
from medanomaly.errors import InputError

from .conftest import TINY

pytestmark = pytest.mark.xdist_group("lung_tiny_detector")


def _two_patches() -> tuple[object, object]:
    """Logits and targets of two patches: a large lesion found exactly, a one-voxel lesion missed."""
    import torch

    y = torch.zeros(2, 1, 4, 16, 16)
    y[0, 0, :, 2:14, 2:14] = 1.0  # large: 576 voxels
    y[1, 0, 2, 8, 8] = 1.0  # small: 1 voxel
    logits = torch.where(y > 0, 8.0, -8.0)
    logits[1, 0, 2, 8, 8] = -8.0  # the small lesion is missed
    return logits, y


def test_per_patch_dice_weighs_a_missed_small_lesion_like_a_patch() -> None:
    logits, y = _two_patches()
    batch = float(heatmap_loss("dice_ce")(logits, y))
    patch = float(heatmap_loss("dice_ce_patch")(logits, y))
    # Batch Dice: the missed voxel is 1 of 577 lesion voxels (loss ~0); per patch it is half the batch.
    assert batch < 0.01
    assert patch > 0.45
    assert float(heatmap_loss("dice_focal_patch")(logits, y)) > 0.45


def test_unknown_loss_is_one_clear_error() -> None:
    with pytest.raises(InputError, match="unknown heatmap loss 'dice'.*dice_ce_patch"):
        heatmap_loss("dice")
    assert set(HEATMAP_LOSSES) == {"dice_ce", "dice_ce_patch", "dice_focal_patch"}


def test_detector_trains_with_each_loss_and_records_it(toy_source, tmp_path) -> None:
    sims = [simulate_scan(toy_source, 1, 3, np.random.default_rng([2, k]), (6.0, 15.0)) for k in range(2)]
    scans = [to_grid_scan(s, TINY["spacing_mm"], (-1000.0, 400.0)) for s in sims]
    det = NoduleDetector(**{**TINY, "steps": 3, "loss": "dice_focal_patch"}).fit(scans, progress=False)
    assert len(det.history_) == 3 and np.isfinite(det.history_).all()
    det.save(tmp_path)
    assert NoduleDetector.load(tmp_path).loss == "dice_focal_patch"


def test_mixed_shapes_alternate_in_training_and_are_real_in_validation_and_test(toy_source) -> None:
    from medanomaly.data.lidc_shapes import load_library
    from medanomaly.synth.insert import InsertedShape
    from medanomaly.synth.nodules import InsertedNodule

    split_of = dict(zip(load_library().nodule_ids, load_library().splits, strict=True))
    train = ScanSimulator("mixed", "train", (4.0, 10.0))
    assert [train.kind(k) for k in range(4)] == ["lidc", "procedural", "lidc", "procedural"]
    real = train.scan(toy_source, 1, 2, np.random.default_rng(0), "t0", index=0)
    procedural = train.scan(toy_source, 1, 2, np.random.default_rng(0), "t1", index=1)
    assert all(isinstance(t, InsertedShape) and split_of[t.nodule_id] == "train" for t in real.truths)
    assert procedural.truths and all(isinstance(t, InsertedNodule) for t in procedural.truths)
    for split in ("val", "test"):
        sim = ScanSimulator("mixed", split, (4.0, 10.0))
        assert {sim.kind(k) for k in range(4)} == {"lidc"}
        scan = sim.scan(toy_source, 2, 2, np.random.default_rng(0), "h", index=1)
        assert {split_of[t.nodule_id] for t in scan.truths} == {split}


def test_mixed_procedural_scans_take_their_own_diameter_range(toy_source) -> None:
    sim = ScanSimulator("mixed", "train", (4.0, 10.0), procedural_range_mm=(20.0, 24.0))
    scan = sim.scan(toy_source, 1, 2, np.random.default_rng(3), "t1", index=1)
    assert scan.truths and all(20.0 <= t.spec.diameter_mm <= 24.0 for t in scan.truths)
    plain = ScanSimulator("procedural", "train", (4.0, 10.0), procedural_range_mm=(20.0, 24.0))  # mixed only
    assert all(t.spec.diameter_mm <= 10.0 for t in plain.scan(toy_source, 1, 2, np.random.default_rng(3), "p").truths)


def test_config_refuses_an_inverted_procedural_range() -> None:
    from medanomaly.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="inverted"):
        parse_config({"task": "lung_nodule", "simulation": {"procedural_diameter_range_mm": [70.0, 3.0]}})


def test_a_validation_tie_keeps_the_later_weights(toy_source) -> None:
    sims = [simulate_scan(toy_source, 1, 3, np.random.default_rng([4, k]), (6.0, 15.0)) for k in range(2)]
    scans = [to_grid_scan(s, TINY["spacing_mm"], (-1000.0, 400.0)) for s in sims]
    det = NoduleDetector(**{**TINY, "steps": 6, "keep_weights": "best"}).fit(scans, progress=False, validate=lambda d: {"cpm": 0.5},
                                                     eval_every=3)  # fmt: skip
    assert [r["step"] for r in det.fit_.curve] == [3, 6] and det.fit_.best_step == 6


def test_non_solid_weight_draws_more_non_solid_training_shapes_and_leaves_held_out_scans_alone(toy_source) -> None:
    from medanomaly.config import parse_config
    from medanomaly.detect.task import simulate_set

    def non_solid_share(sim: ScanSimulator) -> float:
        kinds = [t.spec.kind for k in range(12)
                 for t in sim.scan(toy_source, 1, 2, np.random.default_rng(k), "t").truths]  # fmt: skip
        return float(np.mean([kind != "solid" for kind in kinds]))

    assert non_solid_share(ScanSimulator("lidc", "train", (4.0, 10.0), non_solid_weight=20.0)) >= 0.6
    assert non_solid_share(ScanSimulator("lidc", "train", (4.0, 10.0))) <= 0.4  # the library's mix, ~18 %
    cfg = parse_config({"task": "lung_nodule", "simulation": {"shapes": "lidc", "non_solid_weight": 20.0,
                        "test_scans_per_source": 2, "val_scans_per_source": 2}})
    plain = cfg.model_copy(update={"simulation": cfg.simulation.model_copy(update={"non_solid_weight": 1.0})})
    for purpose in ("val", "test"):
        weighted = simulate_set(cfg, [toy_source], purpose, progress=False)
        natural = simulate_set(plain, [toy_source], purpose, progress=False)
        assert [t.nodule_id for s in weighted for t in s.truths] == [t.nodule_id for s in natural for t in s.truths]


def test_the_validation_draw_is_as_large_as_the_heldout_one_and_disjoint_from_the_learning_curve_scans(toy_source):
    from medanomaly.config import parse_config
    from medanomaly.detect.task import simulate_set

    cfg = parse_config({"task": "lung_nodule", "simulation": {"shapes": "lidc", "test_scans_per_source": 3,
                        "nodules_per_test_scan": 2, "val_scans_per_source": 2}})  # fmt: skip
    curve = simulate_set(cfg, [toy_source], "val", progress=False)
    draw = simulate_set(cfg, [toy_source], "val_draw", progress=False)
    assert [s.name for s in curve] == ["toy-val-0", "toy-val-1"]
    assert [s.name for s in draw] == ["toy-val-2", "toy-val-3", "toy-val-4"]
    assert {s.side for s in draw} == {cfg.simulation.train_side} and all(len(s.truths) == 2 for s in draw)
    centres = {tuple(np.round(t.center_mm, 1)) for s in curve for t in s.truths}
    assert not centres & {tuple(np.round(t.center_mm, 1)) for s in draw for t in s.truths}
