"""The anomaly int8 guard's metrics on hand-made maps: pixel AUROC always, image AUROC only where an
image is one validation slice (2D ``folder2d``), and the complaint naming which AUROC dropped."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from medanomaly.deploy.anomaly_guard import GuardSet, auroc_problem, map_metrics


class _Lesions:
    """A method whose map is twice the lesion mask plus a per-slice ``offset`` (moves the image scores)."""

    def __init__(self, lesions: np.ndarray, offset: np.ndarray) -> None:
        self.lesions, self.offset = lesions, offset

    def score(self, images: np.ndarray, masks: np.ndarray, rel_z: np.ndarray) -> np.ndarray:
        return (self.lesions * 2.0 + self.offset[:, None, None]) * masks


def _guard_set(domain: str) -> GuardSet:
    lesions = np.zeros((6, 8, 8), bool)
    lesions[:3, 2:4, 2:4] = True  # slices 0-2 carry a SYNTHETIC lesion
    val = {"images": np.zeros((6, 8, 8), np.float32), "masks": np.ones((6, 8, 8), bool), "rel_z": np.zeros(6)}
    config = SimpleNamespace(data=SimpleNamespace(domain=domain))
    return GuardSet(config, val, val["images"], lesions)


def test_image_auroc_is_computed_in_2d_only() -> None:
    gs2, gs3 = _guard_set("folder2d"), _guard_set("brain_mr")
    good = _Lesions(gs2.lesions, np.zeros(6))
    assert map_metrics(good, gs2, 0.0) == {"pixel_auroc": 1.0, "image_auroc": 1.0}
    assert map_metrics(good, gs3, 0.0) == {"pixel_auroc": 1.0, "image_auroc": None}
    # lesion-free slices with a high baseline: pixels still rank within each slice pool, images invert
    bad = _Lesions(gs2.lesions, np.array([0, 0, 0, 5, 5, 5], float))
    got = map_metrics(bad, gs2, 0.0)
    assert got["image_auroc"] == 0.0 and got["pixel_auroc"] < 1.0
    problem = auroc_problem({"pixel_auroc": 1.0, "image_auroc": 1.0}, got, 0.005)
    assert problem is not None and "image AUROC drops by 1.0000 (1.0000 -> 0.0000, limit 0.005)" in problem


def test_small_drops_and_undefined_aurocs_pass() -> None:
    ref = {"pixel_auroc": 0.80, "image_auroc": None}
    assert auroc_problem(ref, {"pixel_auroc": 0.796, "image_auroc": None}, 0.005) is None
    assert auroc_problem({"pixel_auroc": float("nan"), "image_auroc": None}, ref, 0.005) is None
    assert "pixel AUROC drops by 0.0060" in str(auroc_problem(ref, {"pixel_auroc": 0.794, "image_auroc": None}, 0.005))
