"""Lung detector training budget, learning curve (best checkpoint kept), per-lesion positive sampling
and the LIDC-shape simulation path (issue 16)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from medanomaly.detect.detector import NoduleDetector
from medanomaly.detect.generic import one_cycle
from medanomaly.detect.patches import GridScan, PatchSampler, to_grid_scan
from medanomaly.detect.simulate import ScanSimulator, simulate_scan

from .conftest import TINY

pytestmark = pytest.mark.xdist_group("lung_tiny_detector")


@pytest.fixture(scope="module")
def toy_scans(toy_source):
    sims = [simulate_scan(toy_source, 1, 3, np.random.default_rng([1, k]), (6.0, 15.0)) for k in range(2)]
    return [to_grid_scan(s, TINY["spacing_mm"], (-1000.0, 400.0)) for s in sims]


def test_budget_stops_training_before_the_steps(toy_scans) -> None:
    det = NoduleDetector(**{**TINY, "steps": 100_000, "budget_minutes": 0.02}).fit(toy_scans, progress=False)
    fit = det.fit_
    assert 1 <= fit.steps < 100_000 and fit.stop_reason == "time budget"
    assert fit.seconds < 30 and fit.cpu_seconds > 0
    assert len(det.history_) == fit.steps


def test_steps_stop_training_within_a_generous_budget(toy_scans) -> None:
    det = NoduleDetector(**{**TINY, "steps": 4, "budget_minutes": 60.0}).fit(toy_scans, progress=False)
    assert det.fit_.steps == 4 and det.fit_.stop_reason == "steps"


def _validate_recording(seen: dict) -> Any:
    """A validation that records the weights it saw per step and rates step 3 best."""
    def validate(detector: NoduleDetector) -> dict[str, float]:
        step = len(seen) * 3 + 3 if len(seen) < 2 else 7
        assert not detector.model_.training  # validated in eval mode
        # on the CPU: training runs on a GPU when present, and the kept model comes back to the CPU
        seen[step] = {k: v.detach().cpu().clone() for k, v in detector.model_.state_dict().items()}
        return {"cpm": 0.9 if step == 3 else 0.1}

    return validate


def test_keep_weights_last_records_the_curve_but_keeps_the_last_weights(toy_scans) -> None:
    import torch

    seen: dict[int, dict[str, torch.Tensor]] = {}
    det = NoduleDetector(**{**TINY, "steps": 7, "keep_weights": "last"}).fit(
        toy_scans, progress=False, validate=_validate_recording(seen), eval_every=3)
    assert [r["cpm"] for r in det.fit_.curve] == [0.9, 0.1, 0.1] and det.fit_.best_step == 7
    kept = det.model_.state_dict()
    assert all(torch.equal(kept[k], seen[7][k]) for k in kept)
    assert not all(torch.equal(kept[k], seen[3][k]) for k in kept)


def test_learning_curve_keeps_the_best_validated_weights(toy_scans) -> None:
    import torch

    seen: dict[int, dict[str, torch.Tensor]] = {}

    det = NoduleDetector(**{**TINY, "steps": 7, "keep_weights": "best"}).fit(
        toy_scans, progress=False, validate=_validate_recording(seen), eval_every=3)
    curve = det.fit_.curve
    assert [r["step"] for r in curve] == [3, 6, 7]
    assert [r["cpm"] for r in curve] == [0.9, 0.1, 0.1]
    assert all(r["seconds"] >= 0 and r["cpu_seconds"] >= 0 for r in curve)
    assert det.fit_.best_step == 3
    kept = det.model_.state_dict()
    assert all(torch.equal(kept[k], seen[3][k]) for k in kept)  # step 3's weights, not the last ones
    assert not all(torch.equal(kept[k], seen[7][k]) for k in kept)


def test_one_cycle_follows_progress() -> None:
    assert one_cycle(0.0) == pytest.approx(0.04)
    assert one_cycle(0.3) == pytest.approx(1.0)
    assert one_cycle(0.65) < one_cycle(0.5) < 1.0
    assert one_cycle(2.0) == one_cycle(1.0) < 1e-5  # a budget overrun stays annealed


def test_per_lesion_sampling_draws_small_lesions_as_often_as_large() -> None:
    shape = (8, 96, 96)
    target = np.zeros(shape, np.uint8)
    target[2:6, 10:40, 10:40] = 1  # large: 3600 voxels
    target[4, 70, 70] = 1  # small: 1 voxel
    image = np.zeros(shape, np.float32)
    scan = GridScan("t", image, target, np.ones(shape, bool), np.zeros(shape, bool), image - 850.0)
    rng = np.random.default_rng(0)
    for per_lesion, low, high in ((True, 0.35, 0.65), (False, 0.0, 0.02)):
        sampler = PatchSampler([scan], (4, 16, 16), positive_fraction=1.0, hard_negative_fraction=0.0,
                               per_lesion=per_lesion)
        _, y = sampler.sample(rng, 400)
        small = float(np.mean(y[:, 0, :, :, :].sum(axis=(1, 2, 3)) == 1))  # patches holding only the small one
        assert low <= small <= high, (per_lesion, small)


def test_lidc_simulation_uses_the_requested_split_in_one_lung(toy_source) -> None:
    from medanomaly.data.lidc_shapes import load_library

    lib = load_library()
    sim = ScanSimulator("lidc", "test", (4.0, 10.0))
    scan = sim.scan(toy_source, 2, 3, np.random.default_rng(0), "toy-test-0")
    split_of = dict(zip(lib.nodule_ids, lib.splits, strict=True))
    assert len(scan.truths) == 3
    assert {split_of[t.nodule_id] for t in scan.truths} == {"test"}
    labels = np.asarray(scan.labels.array)
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    assert (np.asarray(toy_source.lung.array)[labels > 0] == 2).all()  # the held-out lung only
    assert scan.ct.meta.get("synthetic") is True
    val = ScanSimulator("lidc", "val", (4.0, 10.0)).scan(toy_source, 2, 2, np.random.default_rng(0), "v")
    assert {split_of[t.nodule_id] for t in val.truths} == {"val"}
    with pytest.raises(Exception, match="no LIDC test shape"):
        ScanSimulator("lidc", "test", (60.0, 90.0))


def test_train_history_records_budget_and_learning_curve(tmp_path, toy_source) -> None:
    """The task writes steps, wall and CPU seconds and the curve; the report and metrics show them."""
    from medanomaly.detect.config import LungNoduleConfig
    from medanomaly.detect.task import LungNoduleTask

    cfg = LungNoduleConfig(
        simulation={"sources": [{"case": "lung1"}], "train_scans_per_source": 1, "nodules_per_train_scan": 2,
                    "test_scans_per_source": 1, "nodules_per_test_scan": 2, "val_scans_per_source": 1,
                    "diameter_range_mm": [6.0, 15.0], "shapes": "lidc"},
        grid={"spacing_mm": [2.5, 2.5, 5.0]}, model={"name": "nodule_unet", "params": {"filters": [4, 8, 16]}},
        train={"steps": 4, "eval_every": 2, "budget_minutes": 10.0, "batch_size": 2, "patch_size": [4, 32, 32]},
        infer={"roi_size": [8, 32, 32], "max_findings": 3, "explain_top": 0},
    )
    LungNoduleTask(progress=False).train(cfg, tmp_path, sources=[toy_source])
    hist = json.loads((tmp_path / "train_history.json").read_text())
    assert hist["steps_done"] == 4 and hist["stop_reason"] == "steps" and hist["cpu_seconds"] > 0
    assert [r["step"] for r in hist["learning_curve"]] == [2, 4] and hist["shapes"] == "lidc"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["training"]["learning_curve"] == hist["learning_curve"]
    assert (tmp_path / "learning_curve.png").is_file()
    assert "learning curve" in (tmp_path / "report.html").read_text().lower()


def test_bfloat16_trains_saves_and_detects_in_bfloat16(toy_scans, toy_source, tmp_path) -> None:
    """``train.precision: bf16``: the record says so, the saved detector keeps it, and its detection runs the network
    in bfloat16 (a detector saved before the setting loads as float32)."""
    import torch

    from .conftest import toy_chest

    det = NoduleDetector(**{**TINY, "steps": 3, "precision": "bf16"}).fit(toy_scans, progress=False)
    assert det.fit_.to_json()["precision"] == "bf16"
    det.save(tmp_path)
    back = NoduleDetector.load(tmp_path)
    seen: list[torch.dtype] = []
    first = next(m for m in back.model_.modules() if isinstance(m, torch.nn.Conv3d))
    first.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    ct, lung = toy_chest()
    back.detect(ct, lung)
    assert back.precision == "bf16" and seen and set(seen) == {torch.bfloat16}
    saved = json.loads((tmp_path / "detector.json").read_text())
    del saved["precision"]
    (tmp_path / "detector.json").write_text(json.dumps(saved))
    assert NoduleDetector.load(tmp_path).precision == "fp32"
