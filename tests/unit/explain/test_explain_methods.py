"""Every registered method on trained 2D/3D toy models; layer choice; clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medanomaly.errors import InputError
from medanomaly.explain.methods import attribute, default_layer, layer_names
from medanomaly.registry import EXPLAINERS

METHODS = ["gradcam", "gradcampp", "occlusion", "integrated_gradients", "guided_backprop"]


def test_all_methods_registered():
    assert set(METHODS) <= set(EXPLAINERS.names())


@pytest.mark.parametrize("method", METHODS)
def test_methods_point_at_the_blob_2d(toy2d, method):
    hits = 0
    for seed in range(3):
        img, mask = toy2d.sample(seed)
        amap = attribute(toy2d.model, torch.from_numpy(img)[None, None], method, target=1)
        assert amap.shape == img.shape and amap.dtype == np.float32 and np.isfinite(amap).all()
        hits += bool(mask[np.unravel_index(np.argmax(amap), amap.shape)])
    assert hits >= 2, f"{method}: peak inside the blob in only {hits}/3 images"


@pytest.mark.parametrize("method", METHODS)
def test_methods_run_in_3d(toy3d, method):
    img, mask = toy3d.sample(7)
    amap = attribute(toy3d.model, torch.from_numpy(img)[None, None], method, target=1)
    assert amap.shape == img.shape and np.isfinite(amap).all()
    assert amap.max() > amap.min()


def test_default_layer_is_last_conv_and_declared_layer_wins(toy2d):
    assert default_layer(toy2d.model) == "2"
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.AdaptiveMaxPool2d(1), nn.Flatten())
    net.explain_layer = "1"
    assert default_layer(net) == "1"


def test_layer_override_changes_the_map(toy2d):
    img, _ = toy2d.sample(1)
    x = torch.from_numpy(img)[None, None]
    first = attribute(toy2d.model, x, "gradcam", layer="0")
    last = attribute(toy2d.model, x, "gradcam")
    assert not np.allclose(first, last)


def test_unknown_layer_lists_valid_layers(toy2d):
    with pytest.raises(InputError, match="unknown layer 'layer9'.*valid layers: 0, 1, 2, 3"):
        attribute(toy2d.model, torch.zeros(1, 1, 24, 24), "gradcam", layer="layer9")
    assert layer_names(toy2d.model)[:2] == ["0", "1"]


def test_unknown_method_lists_valid_methods(toy2d):
    with pytest.raises(InputError, match="unknown explainer 'lime'.*gradcam.*occlusion"):
        attribute(toy2d.model, torch.zeros(1, 1, 24, 24), "lime")


def test_callable_model_without_gradients(toy2d):
    """An ONNX-like callable (numpy in, numpy out): gradient methods refuse, occlusion works."""

    def onnx_like(x):
        with torch.no_grad():
            return toy2d.model(torch.as_tensor(np.asarray(x))).numpy()

    img, mask = toy2d.sample(2)
    x = torch.from_numpy(img)[None, None]
    for method in ("gradcam", "integrated_gradients", "guided_backprop"):
        with pytest.raises(InputError, match="needs gradients.*not a PyTorch module.*occlusion"):
            attribute(onnx_like, x, method)
    amap = attribute(onnx_like, x, "occlusion", target=1)
    assert mask[np.unravel_index(np.argmax(amap), amap.shape)]


def test_detached_model_output_is_a_clear_error():
    class Detached(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)

        def forward(self, x):
            return self.conv(x).amax(dim=(2, 3)).detach()

    with pytest.raises(InputError, match="not differentiable"):
        attribute(Detached(), torch.rand(1, 1, 8, 8), "gradcam")


def test_frozen_model_still_explained(toy2d):
    """All parameters requires_grad=False: gradients w.r.t. the input still exist, so CAM works."""
    frozen = tiny_frozen = nn.Sequential(*[m for m in toy2d.model])  # shares weights
    states = [p.requires_grad for p in frozen.parameters()]
    for p in tiny_frozen.parameters():
        p.requires_grad_(False)
    try:
        img, mask = toy2d.sample(0)
        amap = attribute(frozen, torch.from_numpy(img)[None, None], "gradcam", target=1)
        assert mask[np.unravel_index(np.argmax(amap), amap.shape)]
    finally:
        for p, s in zip(frozen.parameters(), states):
            p.requires_grad_(s)


def test_hooks_are_removed_and_grads_cleared(toy2d):
    x = torch.from_numpy(toy2d.sample(3)[0])[None, None]
    for _ in range(3):
        attribute(toy2d.model, x, "gradcam")
        attribute(toy2d.model, x, "gradcampp")
    assert all(not m._forward_hooks and not m._backward_hooks for m in toy2d.model.modules())
    assert all(p.grad is None for p in toy2d.model.parameters())


def test_map_output_model_is_explained_through_its_max():
    """A segmenter-like model (B, 1, Y, X) output: the explanation follows its strongest response."""
    net = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        net.weight.fill_(1.0)
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 10, 4] = 5.0
    amap = attribute(net, x, "integrated_gradients")
    assert np.unravel_index(np.argmax(amap), amap.shape) == (10, 4)


def test_target_out_of_range(toy2d):
    with pytest.raises(InputError, match="target class 5 out of range"):
        attribute(toy2d.model, torch.zeros(1, 1, 24, 24), "gradcam", target=5)


def test_batch_input_rejected(toy2d):
    with pytest.raises(InputError, match="expected one input"):
        attribute(toy2d.model, torch.zeros(2, 1, 24, 24), "occlusion")


@pytest.mark.parametrize("method", METHODS)
def test_model_state_untouched(method):
    """A model in training mode keeps its mode and its batch-norm statistics."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(4, 2))  # fmt: skip
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    attribute(net, torch.rand(1, 1, 12, 12), method, mask_size=4) if method == "occlusion" else attribute(
        net, torch.rand(1, 1, 12, 12), method)
    assert net.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "occlusion", "integrated_gradients", "guided_backprop"])
def test_explaining_leaves_an_eval_model_in_eval_mode(method):
    """Regression: MONAI's CAM restored the (training-mode) wrapper's mode onto the model, so batch
    norm switched to batch statistics and every later prediction of a detector changed."""
    import torch
    from torch import nn

    from medanomaly.registry import EXPLAINERS

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    model.eval()
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        before = model(x)
    EXPLAINERS.get(method)(model, x)
    assert model.training is False
    with torch.no_grad():
        assert torch.equal(model(x), before)
