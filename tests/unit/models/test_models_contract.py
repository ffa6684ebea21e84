"""Registry contract: every registered classifier fits one step, predicts, saves to safetensors and
reloads to identical outputs, in 2D and 3D. A new classifier needs no new test code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medanomaly.models._classifier import classifier_names
from medanomaly.registry import MODELS
from medanomaly.train.checkpoint import load_weights, save_weights

CASES = [(name, dims) for name in classifier_names() for dims in (2, 3)]


def test_models_registry_lists_the_classifiers() -> None:
    assert {"compact_cnn", "compact_cnn_dw", "resnet", "densenet", "efficientnet"} <= set(classifier_names())
    # every name resolves to a factory that builds a tagged module (checked per model below)
    assert all(callable(MODELS.get(n)) for n in classifier_names())


@pytest.mark.parametrize(("name", "dims"), CASES, ids=[f"{n}-{d}d" for n, d in CASES])
def test_models_classifier_contract(name: str, dims: int, tmp_path: Path) -> None:
    factory = MODELS.get(name)
    torch.manual_seed(0)
    model = factory(in_channels=2, num_classes=3, spatial_dims=dims, **factory.example_params)
    assert model.task == "classification" and model.in_channels == 2 and model.num_classes == 3
    size = factory.example_size
    x = torch.rand(2, 2, *([size] * dims))
    y = torch.tensor([0, 2])

    # fit one step: parameters move and the output is finite
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))

    # predict
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 3) and torch.all(torch.isfinite(out))

    # save / load -> identical outputs
    path = save_weights(model, tmp_path / "w.safetensors")
    fresh = factory(in_channels=2, num_classes=3, spatial_dims=dims, **factory.example_params)
    load_weights(fresh, path).eval()
    with torch.no_grad():
        np.testing.assert_array_equal(fresh(x).numpy(), out.numpy())


def test_models_depthwise_variant_is_smaller() -> None:
    params = {"widths": (16, 32, 64), "hidden": 0}
    full = MODELS.create("compact_cnn", num_classes=2, **params)
    dw = MODELS.create("compact_cnn_dw", num_classes=2, **params)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(dw) < count(full) / 3


def test_models_reject_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="spatial_dims"):
        MODELS.create("compact_cnn", spatial_dims=4)
    net = MODELS.create("compact_cnn", num_classes=2, widths=(4, 8))
    other = MODELS.create("compact_cnn", num_classes=3, widths=(4, 8))
    from medanomaly.errors import InputError

    with pytest.raises(InputError, match="do not fit the model"):
        load_weights(other, save_weights(net, tmp_path / "a.safetensors"))
