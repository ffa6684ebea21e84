"""The registered voxel-wise atlas (``atlas`` method) on small synthetic heads: it must find an
inserted lesion in a test volume on another grid (shifted, rotated, thick slices), keep its state
through safetensors-style arrays, and flag a registration that fails the brain-mask check."""

from __future__ import annotations

import numpy as np
import pytest

from medanomaly.anomaly.atlas import AtlasMethod, atlas_brain, thick_slices
from medanomaly.anomaly.methods import METHODS, pixel_auroc
from medanomaly.anomaly.synthetic import make_synthetic_3d
from medanomaly.types import Volume


def _head(seed: int, shift_mm: float = 0.0, lesion: bool = False, spacing: tuple = (2.0, 2.0, 2.0)) -> tuple[Volume, np.ndarray]:
    """A skull-stripped 'brain' (ellipsoid 120 x 100 x 80 mm, textured, values 100..200) on a 2 mm grid,
    moved ``shift_mm`` along x and y; with ``lesion`` a bright 16 mm cube. Returns (volume, lesion mask)."""
    rng = np.random.default_rng(seed)
    shape = (int(100 / spacing[2]), int(140 / spacing[1]), int(140 / spacing[0]))
    zz, yy, xx = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing[::-1])), indexing="ij")
    cz, cy, cx = 50.0, 70.0 + shift_mm, 70.0 + shift_mm
    inside = ((zz - cz) / 40) ** 2 + ((yy - cy) / 60) ** 2 + ((xx - cx) / 50) ** 2 < 1
    texture = 150 + 30 * np.sin((xx - cx) / 6.0) * np.cos((yy - cy) / 9.0) + 15 * np.cos((zz - cz) / 7.0)
    arr = np.where(inside, texture + rng.normal(0, 2, shape), 0).astype(np.float32)
    mask = np.zeros(shape, bool)
    if lesion:
        mask = inside & (np.abs(zz - cz) < 8) & (np.abs(yy - cy - 15) < 8) & (np.abs(xx - cx + 12) < 8)
        arr[mask] = 260
    return Volume(arr, spacing=spacing, meta={"modality": "MR"}), mask


def _fitted() -> AtlasMethod:
    method = METHODS.get("atlas")(spacing_mm=2.0, fixed_mm=2.0, iterations=60, sampling=0.3)
    method.brains_ = [atlas_brain(_head(s)[0], 2.0) for s in (1, 2)]
    return method


def test_atlas_finds_an_inserted_lesion_on_another_grid():
    method = _fitted()
    test, lesion = _head(9, shift_mm=6.0, lesion=True)
    amap, score = method.predict_volume(test, 2.0)
    assert amap.same_grid(test) and np.isfinite(amap.array).all() and score > 0
    brain = test.array > 0
    assert min(method.last_log["mask_dice"]) > 0.95 and method.last_flags == ()
    assert pixel_auroc(np.asarray(amap.array), lesion, brain) > 0.95
    # the state round-trips (arrays only, as written to safetensors)
    method.kind, method.match = "z", "rank"
    restored = AtlasMethod()
    restored.load_state({k: np.asarray(v) for k, v in method.state().items()})
    assert (restored.kind, restored.match, len(restored.brains_)) == ("z", "rank", 2)
    for (a, ma), (b, mb) in zip(method.brains_, restored.brains_):
        assert a.same_grid(b) and np.array_equal(a.array, b.array) and np.array_equal(ma, mb)


def test_atlas_flags_a_failed_registration():
    method = _fitted()
    method.min_dice = 0.999  # no registration can pass: every one is flagged, the best is kept
    test, _ = _head(9, shift_mm=6.0)
    amap, _ = method.predict_volume(test, 0.0)
    assert set(method.last_flags) == {"atlas_registration_failed:0", "atlas_registration_failed:1"}
    assert len(method.last_log["kept"]) == 1 and np.asarray(amap.array).max() > 0


def test_thick_slices_and_synthetic_lesions_in_mm():
    head, _ = _head(3)
    thick = thick_slices(head, 2.0, 6.0)
    assert thick.spacing[2] == pytest.approx(6.0) and thick.shape[0] == pytest.approx(head.shape[0] / 3, abs=1)
    brain = np.asarray(thick.array) > 0
    arr, lesions = make_synthetic_3d(np.asarray(thick.array), brain, thick.spacing, seed=0, n_lesions=3)
    assert lesions.any() and not lesions[~brain].any()
    assert np.abs(arr - np.asarray(thick.array))[~brain].max() == 0  # nothing changes outside the brain


def test_register_refuses_an_unknown_start():
    from medanomaly.errors import InputError
    from medanomaly.preprocess.registration import register

    head, _ = _head(4)
    with pytest.raises(InputError, match="init must be 'geometry' or 'moments'"):
        register(head, head, init="centre")
