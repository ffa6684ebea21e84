"""Hyper-parameter search with Optuna over a space declared in the config (``tune:`` section).

Each trial copies the config, sets the searched values at their dotted paths (``train.lr``,
``model.params.dropout``, ...), trains one model on the training split and is scored on the
validation split (never on test). Unpromising trials are pruned by Optuna's median rule from
their per-epoch validation scores. The result (``tune.json``) lists every trial; ``best.yaml`` is
the winning config, ready for ``medanomaly train``.

With an output folder the search lives in ``tune.db`` there (Optuna's SQLite storage) and both files are
rewritten after every trial: a search stopped by Ctrl-C, SIGTERM or a reboot keeps its finished trials, and the
same command again runs only the trials still missing (``--trials`` more than before extends it). Two processes
given the same folder share one search (Optuna's parallel optimisation); a trial whose process died is failed
after :data:`STALE_TRIAL_S`. A folder holding the search of another config is refused.

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
import warnings
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
#: Seconds after its last heartbeat when a running trial of a stored search counts as dead (its process killed).
STALE_TRIAL_S = 300
STUDY_NAME, STORE_FILE = "medanomaly-tune", "tune.db"


def search_fingerprint(cfg) -> str:
    """What makes two searches one: the config without its trial count (``--trials`` may extend a search)."""
    import hashlib

    tree = cfg.model_dump(mode="json")
    tree.get("tune", {}).pop("trials", None)
    return hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()


def open_study(cfg, out_dir: str | Path | None, direction: str, pruner):
    """The Optuna study: in memory without ``out_dir``, else stored in ``out_dir/tune.db`` (created, or resumed
    when it holds this config's search; another config's is one InputError naming the folder). Each trial's sampler
    is :func:`trial_sampler`'s."""
    import optuna

    storage = None
    if out_dir is not None:
        from sqlalchemy.engine import URL

        Path(out_dir).mkdir(parents=True, exist_ok=True)
        url = URL.create("sqlite", database=str(Path(out_dir).resolve() / STORE_FILE)).render_as_string()
        with warnings.catch_warnings():  # "heartbeat_interval is an experimental feature", on every run's terminal
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(url, heartbeat_interval=max(STALE_TRIAL_S // 5, 1),
                                                 grace_period=STALE_TRIAL_S)  # fmt: skip
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage, load_if_exists=True, direction=direction,
                                pruner=pruner)  # fmt: skip
    fingerprint = search_fingerprint(cfg)
    stored = study.user_attrs.get("config_fingerprint")
    if stored is None:
        study.set_user_attr("config_fingerprint", fingerprint)
    elif stored != fingerprint:
        raise InputError(f"holds the search of another config ({STORE_FILE}): give another --out, or the same "
                         "config to resume it", out_dir)  # fmt: skip
    study.sampler = trial_sampler(cfg, 0)
    return study


def trial_sampler(cfg, number: int):
    """The sampler of trial ``number``, seeded by the config's seed and that number: a search draws the same values
    whether run at once, stopped and resumed, or shared by two processes (which, seeded alike, had drawn the same
    values side by side), and a resumed search draws new ones."""
    import optuna

    seed = cfg.seed + number
    return optuna.samplers.TPESampler(seed=seed) if cfg.tune.sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed)


def _counted(study) -> int:
    """Trials that count towards the requested number: finished or pruned (failed ones are run again)."""
    import optuna

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum(t.state in done for t in study.trials)


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
    metric = cfg.tune.metric
    higher = METRICS[metric]
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # its failed-trial warning prints the trial's traceback
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2) if cfg.tune.pruning \
        else optuna.pruners.NopPruner()
    study = open_study(cfg, out_dir, "maximize" if higher else "minimize", pruner)  # another search: before the data
    data = load_data(cfg) if data is None else data
    train, val = data.split("train"), data.split("val")

    def objective(trial) -> float:
        study.sampler = trial_sampler(cfg, trial.number)  # TPE reads the history from the storage at each draw
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

    def record(study, _trial) -> None:  # after every trial: a stopped search keeps what it found
        if out_dir is not None and _completed(study):
            write_results(study, cfg, out_dir, metric, higher, data.synthetic)

    while _counted(study) < n_trials:  # one at a time: a second process on the same storage shares the count
        study.optimize(objective, n_trials=1, catch=(), callbacks=[record])
    if not _completed(study):
        raise InputError("no tuning trial completed")
    if out_dir is not None:
        write_results(study, cfg, out_dir, metric, higher, data.synthetic)
    return summarise(study, metric, higher, data.synthetic)


def _completed(study) -> list:
    import optuna

    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def summarise(study, metric: str, higher: bool, synthetic: bool) -> dict[str, Any]:
    """``tune.json``'s content: the metric, the best trial and every trial (resumed ones included)."""
    best = study.best_trial
    return {
        "metric": f"val_{metric}", "direction": "maximize" if higher else "minimize",
        "synthetic": bool(synthetic), "n_trials": len(study.trials), "best_value": best.value,
        "best_params": best.params,
        "trials": [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params}
                   for t in study.trials],
    }  # fmt: skip


def write_results(study, cfg, out_dir: str | Path, metric: str, higher: bool, synthetic: bool) -> None:
    """Write ``tune.json`` and ``best.yaml`` (the best trial's config) into ``out_dir``, each whole or not at all."""
    import yaml

    out = Path(out_dir)
    write_text_atomic(out / "tune.json", json.dumps(summarise(study, metric, higher, synthetic), indent=2,
                                                    default=float))  # fmt: skip
    best_cfg = apply_overrides(cfg, dict(study.best_trial.params))
    write_text_atomic(out / "best.yaml", yaml.safe_dump(best_cfg.model_dump(mode="json"), sort_keys=False))
