"""Faithfulness: Grad-CAM beats random maps on deletion/insertion; pointing game; energy; datasets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medanomaly.errors import InputError
from medanomaly.explain.faithfulness import (
    energy_inside,
    evaluate_dataset,
    perturbation_curve,
    pointing_game,
    random_baseline_auc,
)
from medanomaly.explain.methods import attribute
from medanomaly.types import Volume


def test_gradcam_deletion_auc_beats_random_maps(toy2d):
    """On the trained toy model, deleting Grad-CAM's top voxels kills the score faster than random."""
    cam_aucs, rand_aucs, ins_aucs, rand_ins = [], [], [], []
    for seed in range(4):
        img, _ = toy2d.sample(100 + seed)
        x = torch.from_numpy(img)[None, None]
        amap = attribute(toy2d.model, x, "gradcam", target=1)
        deletion = perturbation_curve(toy2d.model, x, amap, "deletion", target=1)
        assert deletion.scores[0] > 0.9 and len(deletion.fractions) == 17
        cam_aucs.append(deletion.auc)
        rand_aucs.append(random_baseline_auc(toy2d.model, x, "deletion", target=1, n_maps=3, seed=seed))
        ins_aucs.append(perturbation_curve(toy2d.model, x, amap, "insertion", target=1).auc)
        rand_ins.append(random_baseline_auc(toy2d.model, x, "insertion", target=1, n_maps=3, seed=seed))
    assert np.mean(cam_aucs) < np.mean(rand_aucs) - 0.1, (cam_aucs, rand_aucs)
    assert np.mean(ins_aucs) > np.mean(rand_ins) + 0.1, (ins_aucs, rand_ins)


def test_perturbation_curve_input_checks(toy2d):
    x = torch.zeros(1, 1, 24, 24)
    with pytest.raises(InputError, match="does not match"):
        perturbation_curve(toy2d.model, x, np.zeros((5, 5)))
    with pytest.raises(InputError, match="unknown curve"):
        perturbation_curve(toy2d.model, x, np.zeros((24, 24)), "sideways")
    with pytest.raises(InputError, match="unknown baseline"):
        perturbation_curve(toy2d.model, x, np.zeros((24, 24)), baseline="zero-ish")


def test_pointing_game_and_energy_on_known_maps():
    grid = Volume(np.zeros((4, 10, 10), np.float32), spacing=(1.0, 1.0, 2.0))
    lesion = grid.with_array(np.zeros((4, 10, 10), np.uint8))
    lesion.array[2, 4:6, 4:6] = 1
    heat = grid.with_array(np.zeros((4, 10, 10), np.float32))
    heat.array[2, 5, 5] = 3.0
    heat.array[0, 0, 0] = 1.0
    assert pointing_game(heat, lesion) is True
    assert energy_inside(heat, lesion) == pytest.approx(0.75)
    off = heat.with_array(np.zeros((4, 10, 10), np.float32))
    off.array[2, 5, 8] = 1.0  # 3 mm from the lesion edge (x spacing 1 mm)
    assert pointing_game(off, lesion) is False
    assert pointing_game(off, lesion, tolerance_mm=3.0) is True
    with pytest.raises(InputError, match="empty"):
        pointing_game(heat, lesion.with_array(np.zeros((4, 10, 10), np.uint8)))


def test_mask_on_another_grid_is_resampled():
    fine = Volume(np.zeros((4, 20, 20), np.float32), spacing=(0.5, 0.5, 2.0))
    coarse_mask = Volume(np.zeros((4, 10, 10), np.uint8), spacing=(1.0, 1.0, 2.0), origin=(0.25, 0.25, 0))
    coarse_mask.array[1, 2, 7] = 1
    heat = fine.with_array(np.zeros((4, 20, 20), np.float32))
    heat.array[1, 4, 14] = 1.0
    assert pointing_game(heat, coarse_mask)


def test_evaluate_dataset_reports_bad_items(toy2d):
    items = []
    for seed in range(3):
        img, mask = toy2d.sample(200 + seed)
        items.append((f"case{seed}", Volume(img), Volume(mask)))
    items.append(("empty-mask", Volume(toy2d.sample(300)[0]), Volume(np.zeros((24, 24), np.uint8))))
    result = evaluate_dataset(toy2d.model, items, "gradcam", target=1, n_steps=8, n_random=2)
    s = result.summary
    assert s["n_images"] == 3 and s["pointing_count"] == 3
    assert s["pointing_hits"] >= 2
    assert [n for n, _ in result.skipped] == ["empty-mask"]
    assert s["mean_deletion_auc"] < s["mean_random_deletion_auc"]
    assert result.to_json()["items"][0]["name"] == "case0"
    with pytest.raises(InputError, match="unknown explainer"):
        evaluate_dataset(toy2d.model, items, "nonsense")
