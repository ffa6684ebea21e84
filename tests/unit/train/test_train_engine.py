"""The one training loop: hooks, sharded batch sources, budgets, chance level, resume of a sampler
run; config values that cannot be trained are refused at load; the patch sampler gives up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medanomaly.config import parse_config
from medanomaly.errors import ConfigError, InputError
from medanomaly.train.batches import ArrayBatches, SampledBatches
from medanomaly.train.distributed import DistContext
from medanomaly.train.engine import Hooks, LoopOptions, train
from medanomaly.train.loop import TrainSettings, fit


def _linear_hooks(lr: float = 0.1) -> Hooks:
    def loss(x, y, model, extras):
        return torch.nn.functional.cross_entropy(model(x), y)

    return Hooks(loss=loss, optimizer=lambda model, spe, total: (torch.optim.SGD(model.parameters(), lr=lr), None))


def test_train_array_batches_shard_one_global_batch_between_ranks() -> None:
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    one = [b.x[:, 0].tolist() for b in ArrayBatches(x, y, 4, seed=3).epoch()]
    ranks = [[b.x[:, 0].tolist() for b in ArrayBatches(x, y, 4, seed=3, ctx=DistContext(r, 2)).epoch()]
             for r in (0, 1)]
    assert [a + b for a, b in zip(*ranks, strict=True)] == one  # the shares make up the global batch
    assert len(ArrayBatches(x, y, 4, ctx=DistContext(0, 2), min_per_rank=2)) == 2  # a last batch of 2 is dropped
    with pytest.raises(InputError, match="too small for 4 process"):
        ArrayBatches(x, y, 2, ctx=DistContext(0, 4))


def test_train_sampled_batches_split_the_global_batch() -> None:
    def sample(rng, n):
        return rng.random((n, 3)).astype(np.float32), np.zeros(n, np.int64)

    shares = [SampledBatches(sample, 5, 2, ctx=DistContext(r, 2)).share for r in (0, 1)]
    assert shares == [3, 2]
    a, b = (next(SampledBatches(sample, 4, 1, seed=1, ctx=DistContext(r, 2)).epoch()).x for r in (0, 1))
    assert not torch.equal(a, b)  # each rank draws from its own stream


def test_train_loop_step_and_time_budget() -> None:
    x, y = torch.randn(32, 3), torch.arange(32) % 2
    net = torch.nn.Linear(3, 2)
    result = train(net, lambda ctx: ArrayBatches(x, y, 8, ctx=ctx), _linear_hooks(), LoopOptions(epochs=2, progress=False))
    assert result.steps_run == 8 and result.stop_reason == "epochs" and result.epochs_run == 2
    result = train(net, lambda ctx: ArrayBatches(x, y, 8, ctx=ctx), _linear_hooks(),
                   LoopOptions(epochs=10, max_steps=6, progress=False))
    assert result.steps_run == 6 and result.stop_reason == "budget" and result.epochs_run == 2
    result = train(net, lambda ctx: ArrayBatches(x, y, 8, ctx=ctx), _linear_hooks(),
                   LoopOptions(epochs=1000, max_minutes=1e-9, progress=False))
    assert result.stop_reason == "budget" and result.steps_run < 1000 * 4
    assert all(np.isfinite(r["train_loss"]) and r["train_loss"] > 0 for r in result.history)  # no empty epoch


@pytest.fixture()
def fake_clock_run(monkeypatch):
    """``run(minutes, on_epoch=None, run_dir=None, resume=False)`` trains on a fake clock: 1 s a step, 20 s a
    validation, 30 steps between validations; the clock is ``run.clock["t"]``."""
    import medanomaly.train.engine as engine

    clock = {"t": 0.0}
    monkeypatch.setattr(engine.time, "perf_counter", lambda: clock["t"])
    x, y = torch.randn(8, 3), torch.arange(8) % 2

    def loss(xb, yb, model, extras):
        clock["t"] += 1.0
        return torch.nn.functional.cross_entropy(model(xb), yb)

    def validate(model):
        clock["t"] += 20.0
        return {"auc": 0.5}

    def run(minutes, on_epoch=None, run_dir=None, resume=False):
        hooks = Hooks(loss=loss, optimizer=lambda m, spe, total: (torch.optim.SGD(m.parameters(), lr=0.1), None),
                      validate=validate, on_epoch=on_epoch)  # fmt: skip
        return train(torch.nn.Linear(3, 2), lambda ctx: SampledBatches(lambda rng, n: (x[:n], y[:n]), 8, 30, 0, ctx),
                     hooks, LoopOptions(epochs=100, max_minutes=minutes, progress=False), run_dir=run_dir,
                     resume=resume)  # fmt: skip

    run.clock = clock
    return run


def test_train_time_budget_keeps_room_for_the_last_validation(fake_clock_run) -> None:
    """With a 100 s budget training stops where the validation that follows still ends within the budget; before, it
    ran to 121 s."""
    result = fake_clock_run(100 / 60)
    assert result.stop_reason == "budget" and fake_clock_run.clock["t"] <= 100.0
    assert result.steps_run == 60 and len(result.history) == 2  # 30 + 20 + 30 + 20 s: a third block would not fit


def test_a_resumed_run_keeps_room_for_the_validation_it_measured_before(fake_clock_run, tmp_path: Path) -> None:
    """The run stops after its first block, then resumes with a 40 s budget: it knows a validation takes 20 s (saved
    in the checkpoint), so it takes 21 steps (a step starts while clock + validation <= budget) and its validation
    ends at 41 s; before, it took the block's 30 and its validation ended at 50 s."""

    def stop(epoch, record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fake_clock_run(100 / 60, on_epoch=stop, run_dir=tmp_path)
    fake_clock_run.clock["t"] = 1000.0
    resumed = fake_clock_run(40 / 60, run_dir=tmp_path, resume=True)
    assert resumed.steps_run == 51 and fake_clock_run.clock["t"] == 1041.0  # 30 before the stop, 21 after it


def test_train_loop_refuses_divergence_and_empty_data() -> None:
    x, y = torch.randn(8, 3), torch.arange(8) % 2
    bad = Hooks(loss=lambda x, y, model, extras: model(x).sum() * float("nan"), optimizer=_linear_hooks().optimizer)
    with pytest.raises(InputError, match="diverged"):
        train(torch.nn.Linear(3, 2), lambda ctx: ArrayBatches(x, y, 4, ctx=ctx), bad, LoopOptions(progress=False))
    with pytest.raises(InputError, match="no training batch"):
        train(torch.nn.Linear(3, 2), lambda ctx: ArrayBatches(x[:1], y[:1], 4, ctx=ctx, min_per_rank=2),
              _linear_hooks(), LoopOptions(progress=False))


def test_train_chance_level_is_flagged(toy, caplog) -> None:
    from medanomaly.registry import MODELS

    train_set, val = toy
    blank = type(val)(np.full(val.images.shape, 0.3, np.float32), val.labels, val.patient_ids,
                      val.class_names)  # identical validation images: every score ties, AUC = 0.5
    torch.manual_seed(0)
    net = MODELS.create("compact_cnn", num_classes=2, widths=(4,), hidden=0)
    with caplog.at_level("WARNING", logger="medanomaly.train.engine"):
        result = fit(net, train_set, blank, TrainSettings(epochs=2, batch_size=16, progress=False))
    assert result.history[result.best_epoch]["val_auc"] == 0.5
    assert result.chance_level and result.to_json()["chance_level"] is True
    assert "chance level" in result.warnings[0] and "chance level" in caplog.text
    good = fit(MODELS.create("compact_cnn", num_classes=2, widths=(4,), hidden=0), train_set, val,
               TrainSettings(epochs=3, batch_size=16, lr=0.01, progress=False))
    assert good.best_score > 0.55 and not good.chance_level and good.warnings == ()


def test_train_sampler_run_resumes_exactly(tmp_path: Path) -> None:
    def sample(rng, n):
        x = rng.normal(size=(n, 3)).astype(np.float32)
        return x, (x[:, 0] > 0).astype(np.int64)

    def run(run_dir, resume=False, stop_after=None):
        torch.manual_seed(0)
        net = torch.nn.Linear(3, 2)
        hooks = _linear_hooks()
        if stop_after is not None:
            def stop(epoch, record):
                if epoch == stop_after:
                    raise KeyboardInterrupt

            hooks = Hooks(hooks.loss, hooks.optimizer, on_epoch=stop)
        opts = LoopOptions(epochs=4, progress=False, record_steps=True)
        return net, train(net, lambda ctx: SampledBatches(sample, 4, 3, seed=2, ctx=ctx), hooks, opts,
                          run_dir=run_dir, resume=resume)

    full_net, full = run(None)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, stop_after=1)
    net, resumed = run(tmp_path, resume=True)
    assert resumed.step_losses == pytest.approx(full.step_losses) and len(full.step_losses) == 12
    torch.testing.assert_close(net.weight, full_net.weight)


