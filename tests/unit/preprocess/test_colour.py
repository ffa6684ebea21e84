"""Colour images for grey models: only RGB(A) is colour; stacked modalities are never collapsed."""

from __future__ import annotations

import numpy as np

from medanomaly.preprocess.colour import grey_volume, luma
from medanomaly.types import Volume


def test_only_three_or_four_components_are_colour_and_equal_channels_are_grey() -> None:
    """A fusion model's T1 and PD stacked as two components were taken for grey + alpha and collapsed to the T1
    (explain's first version: "the fusion input needs 2 modalities, got 1"): two or five components stay as they are."""
    rng = np.random.default_rng(0)
    for comps in (2, 5):
        stacked = Volume(rng.random((1, 8, 8, comps)).astype(np.float32))
        assert grey_volume(stacked) == (stacked, False)
    rgba = rng.integers(0, 255, (1, 8, 8, 4)).astype(np.uint8)
    grey, coloured = grey_volume(Volume(rgba))
    assert coloured and grey.n_components == 1 and np.allclose(grey.array, luma(rgba[..., :3]))
    same = np.repeat(rgba[..., :1], 3, axis=-1)
    grey, coloured = grey_volume(Volume(same))
    assert not coloured and np.array_equal(grey.array, same[..., 0])
    plain = Volume(rgba[..., 0])
    assert grey_volume(plain) == (plain, False)
