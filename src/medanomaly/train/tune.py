"""Hyper-parameter search with Optuna over a space declared in the config (``tune:`` section).

Each trial copies the config, sets the searched values at their dotted paths (``train.lr``,
``model.params.dropout``, ...), trains one model on the training split and is scored on the
validation split (never on test). Unpromising trials are pruned by Optuna's median rule from
their per-epoch validation scores. The result (``tune.json``) lists every trial; ``best.yaml`` is
the winning config, ready for ``medanomaly train``.

Example YAML::

    tune:
      trials: 20
      epochs: 8
      space:
        train.lr: {type: float, low: 0.0003, high: 0.005, log: true}
        train.loss: {type: categorical, choices: [ce, focal]}
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medanomaly.errors import ConfigError, InputError
from medanomaly.jsonio import write_text_atomic


def set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``tree[a][b][c] = value`` for ``dotted = "a.b.c"`` (creating ``params`` dicts)."""
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        if not isinstance(node, dict):
            raise ConfigError(f"tune.space: {dotted!r} does not name a config field")
        node = node.setdefault(key, {})
    node[keys[-1]] = value


def apply_overrides(cfg, overrides: dict[str, Any]):
    """A validated copy of ``cfg`` with dotted-path ``overrides``."""
    from medanomaly.config import parse_config

    tree = cfg.model_dump(mode="json")
    for path, value in overrides.items():
        set_path(tree, path, value)
    return parse_config(tree, "<tune>")


def check_space(cfg, check_config: Callable[[Any], None] | None = None) -> None:
    """Every end of the searched space (low and high, or each choice) makes a valid config, checked before any
    data is read or trial trained: a learning rate below 0, a typo in a dotted path or epochs past the limit is
    one ConfigError naming the path and value (Optuna reported each as a failed trial first). ``check_config``
    (the task's own check of a config, e.g. that its network takes the configured images) is run on the base
    config and on each end too: ``model.params`` are free, so a dropout of 1.5 or widths too deep for the images
    are only found by building the network."""
    if check_config is not None:
        check_config(cfg)
    for name, space in cfg.tune.space.items():
        ends = space.choices if space.type == "categorical" else [space.low, space.high]
        for value in ends:
            value = int(value) if space.type == "int" else value
            try:
                end = apply_overrides(cfg, {name: value})
                if check_config is not None:
                    check_config(end)
            except ConfigError as exc:
                raise ConfigError(f"tune.space.{name} = {value!r} does not make a valid config "
                                  f"({exc.reason.removeprefix('<tune>: ')})") from None  # fmt: skip


def suggest(trial, name: str, space) -> Any:
    """Draw one value for ``name`` from its :class:`~medanomaly.classify.config.ParamSpace` (checked when the
    config was read: choices given, ``low <= high``, ``low > 0`` on a log scale)."""
    if space.type == "categorical":
        return trial.suggest_categorical(name, space.choices)
    if space.type == "int":
        return trial.suggest_int(name, int(space.low), int(space.high), log=space.log)
    return trial.suggest_float(name, float(space.low), float(space.high), log=space.log)


#: Most trials one search may run: the bound of ``--trials`` and of the config's ``tune.trials``.
MAX_TRIALS = 100_000


def tune(cfg, trials: int | None = None, out_dir: str | Path | None = None, data=None, *,
         load_data: Callable[[Any], Any], build_model: Callable[[Any, int], Any],
         train_settings: Callable[[Any], Any], check_config: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Run the search; returns (and writes to ``out_dir/tune.json``) the best params and all trials.

    Args:
        cfg: a :class:`~medanomaly.classify.config.ClassificationConfig` with a ``tune.space``.
        trials: number of trials (default ``cfg.tune.trials``).
        out_dir: where ``tune.json`` and ``best.yaml`` go (None = nowhere).
        data: pre-loaded :class:`~medanomaly.data.arrays.LabelledImages` (default: ``load_data(cfg)``).
        load_data / build_model / train_settings: the task's own functions (config -> data,
            (config, n_classes) -> network, config -> TrainSettings); train imports no task.
        check_config: the task's check of a config before any data work (see :func:`check_space`).
    """
    import optuna
    import torch

    from medanomaly.train.loop import METRICS, fit

    if not cfg.tune.space:
        raise ConfigError("tune.space is empty: declare at least one parameter to search")
    check_space(cfg, check_config)
    n_trials = cfg.tune.trials if trials is None else trials
    if not 1 <= n_trials <= MAX_TRIALS:  # 0 used to mean "the config's 20", -1 ran none and said "no trial completed"
        raise InputError(f"--trials must be 1..{MAX_TRIALS:,}, got {n_trials}")
    data = load_data(cfg) if data is None else data
    train, val = data.split("train"), data.split("val")
    metric = cfg.tune.metric
    higher = METRICS[metric]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = (optuna.samplers.TPESampler(seed=cfg.seed) if cfg.tune.sampler == "tpe"
               else optuna.samplers.RandomSampler(seed=cfg.seed))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2) if cfg.tune.pruning \
        else optuna.pruners.NopPruner()
    study = optuna.create_study(direction="maximize" if higher else "minimize", sampler=sampler, pruner=pruner)

    def objective(trial) -> float:
        overrides = {name: suggest(trial, name, space) for name, space in cfg.tune.space.items()}
        if cfg.tune.epochs:
            overrides["train.epochs"] = cfg.tune.epochs
        trial_cfg = apply_overrides(cfg, overrides)
        settings = train_settings(trial_cfg).replace(progress=False, early_stopping_metric=metric)
        torch.manual_seed(cfg.seed)
        model = build_model(trial_cfg, len(data.class_names))

        def report(epoch: int, record: dict[str, float]) -> None:
            value = record.get(f"val_{metric}", math.nan)
            if math.isfinite(value):
                trial.report(value, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned()

        result = fit(model, train, val, settings, on_epoch=report)
        if not math.isfinite(result.best_score):
            raise InputError(f"trial {trial.number}: validation {metric} is undefined")
        return result.best_score

    study.optimize(objective, n_trials=n_trials, catch=())
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise InputError("no tuning trial completed")
    best = study.best_trial
    summary = {
        "metric": f"val_{metric}", "direction": "maximize" if higher else "minimize",
        "synthetic": bool(data.synthetic), "n_trials": len(study.trials), "best_value": best.value,
        "best_params": best.params,
        "trials": [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params}
                   for t in study.trials],
    }
    if out_dir is not None:
        import yaml

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "tune.json", json.dumps(summary, indent=2, default=float))
        best_cfg = apply_overrides(cfg, dict(best.params))
        write_text_atomic(out / "best.yaml", yaml.safe_dump(best_cfg.model_dump(mode="json"), sort_keys=False))
    return summary