def test_train_settings_come_from_the_config_section() -> None:
    from medanomaly.classify.config import TrainConfig
    from medanomaly.classify.engine import train_settings

    cfg = parse_config({"task": "classification", "seed": 7, "model": {"name": "compact_cnn"},
                        "data": {"dataset": {"name": "manifest", "params": {"csv": "m.csv"}}},
                        "train": {"lr": 0.01, "augment": {"flip": True}, "class_weights": [1, 2], "resume": True}})
    settings = train_settings(cfg)
    assert settings.seed == 7 and settings.lr == 0.01 and settings.augment.flip and settings.class_weights == (1, 2)
    defaults = TrainSettings()
    for key in TrainConfig.model_fields:  # one source of defaults: the section's are the loop's
        if key in TrainSettings.model_fields:
            assert getattr(TrainConfig(), key) == getattr(defaults, key), key


@pytest.mark.parametrize(("config", "key"), [
    ({"task": "classification", "train": {"lr": float("nan")}}, "train.lr"),
    ({"task": "classification", "train": {"lr": float("inf")}}, "train.lr"),
    ({"task": "classification", "seed": -1}, "seed"),
    ({"task": "classification", "data": {"image_size": [100000, 100000]}}, "data.image_size"),
    ({"task": "lung_nodule", "train": {"steps": -6}}, "train.steps"),
    ({"task": "lung_nodule", "grid": {"spacing_mm": [0.001, 1, 1]}}, "grid.spacing_mm"),
    ({"task": "lung_nodule", "simulation": {"diameter_range_mm": [30, 3]}}, "simulation.diameter_range_mm"),
    ({"task": "lung_nodule", "simulation": {"sources": [{"case": "lung9"}]}}, "simulation.sources"),
    ({"task": "lung_nodule", "train": {"positive_fraction": 0.8, "hard_negative_fraction": 0.5}}, "train"),
    ({"task": "lung_nodule", "train": {"ema_decay": 1.0}}, "train.ema_decay"),
    ({"task": "lung_nodule", "train": {"mine_every": 100, "hard_negative_fraction": 0.0}}, "train"),
    ({"task": "lung_nodule", "train": {"mine_every": 100, "mined_fraction": 0.0}}, "train"),
    ({"task": "lung_nodule", "train": {"ema_decay": -0.5}}, "train.ema_decay"),
    ({"task": "classification", "train": {"ema_decay": 1.5}}, "train.ema_decay"),
    ({"task": "fusion", "data": {"n_train": 1e11}}, "data.n_train"),
    ({"task": "fusion", "train": {"lr": float("nan")}}, "train.lr"),
])
def test_train_impossible_config_values_are_refused_at_load(config: dict, key: str) -> None:
    base = {"classification": {"model": {"name": "compact_cnn"},
                               "data": {"dataset": {"name": "manifest", "params": {"csv": "m.csv"}}}}}
    data = {**base.get(config["task"], {}), **config}
    if config["task"] == "classification" and "data" in config:
        data["data"] = {**base["classification"]["data"], **config["data"]}
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as info:
        parse_config(data)
    assert "\n" not in str(info.value)


