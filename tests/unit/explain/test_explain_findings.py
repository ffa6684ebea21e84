"""explain_findings (what reports call) and the run adapters' geometry."""

from __future__ import annotations

import numpy as np
import pytest

from medanomaly.errors import InputError
from medanomaly.explain.adapters import Explainable, as_explainable, centre_max, classification_preprocess
from medanomaly.explain.findings import explain_findings, explain_findings_detailed
from medanomaly.types import Finding, Volume


def _scene(toy3d):
    rng = np.random.default_rng(9)
    big = rng.normal(0, 0.3, (16, 48, 48)).astype(np.float32)
    img, mask = toy3d.sample(4)
    big[:, 24:40, 8:24] = img
    lesion = np.zeros(big.shape, np.uint8)
    lesion[:, 24:40, 8:24] = mask
    vol = Volume(big, spacing=(0.8, 0.8, 2.0), origin=(-20.0, 10.0, 5.0))
    centre = vol.index_to_physical(np.argwhere(lesion).mean(0)[::-1])
    finding = Finding(center_mm=tuple(centre), bbox_mm=(tuple(centre), tuple(centre)), score=0.9,
                      label="blob", mask=vol.with_array(lesion))  # fmt: skip
    return vol, finding


def test_explain_findings_patch_model(toy3d, tmp_path):
    vol, finding = _scene(toy3d)
    ex = Explainable(model=toy3d.model, patch_size=(16, 16, 16), target=1)
    far = Finding(center_mm=(1e4, 0.0, 0.0), bbox_mm=((0, 0, 0), (0, 0, 0)), score=0.1)
    pngs = explain_findings(ex, vol, [finding, far], tmp_path, method="gradcam", fov_mm=20)
    assert [p.name for p in pngs] == ["finding_1.png"]  # the finding outside the image is skipped
    (res,) = explain_findings_detailed(ex, vol, [finding], None, method="occlusion")
    assert res.peak_in_mask is True and res.png is None
    assert res.map.same_grid(res.view)


def test_explain_findings_whole_image_model(toy3d, tmp_path):
    img, mask = toy3d.sample(6)
    vol = Volume(img, spacing=(1.0, 1.0, 1.5))
    finding = Finding(center_mm=(0, 0, 0), bbox_mm=((0, 0, 0), (0, 0, 0)), score=1.0, mask=vol.with_array(mask))
    pngs = explain_findings(toy3d.model, vol, [finding], tmp_path, method="gradcam", target=1)
    assert [p.name for p in pngs] == ["finding_overview.png"]
    with pytest.raises(InputError, match="unknown explainer"):
        explain_findings(toy3d.model, vol, [], tmp_path, method="nope")


def test_classification_preprocess_keeps_physical_extent():
    vol = Volume(np.random.default_rng(0).random((1, 40, 60)).astype(np.float32), spacing=(0.5, 0.4, 1.0),
                 origin=(3.0, -7.0, 0.0))  # fmt: skip
    small = classification_preprocess((20, 30), channels=1)(vol)
    assert small.shape == (1, 20, 30)
    assert small.spacing[:2] == pytest.approx((1.0, 0.8))
    # first-voxel footprints start at the same physical corner
    np.testing.assert_allclose(small.index_to_physical((-0.5, -0.5, 0))[:2], vol.index_to_physical((-0.5, -0.5, 0))[:2])
    assert 0.0 <= small.array.min() and small.array.max() <= 1.0


def test_centre_max_and_as_explainable(toy3d):
    import torch

    out = torch.zeros(1, 1, 8, 8, 8)
    out[0, 0, 0, 0, 0] = 5.0  # edge: ignored
    out[0, 0, 4, 4, 4] = 2.0
    assert float(centre_max(0.5)(out)) == 2.0
    assert as_explainable(toy3d.model).kind == "model"
    with pytest.raises(InputError, match="load_model"):
        as_explainable("/nonexistent/run")
