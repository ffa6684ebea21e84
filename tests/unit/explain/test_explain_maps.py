"""Maps in patient space: tensors, resampling, patches, chunked attribution, explain()."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from medanomaly.errors import InputError
from medanomaly.explain.maps import (
    chunked_attribute,
    crop_patch,
    explain,
    peak_mm,
    resample_to,
    volume_to_tensor,
)
from medanomaly.types import Volume


def test_volume_to_tensor_shapes():
    v3 = Volume(np.zeros((4, 5, 6), np.float32))
    assert tuple(volume_to_tensor(v3, 3).shape) == (1, 1, 4, 5, 6)
    v2 = Volume(np.zeros((5, 6), np.float32))
    assert tuple(volume_to_tensor(v2, 2).shape) == (1, 1, 5, 6)
    rgb = Volume(np.zeros((1, 5, 6, 3), np.uint8))
    assert tuple(volume_to_tensor(rgb, 2).shape) == (1, 3, 5, 6)
    with pytest.raises(InputError, match="one-slice"):
        volume_to_tensor(v3, 2)


@settings(max_examples=15, deadline=None)
@given(
    spacing=st.tuples(*[st.floats(0.5, 3.0)] * 3),
    origin=st.tuples(*[st.floats(-50, 50)] * 3),
    flip=st.booleans(),
)
def test_resampled_map_keeps_its_peak_in_patient_space(spacing, origin, flip):
    """A map on a coarse grid lands at the same LPS position on a finer, shifted, flipped grid."""
    direction = np.diag([-1.0, 1.0, 1.0]) if flip else np.eye(3)
    coarse = Volume(np.zeros((10, 12, 14), np.float32), spacing=spacing, origin=origin, direction=direction)
    zz, yy, xx = np.indices(coarse.shape)
    coarse = coarse.with_array(np.exp(-((zz - 5) ** 2 + (yy - 6) ** 2 + (xx - 7) ** 2) / 4.0).astype(np.float32))
    fine_spacing = tuple(s / 2 for s in spacing)
    fine_origin = tuple(np.asarray(coarse.index_to_physical((-0.25, -0.25, -0.25))))
    fine = Volume(np.zeros((20, 24, 28), np.float32), spacing=fine_spacing, origin=fine_origin, direction=direction)
    out = resample_to(coarse, fine)
    assert out.same_grid(fine)
    err = np.linalg.norm(np.subtract(peak_mm(out), peak_mm(coarse)))
    assert err <= np.linalg.norm(fine_spacing) + 1e-6


def test_crop_patch_keeps_geometry_and_pads():
    vol = Volume(np.arange(6 * 8 * 10, dtype=np.float32).reshape(6, 8, 10), spacing=(0.7, 0.8, 2.5),
                 origin=(-10, 5, 100))  # fmt: skip
    centre = vol.index_to_physical((1, 2, 3))  # x=1, y=2, z=3: near the x edge
    patch = crop_patch(vol, centre, (4, 4, 4))
    assert patch.shape == (4, 4, 4)
    np.testing.assert_allclose(patch.index_to_physical((2, 2, 2)), centre)
    assert patch.array[2, 2, 2] == vol.array[3, 2, 1]
    assert patch.array[0, 0, 0] == vol.array.min()  # padded with the minimum
    with pytest.raises(InputError, match="outside the image"):
        crop_patch(vol, (1e4, 0, 0), (4, 4, 4))


def test_explain_returns_map_on_the_input_grid(toy3d):
    """Model runs on a downsampled grid (preprocess); the map comes back on the original one."""
    img, mask = toy3d.sample(11)
    fine = np.kron(img, np.ones((1, 2, 2), np.float32))  # 16x32x32 at half the spacing in y, x
    image = Volume(fine, spacing=(0.5, 0.5, 1.0), origin=(3.0, -2.0, 7.0))
    lesion = image.with_array(np.kron(mask, np.ones((1, 2, 2), np.uint8)))

    def downsample(v: Volume) -> Volume:
        return Volume(v.array[:, ::2, ::2], spacing=(1.0, 1.0, 1.0),
                      origin=v.index_to_physical((0.5, 0.5, 0)), direction=v.direction)  # fmt: skip

    heat = explain(toy3d.model, image, "gradcam", target=1, preprocess=downsample)
    assert heat.same_grid(image)
    assert lesion.array[np.unravel_index(np.argmax(heat.array), heat.shape)]
    assert "gradcam" in heat.meta["description"]


def test_chunked_attribution_finds_the_blob_in_a_large_volume(toy3d):
    """The fully convolutional toy model explained window by window on a 16x40x40 volume."""
    rng = np.random.default_rng(5)
    big = rng.normal(0, 0.3, (16, 40, 40)).astype(np.float32)
    img, mask = toy3d.sample(3)
    big[:, 20:36, 4:20] = img
    lesion = np.zeros(big.shape, np.uint8)
    lesion[:, 20:36, 4:20] = mask
    x = torch.from_numpy(big)[None, None]
    for method in ("gradcam", "occlusion"):
        amap = chunked_attribute(toy3d.model, x, method, chunk=16, overlap=0.25, target=1)
        assert amap.shape == big.shape
        assert lesion[np.unravel_index(np.argmax(amap), amap.shape)], method
    with pytest.raises(InputError, match="chunk"):
        chunked_attribute(toy3d.model, x, "gradcam", chunk=(16, 16))


def test_explain_with_chunks_uses_windows(toy3d):
    calls = []

    class Counting(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            calls.append(tuple(x.shape[2:]))
            return self.net(x)

    vol = Volume(np.random.default_rng(0).normal(0, 0.3, (16, 24, 24)).astype(np.float32))
    heat = explain(Counting(toy3d.model), vol, "gradcam", chunk=16)
    assert heat.shape == vol.shape
    assert max(calls) == (16, 16, 16)


def test_peak_index_takes_the_middle_of_a_plateau():
    from medanomaly.explain.maps import peak_index

    arr = np.zeros((5, 9, 9), np.float32)
    arr[1:4, 2:7, 3:8] = 1.0  # flat top, as occlusion gives with an occluder larger than the lesion
    assert peak_index(arr) == (2, 4, 5)
    arr[0, 0, 0] = 2.0
    assert peak_index(arr) == (0, 0, 0)