def test_train_patch_sampler_gives_up_when_no_patch_avoids_the_lesion() -> None:
    from medanomaly.detect.patches import GridScan, PatchSampler

    shape = (8, 40, 40)
    exclude = np.zeros(shape, bool)
    exclude[:, 18:22, 18:22] = True  # a real lesion in the middle: every 8 x 40 x 40 patch touches it
    image = np.zeros(shape, np.float32)
    scan = GridScan("t", image, np.zeros(shape, np.uint8), ~exclude, exclude, image - 800)
    with pytest.raises(InputError, match="patch_size smaller or simulation.exclude_margin_mm"):
        PatchSampler([scan], (8, 40, 40)).sample(np.random.default_rng(0), 2)
    x, _ = PatchSampler([scan], (4, 8, 8)).sample(np.random.default_rng(0), 2)  # small patches fit
    assert x.shape == (2, 1, 4, 8, 8)


def test_train_detector_params_come_from_the_lung_config() -> None:
    from medanomaly.detect.config import LungNoduleConfig
    from medanomaly.detect.detector import NoduleDetector
    from medanomaly.detect.patches import PatchSampler

    cfg = LungNoduleConfig(task="lung_nodule", seed=3)
    det = NoduleDetector.from_config(cfg)
    params = det.get_params()
    assert params["seed"] == 3 and params["threads"] == cfg.train.threads == "auto"
    assert params["hard_negative_fraction"] == cfg.train.hard_negative_fraction == 0.3
    # constructor defaults = config defaults (the network's own parameters are the model's business)
    assert NoduleDetector().get_params() == params | {"seed": 0, "model_params": {}}
    import inspect

    assert inspect.signature(PatchSampler).parameters["hard_negative_fraction"].default == 0.3


def test_a_warning_above_the_progress_bar_is_printed_once_and_verbatim(capsys) -> None:
    """With a bar, a warning was printed by the bar's console and again by Python's last-resort log handler (on
    stderr, unprefixed); and rich read ``[bold]`` in a message as markup."""
    from medanomaly.train.engine import _Reporter

    reporter = _Reporter(main=True, bar=True, title="train", total=1)
    try:
        reporter.line("val_auc 0.333 is at chance level for run [bold]x", warning=True)
    finally:
        reporter.close()
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.count("chance level") == 1
    assert "warning: val_auc 0.333 is at chance level for run [bold]x" in " ".join(captured.out.split())
