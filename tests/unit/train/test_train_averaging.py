"""The moving average of the weights (``LoopOptions.ema_decay``): it follows the warmed-up formula step by step,
validation and the result see it, the live training is not changed by it, and a resumed run continues it exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medanomaly.train.averaging import WeightAverage, warmed_decay
from medanomaly.train.batches import SampledBatches
from medanomaly.train.engine import Hooks, LoopOptions, train


def _sample(rng, n):
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


def _run(ema: float, run_dir=None, resume=False, stop_after=None, validate=None, monitor=None):
    """A 12-step run of a linear net; returns the net, the result and the live weights after every step."""
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    after_steps: list[torch.Tensor] = []

    def optimizer(model, spe, total):
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        opt.register_step_post_hook(lambda *_: after_steps.append(net.weight.detach().cpu().clone()))
        return opt, None

    def stop(epoch, record):
        if epoch == stop_after:
            raise KeyboardInterrupt

    hooks = Hooks(loss=lambda x, y, model, extras: torch.nn.functional.cross_entropy(model(x), y),
                  optimizer=optimizer, validate=validate, on_epoch=stop if stop_after is not None else None)
    opts = LoopOptions(epochs=4, progress=False, record_steps=True, ema_decay=ema, monitor=monitor)
    result = train(net, lambda ctx: SampledBatches(_sample, 4, 3, seed=2, ctx=ctx), hooks, opts,
                   run_dir=run_dir, resume=resume)
    return net, result, after_steps


def _moving_average(weights: list[torch.Tensor], decay: float) -> torch.Tensor:
    average = weights[0].clone()
    for n, w in enumerate(weights[1:], start=1):
        average = warmed_decay(decay, n) * average + (1 - warmed_decay(decay, n)) * w
    return average


def test_averaging_result_is_the_warmed_moving_average_and_training_is_unchanged() -> None:
    plain_net, plain, plain_steps = _run(0.0)
    net, averaged, steps = _run(0.8)
    assert averaged.step_losses == pytest.approx(plain.step_losses)  # the average never feeds back into training
    torch.testing.assert_close(steps[-1], plain_net.weight)
    assert len(steps) == 12
    torch.testing.assert_close(net.weight.detach(), _moving_average(steps, 0.8))
    assert not torch.allclose(net.weight, plain_net.weight)


def test_averaging_validation_sees_the_average_and_the_best_average_is_kept() -> None:
    seen: list[torch.Tensor] = []
    holder: dict[str, torch.nn.Module] = {}

    def validate(model):
        holder["net"] = model
        seen.append(model.weight.detach().cpu().clone())  # on a GPU when present; the result is back on the CPU
        return {"score": -len(seen) if len(seen) != 2 else 0.0}  # epoch 2 (after step 6) is the best

    net, result, steps = _run(0.8, validate=validate, monitor="val_score")
    assert len(seen) == 4 and result.best_epoch == 1
    for epoch, weights in enumerate(seen):
        torch.testing.assert_close(weights, _moving_average(steps[: 3 * (epoch + 1)], 0.8))
    torch.testing.assert_close(net.weight.detach(), seen[1])


def test_averaging_resumed_run_continues_the_average_exactly(tmp_path: Path) -> None:
    full_net, full, _ = _run(0.8)
    with pytest.raises(KeyboardInterrupt):
        _run(0.8, run_dir=tmp_path, stop_after=1)
    net, resumed, _ = _run(0.8, run_dir=tmp_path, resume=True)
    assert resumed.step_losses == pytest.approx(full.step_losses)
    torch.testing.assert_close(net.weight, full_net.weight)


def test_averaging_refuses_a_decay_outside_zero_one() -> None:
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(torch.nn.Linear(2, 1), 1.0)


def test_averaging_reaches_classification_through_its_train_section() -> None:
    from medanomaly.data.arrays import LabelledImages
    from medanomaly.registry import MODELS
    from medanomaly.train.loop import TrainSettings, fit

    rng = np.random.default_rng(0)
    data = LabelledImages(rng.random((16, 1, 16, 16)), np.arange(16) % 2, np.arange(16), ("a", "b"))
    nets, results = [], []
    for ema in (0.0, 0.9):
        torch.manual_seed(0)
        net = MODELS.create("compact_cnn", num_classes=2, widths=(4, 8), hidden=0)
        settings = TrainSettings(epochs=3, batch_size=4, progress=False, ema_decay=ema, early_stopping_metric="loss")
        results.append(fit(net, data, data, settings))
        nets.append(net)
    assert [r["train_loss"] for r in results[0].history] == pytest.approx([r["train_loss"] for r in results[1].history])
    assert any(not torch.equal(a, b) for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()))


@pytest.mark.parametrize("damage", ["average_shape", "truncated", "missing_rng", "no_epoch", "no_sources"])
def test_averaging_a_damaged_checkpoint_is_one_line_naming_it(tmp_path: Path, damage: str) -> None:
    from safetensors.torch import load_file, save_file

    from medanomaly.errors import InputError

    with pytest.raises(KeyboardInterrupt):
        _run(0.8, run_dir=tmp_path, stop_after=1)
    state = tmp_path / "checkpoint" / "state.safetensors"
    tensors = load_file(str(state))
    if damage == "truncated":
        state.write_bytes(state.read_bytes()[:100])
    elif damage in ("no_epoch", "no_sources"):  # the loop's own record in state.json
        record = tmp_path / "checkpoint" / "state.json"
        payload = json.loads(record.read_text())
        if damage == "no_epoch":
            del payload["info"]["epoch"]
        else:
            payload["info"]["sources"] = []
        record.write_text(json.dumps(payload))
    else:
        if damage == "average_shape":
            tensors["average.module.weight"] = torch.zeros(5, 5)
        else:
            del tensors["rng.torch"]
        save_file(tensors, str(state))
    with pytest.raises(InputError, match="checkpoint") as info:
        _run(0.8, run_dir=tmp_path, resume=True)
    assert "\n" not in str(info.value)
    assert ("not a readable checkpoint" if damage == "truncated" else "checkpoint values do not fit") in str(info.value)
