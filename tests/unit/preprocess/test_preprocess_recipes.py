"""Recorded model-input recipes: saved as JSON, replayed with ``Pipeline.from_config``, they give
exactly the array each task feeds its network (``np.array_equal``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medanomaly.errors import InputError
from medanomaly.preprocess.pipeline import Pipeline
from medanomaly.preprocess.recipes import classification_steps, detection_steps, fusion_steps
from medanomaly.preprocess.resize import channels_first
from medanomaly.types import Volume


def _replay(steps: list[dict], volume: Volume) -> Volume:
    """Save the steps as model.json would (JSON text), load them back and run them."""
    return Pipeline.from_config(json.loads(json.dumps({"steps": steps})))(volume).volume


@pytest.mark.parametrize(
    ("shape", "size", "channels", "intensity"),
    [
        ((1, 50, 70), (32, 32), 1, "percentile"),  # 2D grey, per-image percentiles
        ((1, 50, 70, 3), (24, 40), 3, "percentile"),  # RGB: percentiles per channel
        ((1, 30, 30, 4), (16, 16), 3, "percentile"),  # RGBA -> RGB
        ((12, 40, 36), (8, 16, 16), 1, "ct_lung"),  # 3D CT window (lung_input numbers)
        ((1, 40, 36), (20, 20), 1, "ct_soft"),
        ((6, 20, 20), (6, 20, 20), 1, "ct_lung"),  # already the model size: no resize
    ],
)
def test_classification_recipe_replays_to_model_array(shape, size, channels, intensity):
    from medanomaly.data.arrays import to_model_array

    rng = np.random.default_rng(0)
    vol = Volume(rng.normal(-300, 400, shape).astype(np.int16), spacing=(0.5, 0.8, 2.0), origin=(4.0, -7.0, 1.0))
    out = _replay(classification_steps(size, channels, intensity), vol)
    want = to_model_array(vol.array, size, channels, intensity)
    got = channels_first(out, len(size))
    assert got.dtype == want.dtype == np.float32 and np.array_equal(got, want)
    zyx = (1, *size) if len(size) == 2 else size
    # the model array keeps the scan's physical box (align_corners=False geometry)
    np.testing.assert_allclose(np.asarray(out.spacing) * zyx[::-1], np.asarray(vol.spacing) * vol.shape[::-1])


def test_classification_recipe_refuses_what_to_model_array_refuses():
    rgb = Volume(np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(InputError, match=r"image has 3 channel\(s\), the config expects 1"):
        _replay(classification_steps((4, 4), 1, "percentile"), rgb)
    with pytest.raises(InputError, match="cannot feed a 2D model"):
        _replay(classification_steps((4, 4), 1, "percentile"), Volume(np.zeros((3, 8, 8), np.float32)))
    with pytest.raises(InputError, match="unknown intensity mode 'ct_bone'"):
        classification_steps((4, 4), 1, "ct_bone")


def test_detection_recipe_replays_the_detector_grid_and_window(lung1_ct):
    from medanomaly.detect.grid import to_grid, window

    ct = lung1_ct
    spacing, hu_window = (1.25, 1.25, 5.0), (-1000.0, 400.0)
    out = _replay(detection_steps(spacing, hu_window), ct)
    grid = to_grid(ct, spacing)
    assert out.same_grid(grid, tol=1e-9)
    assert np.array_equal(out.array, window(grid.array, *hu_window))


@pytest.mark.parametrize("size", [(32, 32), (6, 24, 24)])
def test_fusion_recipe_replays_sample_to_array(size):
    from medanomaly.fusion.data import PairedSample, sample_to_array

    rng = np.random.default_rng(2)
    ct = rng.normal(0, 300, (10, 40, 44)).astype(np.int16)
    mr = rng.gamma(2.0, 80.0, (10, 40, 44)).astype(np.float32)
    geometry = dict(spacing=(0.9, 0.9, 3.0), origin=(1.0, 2.0, 3.0))
    sample = PairedSample("p", {"CT": Volume(ct, meta={"modality": "CT"}, **geometry),
                                "MR": Volume(mr, meta={"modality": "MR"}, **geometry)}, 1)  # fmt: skip
    want, present = sample_to_array(sample, ("CT", "MR"), size, {})
    both = Volume(np.stack([ct.astype(np.float32), mr], axis=-1), **geometry)
    out = _replay(fusion_steps(("CT", "MR"), size), both)
    assert present.all() and np.array_equal(channels_first(out, len(size)), want)
    windows = {"CT": (-1000.0, 400.0), "MR": (0.0, 500.0)}  # configured windows win over the defaults
    want, _ = sample_to_array(sample, ("CT", "MR"), size, windows)
    out = _replay(fusion_steps(("CT", "MR"), size, windows), both)
    assert np.array_equal(channels_first(out, len(size)), want)


def test_fusion_recipe_records_numbers_not_names():
    steps = fusion_steps(("CT", "T1"), (64, 64))
    assert steps[0] == {"name": "modality_intensity", "modalities": ["CT", "T1"],
                        "windows": {"CT": [-200.0, 600.0], "T1": None}}  # fmt: skip
    assert [s["name"] for s in steps] == ["modality_intensity", "middle_slice", "resize"]
    with pytest.raises(InputError, match="needs 2 modalities"):
        _replay(steps, Volume(np.zeros((4, 8, 8), np.float32)))
