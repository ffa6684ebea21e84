"""bfloat16 autocast (``train.precision``): the forward pass runs in bfloat16, outputs and weights stay float32,
``auto`` takes bfloat16 only where the device has it, and the lung detector trains, saves and detects with it."""

from __future__ import annotations

import pytest
import torch

from medanomaly.train import precision as prec
from medanomaly.train.precision import in_precision, resolve_precision


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 1, 1))


def _dtypes_inside(net: torch.nn.Module) -> list[torch.dtype]:
    seen: list[torch.dtype] = []
    net[0].register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    return seen


def test_auto_takes_bfloat16_only_where_the_device_has_it(monkeypatch) -> None:
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    monkeypatch.setattr(prec, "native_bf16", lambda device_type: True)
    assert resolve_precision("auto", "cpu") == "bf16" and resolve_precision("auto", "cuda:0") == "bf16"
    monkeypatch.setattr(prec, "native_bf16", lambda device_type: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    seen: list[str] = []
    monkeypatch.setattr(prec, "native_bf16", lambda device_type: seen.append(device_type) or False)
    resolve_precision("auto", "cuda:1")
    resolve_precision("auto", "cpu")
    assert seen == ["cuda", "cpu"]
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, auto, got 'fp16'"):
        resolve_precision("fp16", "cpu")


def test_bf16_runs_the_network_in_bfloat16_and_hands_float32_on() -> None:
    net = _net()
    seen = _dtypes_inside(net)
    x = torch.randn(2, 1, 4, 16, 16)
    with torch.no_grad():
        plain, mixed = net(x), in_precision(net, "bf16")(x)
    assert seen == [torch.float32, torch.bfloat16]
    assert mixed.dtype == torch.float32 and torch.allclose(plain, mixed, atol=0.05)
    assert in_precision(net, "fp32") is net and all(p.dtype == torch.float32 for p in net.parameters())
    wrapped = in_precision(net, "bf16")
    wrapped.eval()
    assert not net.training  # train() / eval() reach the network


def test_the_training_loop_runs_the_forward_pass_in_bfloat16_and_keeps_float32_weights() -> None:
    from medanomaly.train.batches import ArrayBatches
    from medanomaly.train.engine import Hooks, LoopOptions, train

    net = _net()
    seen = _dtypes_inside(net)
    x, y = torch.randn(8, 1, 4, 8, 8), torch.rand(8, 1, 4, 8, 8)
    losses_saw: list[torch.dtype] = []

    def loss(xb, yb, model, extras):
        out = model(xb)
        losses_saw.append(out.dtype)
        return torch.nn.functional.mse_loss(out, yb)

    hooks = Hooks(loss=loss, optimizer=lambda model, spe, total: (torch.optim.SGD(model.parameters(), lr=0.1), None))
    result = train(net, lambda ctx: ArrayBatches(x, y, 4, ctx=ctx), hooks,
                   LoopOptions(epochs=1, progress=False, precision="bf16", device="cpu"))  # fmt: skip
    assert result.steps_run == 2 and set(seen) == {torch.bfloat16} and set(losses_saw) == {torch.float32}
    assert all(p.dtype == torch.float32 for p in net.parameters())


def test_a_classifier_trains_in_bfloat16_where_its_config_asks_and_its_record_says_so(toy) -> None:
    """``train.precision`` is a setting of every task's loop (classification and fusion through ``LoopControl``):
    ``bf16`` trains the classifier's forward pass in bfloat16, its record says which precision ran."""
    from medanomaly.registry import MODELS
    from medanomaly.train.loop import fit
    from medanomaly.train.settings import TrainSettings

    train_set, val = toy
    torch.manual_seed(0)
    net = MODELS.create("compact_cnn", num_classes=2, widths=(4,), hidden=0)
    seen: list[torch.dtype] = []
    first = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    first.register_forward_hook(lambda module, args, out: seen.append(out.dtype) if module.training else None)
    result = fit(net, train_set, val, TrainSettings(epochs=2, batch_size=16, lr=0.01, progress=False, precision="bf16"))
    assert set(seen) == {torch.bfloat16} and result.to_json()["precision"] == "bf16"
    assert result.best_score > 0.55  # it learned
    assert fit(MODELS.create("compact_cnn", num_classes=2, widths=(4,), hidden=0), train_set, val,
               TrainSettings(epochs=1, batch_size=16, progress=False)).precision == "fp32"  # fmt: skip


def test_a_bfloat16_step_with_non_finite_gradients_is_skipped_and_too_many_stop_the_run() -> None:
    """oneDNN's bfloat16 3D-convolution weight gradient came out NaN now and then on 2 threads (finite inputs); one
    NaN update spoils every weight after it. Such a step is skipped and counted; past 5 % of the steps (and 10) the
    run stops with one line that names the way out."""
    from medanomaly.errors import InputError
    from medanomaly.train.batches import ArrayBatches
    from medanomaly.train.engine import Hooks, LoopOptions, train

    x, y = torch.randn(48, 1, 4, 8, 8), torch.rand(48, 1, 4, 8, 8)
    calls = {"n": 0}

    def loss_nan_on(steps):
        def loss(xb, yb, model, extras):
            calls["n"] += 1
            out = torch.nn.functional.mse_loss(model(xb), yb)
            return out * float("nan") if calls["n"] in steps else out
        return loss

    def run(steps, precision="bf16"):
        calls["n"] = 0
        net = _net()
        hooks = Hooks(loss=loss_nan_on(steps),
                      optimizer=lambda model, spe, total: (torch.optim.SGD(model.parameters(), lr=0.1), None))
        result = train(net, lambda ctx: ArrayBatches(x, y, 4, ctx=ctx), hooks,
                       LoopOptions(epochs=1, progress=False, precision=precision, device="cpu"))  # fmt: skip
        return net, result

    net, result = run({2})
    assert result.skipped_steps == 1 and result.steps_run == 11
    assert all(torch.isfinite(p).all() for p in net.parameters())
    with pytest.raises(InputError, match="non-finite gradients in 11 of 11 steps; set train.precision: fp32"):
        run(set(range(1, 13)))
    with pytest.raises(InputError, match="training diverged"):  # float32 is not guarded: NaN there is divergence
        run({2}, precision="fp32")
