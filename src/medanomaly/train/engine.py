"""The one training loop: classification, fusion and detection all train through :func:`train`.

What differs between tasks comes in through hooks; everything else is written once here:

* **batches** (:mod:`medanomaly.train.batches`): epoch-wise index batches of in-memory tensors, or
  a step-wise sampler (detection patches); built for this process's rank.
* **weight averaging** (``ema_decay`` > 0, :mod:`medanomaly.train.averaging`): an exponential moving average
  of the weights, updated after every step; validation, the kept weights and the result are the average's.
* **loss** ``loss(x, y, model, extras) -> scalar``: the mean loss over the rank's share of the batch
  (fusion passes the presence mask in ``extras`` and adds per-branch losses).
* **optimizer** ``optimizer(model, steps_per_epoch, total_steps) -> (optimiser, per-step schedule)``.
* **validate** ``validate(model) -> {metric: value}`` (optional): recorded as ``val_<metric>``;
  the epoch with the best ``monitor`` value is kept, with patience-based early stopping.

Around them: seeding, a step budget (``max_steps``, ``max_minutes``), a progress bar and one log
line per epoch (or every ``log_every`` steps), resumable checkpoints (safetensors + JSON state in
``run_dir/checkpoint``, written every epoch), and multi-process training under ``torchrun``
(:mod:`medanomaly.train.distributed`: sharded global batches, DDP, validation on rank 0 only,
files written by rank 0 only). The model ends on the device it came on, at its best epoch.

Example:
    >>> import torch
    >>> from medanomaly.train.batches import ArrayBatches
    >>> net = torch.nn.Linear(3, 2)
    >>> x, y = torch.randn(16, 3), torch.arange(16) % 2
    >>> hooks = Hooks(loss=lambda x, y, model, extras: torch.nn.functional.cross_entropy(model(x), y),
    ...               optimizer=lambda model, spe, total: (torch.optim.SGD(model.parameters(), lr=0.1), None))
    >>> result = train(net, lambda ctx: ArrayBatches(x, y, 8, ctx=ctx), hooks, LoopOptions(epochs=2, progress=False))
    >>> result.epochs_run, result.steps_run
    (2, 4)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medanomaly.errors import InputError
from medanomaly.train.averaging import WeightAverage
from medanomaly.train.distributed import (DistContext, all_sum, broadcast_object, context, gather_objects, module_device,
                                         wrap)
from medanomaly.train.precision import in_precision

__all__ = ["Hooks", "LoopOptions", "FitResult", "train", "seed_everything", "CHANCE_AUC", "chance_warning"]

#: A bfloat16 run stops when more than this share of its steps had non-finite gradients (:meth:`_Run.finite_step`) ...
MAX_SKIPPED_SHARE = 0.05
#: ... and more than this many.
MIN_SKIPPED_LIMIT = 10

log = logging.getLogger(__name__)

#: A validation AUC at or below this is reported as chance level.
CHANCE_AUC = 0.55
#: The loop's warnings (chance level), written beside ``history.json`` when it has a run folder.
WARNINGS_JSON = "warnings.json"


@dataclass(frozen=True)
class Hooks:
    """What a task plugs into the loop (see the module docstring for each signature)."""

    loss: Callable[[Any, Any, Any, dict[str, Any]], Any]
    optimizer: Callable[[Any, int, int], tuple[Any, Any]]
    validate: Callable[[Any], dict[str, float]] | None = None
    on_epoch: Callable[[int, dict[str, float]], None] | None = None


@dataclass(frozen=True)
class LoopOptions:
    """How long to train, what to keep, what to show.

    Attributes:
        epochs: passes (epoch-wise sources) or blocks of ``steps_per_epoch`` steps (samplers).
        monitor: history key picking the best epoch (``val_auc``, ``train_loss``; None = last epoch).
        higher: whether a higher ``monitor`` is better.
        patience / min_delta: stop after ``patience`` epochs without a ``min_delta`` improvement.
        max_steps / max_minutes / max_steps_per_epoch: step and time budget (wall-clock minutes; the longest
            validation so far is kept free for the one after the last step, so a run that validates more than once
            ends within it; a run whose only validation is the last one spends the budget on steps).
        seed: seeds torch's global generator (dropout) at the start.
        device: ``auto`` / ``cpu`` / ``cuda``.
        progress / title / log_every: progress bar, its title, a log line every N steps (0 = per epoch).
        record_steps: keep every step's loss (``FitResult.step_losses``).
        chance_metric: history key of a validation AUC; at or below :data:`CHANCE_AUC` at the kept
            epoch, the run is flagged ``chance_level`` and says so in the log.
        forward: the model method the loss hook's ``model`` calls (``forward_all`` for fusion).
        find_unused_parameters: passed to DDP (networks whose branches may go unused in a step).
        weights_file: the best weights' file name in ``run_dir``.
        ema_decay: exponential moving average of the weights (0 = off; the decay warms up as (1 + n) / (10 + n),
            so 0.995 holds from about step 1,800 and then averages over about the last 200 steps): what is
            validated, kept and returned (:mod:`medanomaly.train.averaging`).
        precision: ``fp32``, or ``bf16``: the training forward pass under bfloat16 autocast, float32 outputs to the
            loss, float32 weights (:func:`medanomaly.train.precision.in_precision`; resolve ``auto`` first).
    """

    epochs: int = 1
    monitor: str | None = None
    higher: bool = True
    patience: int | None = None
    min_delta: float = 0.0
    max_steps: int | None = None
    max_minutes: float | None = None
    max_steps_per_epoch: int | None = None
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    title: str = "train"
    log_every: int = 0
    record_steps: bool = False
    chance_metric: str | None = None
    forward: str = "forward"
    find_unused_parameters: bool = False
    weights_file: str = "model.safetensors"
    ema_decay: float = 0.0
    precision: str = "fp32"


@dataclass(frozen=True)
class FitResult:
    """What a training run did. Scores are on the validation split.

    ``stop_reason``: ``epochs`` (all done), ``patience`` (early stopping) or ``budget``
    (``max_steps`` / ``max_minutes``). ``chance_level``: the kept model's validation AUC is at or
    below :data:`CHANCE_AUC` (said in ``warnings`` and the log too). ``precision``: the forward pass's (``fp32`` or
    ``bf16``); ``skipped_steps``: bfloat16 steps not applied for non-finite gradients (since the start or the resume).
    """

    best_epoch: int
    best_score: float
    metric: str
    epochs_run: int
    stopped_early: bool
    seconds: float
    images_per_second: float
    history: tuple[dict[str, float], ...]
    steps_run: int = 0
    stop_reason: str = "epochs"
    step_losses: tuple[float, ...] = ()
    chance_level: bool = False
    warnings: tuple[str, ...] = field(default=())
    precision: str = "fp32"
    skipped_steps: int = 0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "history": list(self.history), "step_losses": list(self.step_losses),
                "warnings": list(self.warnings)}


def seed_everything(seed: int) -> None:
    """Seed torch's global RNG (weight init, dropout); batches and augmentation use their own seeded
    generators, so a run is reproducible on the same machine and thread count."""
    import torch

    torch.manual_seed(seed)


def chance_warning(auc: float, what: str = "validation AUC") -> str | None:
    """A one-line warning when ``auc`` is at chance level (<= :data:`CHANCE_AUC`), else None."""
    if math.isfinite(auc) and auc <= CHANCE_AUC:
        return (f"{what} {auc:.3f} is at chance level (<= {CHANCE_AUC}): the model has not learned to "
                f"separate the classes; check the labels, the data and the learning rate")
    return None


def _method_module(model: Any, method: str) -> Any:
    """``model`` itself, or a module whose ``forward`` calls ``model.<method>`` (so DDP wraps it)."""
    if method == "forward":
        return model
    import torch

    class _Method(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, *args: Any) -> Any:
            return getattr(self.net, method)(*args)

    return _Method()


def train(model: Any, batches: Callable[[DistContext], Any], hooks: Hooks, options: LoopOptions,
          run_dir: str | Path | None = None, resume: bool = False) -> FitResult:
    """Train ``model`` in place and leave it at its best epoch (see the module docstring).

    Args:
        model: a ``torch.nn.Module``.
        batches: builds the batch source for this process (``batches(ctx)``).
        hooks / options: see :class:`Hooks` and :class:`LoopOptions`.
        run_dir: where the best weights, ``history.json`` and ``checkpoint/`` go (rank 0 only);
            None keeps everything in memory.
        resume: continue from ``run_dir/checkpoint`` when it exists.

    Raises:
        InputError: no training batch, or the loss is not finite (training diverged).
    """
    run = _Run(model, batches, hooks, options, run_dir)
    done = False
    try:
        if resume:
            run.restore()
        run.loop()
        done = True
    finally:
        run.close(done)
    return run.result()


class _Reporter:
    """Progress bar and log lines, on rank 0 only."""

    def __init__(self, main: bool, bar: bool, title: str, total: int) -> None:
        self.main, self.bar, self.task = main, None, None
        if main and bar and total > 0:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self.bar = Progress(TextColumn(f"[bold]{title}[/] {{task.description}}"), BarColumn(),
                                MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
            self.task = self.bar.add_task("", total=total)
            self.bar.start()

    def advance(self, description: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=1, description=description)

    def line(self, text: str, warning: bool = False) -> None:
        """One line: printed above the bar (visible in a terminal and a redirected log alike), once: with a bar the
        log record is at info level, so Python's last-resort handler does not print a warning a second time."""
        if not self.main:
            return
        if self.bar is None:
            (log.warning if warning else log.info)(text)
            return
        log.info(text)
        self.bar.console.print(f"warning: {text}" if warning else text, markup=False, highlight=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _fmt(record: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "epoch")


class _Run:
    """The state of one training run (the methods are the loop's steps)."""

    def __init__(self, model: Any, batches: Callable[[DistContext], Any], hooks: Hooks, opts: LoopOptions,
                 run_dir: str | Path | None) -> None:
        self.model, self.hooks, self.opts = model, hooks, opts
        self.ctx = context(opts.device)
        self.source = batches(self.ctx)
        self.steps_per_epoch = min(len(self.source), opts.max_steps_per_epoch or len(self.source))
        if self.steps_per_epoch < 1:
            raise InputError("no training batch: the training set is smaller than one batch")
        total = self.steps_per_epoch * opts.epochs
        self.total_steps = min(total, opts.max_steps) if opts.max_steps else total
        where = broadcast_object(str(run_dir) if run_dir is not None else None, self.ctx)
        self.run_dir = Path(where) if where is not None else None
        seed_everything(opts.seed)
        self.home = module_device(model)
        model.to(self.ctx.device)
        self.average = WeightAverage(model, opts.ema_decay) if opts.ema_decay > 0 else None
        self.optimizer, self.scheduler = hooks.optimizer(model, self.steps_per_epoch, self.total_steps)
        self.history: list[dict[str, float]] = []
        self.step_losses: list[float] = []
        self.warnings: list[str] = []
        self.best: dict[str, Any] = {"epoch": -1, "score": math.nan, "stale": 0}
        self.best_state: dict[str, Any] | None = None
        self.start_epoch, self.steps_run, self.samples, self.reason = 0, 0, 0.0, "epochs"
        self.skipped_steps = 0  # bfloat16 steps with non-finite gradients, not applied (finite_step)
        self.seconds, self.reporter, self.t0 = 0.0, None, None
        self.validation_seconds = 0.0  # the longest validation so far: the time the budget keeps for the last one
        self.fwd: Any = None

    # ------------------------------------------------------------------------ resume
    def restore(self) -> None:
        """Load ``run_dir/checkpoint`` (every rank reads the same files) when it exists."""
        from medanomaly.train.checkpoint import checkpoint_values, has_training_state, load_training_state

        checkpoint = None if self.run_dir is None else self.run_dir / "checkpoint"
        if checkpoint is None or not has_training_state(checkpoint):
            return
        info = load_training_state(checkpoint, self.model, self.optimizer, self.scheduler, average=self.average)
        with checkpoint_values(checkpoint):  # the loop's own record (epoch, best, sampler state)
            self.start_epoch, self.history = int(info["epoch"]) + 1, list(info["history"])
            self.best = {**info["best"], "score": math.nan if info["best"]["score"] is None else info["best"]["score"]}
            self.steps_run, self.step_losses = int(info.get("steps_run", 0)), list(info.get("step_losses", []))
            self.validation_seconds = float(info.get("validation_seconds", 0.0))  # the budget keeps room for it
            states = info["sources"]
            self.source.load_state(states[self.ctx.rank % len(states)])
        weights = self.run_dir / self.opts.weights_file
        if self.opts.monitor is not None and weights.is_file():
            from safetensors.torch import load_file

            self.best_state = load_file(str(weights), device=str(self.ctx.device))

    # ------------------------------------------------------------------------ the loop
    def loop(self) -> None:
        opts = self.opts
        forward = in_precision(_method_module(self.model, opts.forward), opts.precision)
        self.fwd = wrap(forward, self.ctx, opts.find_unused_parameters)
        left = min(self.steps_per_epoch * (opts.epochs - self.start_epoch), self.total_steps - self.steps_run)
        self.reporter = _Reporter(self.ctx.is_main, opts.progress, opts.title, max(left, 0))
        self.t0 = time.perf_counter()
        for epoch in range(self.start_epoch, opts.epochs):
            record, out_of_budget = self.train_epoch(epoch)
            if record is None:  # the budget ran out before this epoch's first step
                self.reason = "budget"
                break
            with self.evaluated_weights():
                self.validate(record)
                self.history.append(record)
                self.select(epoch, record)
            self.reporter.line(f"epoch {epoch + 1}/{opts.epochs}: {_fmt(record)}")
            self.checkpoint(epoch)
            if self.hooks.on_epoch is not None:
                self.hooks.on_epoch(epoch, record)
            if opts.patience is not None and self.best["stale"] >= opts.patience:
                self.reason = "patience"
                break
            if out_of_budget:
                self.reason = "budget"
                break
        self.check_chance()

    def check_chance(self) -> None:
        """Flag (and say) a kept model whose validation AUC is at chance level."""
        key = self.opts.chance_metric
        kept = [r for r in self.history if r["epoch"] == self.best["epoch"]]
        if key is None or not kept:
            return
        message = chance_warning(float(kept[-1].get(key, math.nan)), f"{key} (epoch {self.best['epoch'] + 1})")
        if message is not None:
            self.warnings.append(message)
            self.reporter.line(message, warning=True)
        if self.run_dir is not None and self.ctx.is_main:  # the run's status.json and report pick these up
            from medanomaly.jsonio import write_json

            write_json(self.run_dir / WARNINGS_JSON, list(self.warnings))

    def over_budget(self) -> bool:
        """Step or time budget spent (the time check agrees on every rank). The time budget keeps room for the
        validation that follows the last step: a step starts only while the wall clock plus the longest
        validation so far is within ``max_minutes``."""
        if self.opts.max_steps is not None and self.steps_run >= self.opts.max_steps:
            return True
        if self.opts.max_minutes is None:
            return False
        late = time.perf_counter() - self.t0 + self.validation_seconds > 60.0 * self.opts.max_minutes
        if self.ctx.distributed:
            if self.steps_run % 10:
                return False
            late = all_sum([float(late)], self.ctx)[0] > 0
        return late

    def train_epoch(self, epoch: int) -> tuple[dict[str, float] | None, bool]:
        """One epoch of steps; returns its record (None when no step was taken) and whether the
        budget ran out."""
        import torch

        self.fwd.train()
        total, n, out = torch.zeros((), dtype=torch.float64, device=self.ctx.device), 0, False
        scale = self.ctx.world_size if self.ctx.distributed else 1
        for step, batch in enumerate(self.source.epoch()):
            if step >= self.steps_per_epoch:
                break
            if self.over_budget():
                out = True
                break
            batch = batch.to(self.ctx.device)
            loss = self.hooks.loss(batch.x, batch.y, self.fwd, batch.extras)
            weighted = loss * (batch.n * scale / batch.total) if scale > 1 else loss
            self.optimizer.zero_grad(set_to_none=True)
            weighted.backward()
            if self.opts.precision == "bf16" and not self.finite_step(loss):
                continue
            self.optimizer.step()
            if self.average is not None:
                self.average.update(self.model)
            if self.scheduler is not None:
                self.scheduler.step()
            total += loss.detach() * batch.n
            n += batch.n
            self.steps_run += 1
            self.after_step(epoch, loss)
        loss_sum, count = all_sum([float(total), float(n)], self.ctx)
        if count == 0:
            return None, True
        if not math.isfinite(loss_sum):
            raise InputError("training diverged (loss is not finite); lower the learning rate")
        self.samples += count
        record = {"epoch": epoch, "train_loss": loss_sum / max(count, 1.0),
                  "lr": float(self.optimizer.param_groups[0]["lr"])}
        return record, out or (self.opts.max_steps is not None and self.steps_run >= self.opts.max_steps)

    def finite_step(self, loss: Any) -> bool:
        """Whether a bfloat16 step's loss and gradients are finite; if not, the step is skipped (no update, not
        counted), as mixed-precision training does. oneDNN's bfloat16 3D-convolution weight gradient came out NaN now
        and then on 2 threads for finite inputs (a captured case: 96 of 6,912 entries in 2 of 3 calls with the same
        tensors; docs/lung_nodules_runs.md), and one NaN update spoils every weight after it.

        Raises:
            InputError: more than :data:`MAX_SKIPPED_SHARE` of the steps so far (at least
                :data:`MIN_SKIPPED_LIMIT`) were skipped: train in float32 instead.
        """
        import torch

        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        checks = [torch.isfinite(loss.detach()).all()] + [torch.isfinite(g).all() for g in grads]
        if bool(torch.stack(checks).all()):
            return True
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped_steps += 1
        limit = max(MIN_SKIPPED_LIMIT, MAX_SKIPPED_SHARE * (self.steps_run + self.skipped_steps))
        if self.skipped_steps > limit:
            raise InputError(f"training in bfloat16 gave non-finite gradients in {self.skipped_steps} of "
                             f"{self.steps_run + self.skipped_steps} steps; set train.precision: fp32")  # fmt: skip
        return False

    def after_step(self, epoch: int, loss: Any) -> None:
        """Per-step loss record, progress bar and the every-N-steps log line."""
        opts = self.opts
        if opts.record_steps:
            value = float(loss.detach())
            if self.ctx.distributed:
                value = all_sum([value], self.ctx)[0] / self.ctx.world_size
            self.step_losses.append(value)
        desc = f"epoch {epoch + 1}/{opts.epochs}"
        if self.step_losses:
            recent = self.step_losses[-20:]
            desc += f" loss {sum(recent) / len(recent):.3f}"
        self.reporter.advance(desc)
        if opts.log_every and self.steps_run % opts.log_every == 0 and self.step_losses:
            recent = self.step_losses[-opts.log_every:]
            self.reporter.line(f"step {self.steps_run}/{self.total_steps}: loss {sum(recent) / len(recent):.4g} "
                               f"(mean of the last {len(recent)})")

    def evaluated_weights(self) -> Any:
        """The weights validation and selection see: the moving average when there is one, else the live ones."""
        return self.average.swapped_in(self.model) if self.average is not None else nullcontext()

    def validate(self, record: dict[str, float]) -> None:
        """Validation metrics (computed on rank 0, the same on every rank) into ``record``."""
        if self.hooks.validate is None:
            return
        started = time.perf_counter()
        scores = self.hooks.validate(self.model) if self.ctx.is_main else None
        scores = broadcast_object(scores, self.ctx)
        self.validation_seconds = max(self.validation_seconds, time.perf_counter() - started)
        record.update({f"val_{k}": float(v) for k, v in scores.items()})

    def select(self, epoch: int, record: dict[str, float]) -> None:
        """Keep the weights of the best epoch so far (the last one when nothing is monitored)."""
        opts = self.opts
        if opts.monitor is None:
            score, improved = math.nan, True
        else:
            score = float(record.get(opts.monitor, math.nan))
            best = self.best["score"]
            improved = (score > best + opts.min_delta) if opts.higher else (score < best - opts.min_delta)
            improved = improved or self.best["epoch"] < 0 or (math.isnan(best) and not math.isnan(score))
        if not improved:
            self.best["stale"] += 1
            return
        self.best = {"epoch": epoch, "score": score, "stale": 0}
        if opts.monitor is not None:  # else the last epoch's weights are the result anyway
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if self.run_dir is not None and self.ctx.is_main:
            from medanomaly.train.checkpoint import save_weights

            save_weights(self.model, self.run_dir / opts.weights_file)

    def checkpoint(self, epoch: int) -> None:
        """Write history and the resumable state (rank 0; every rank's sampler state gathered)."""
        if self.run_dir is None:
            return
        states = gather_objects(self.source.state(), self.ctx)
        if not self.ctx.is_main:
            return
        from medanomaly.jsonio import write_json
        from medanomaly.train.checkpoint import save_training_state

        write_json(self.run_dir / "history.json", self.history)
        info = {"epoch": epoch, "history": self.history, "best": self.best, "sources": states,
                "steps_run": self.steps_run, "step_losses": self.step_losses,
                "validation_seconds": self.validation_seconds}
        save_training_state(self.run_dir / "checkpoint", self.model, self.optimizer, self.scheduler, info,
                            average=self.average)

    # ------------------------------------------------------------------------ the end
    def close(self, done: bool) -> None:
        """Stop the bar; when training finished, load the best weights; always move the model
        back to the device it came on."""
        if self.reporter is not None:
            self.reporter.close()
        if self.t0 is not None:
            self.seconds = time.perf_counter() - self.t0
        if done and self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        elif done and self.average is not None:
            self.average.load_into(self.model)
        self.model.to(self.home)

    def result(self) -> FitResult:
        return FitResult(best_epoch=int(self.best["epoch"]), best_score=float(self.best["score"]),
                         metric=self.opts.monitor or "last", epochs_run=len(self.history),
                         stopped_early=self.reason == "patience", seconds=self.seconds,
                         images_per_second=self.samples / self.seconds if self.seconds > 0 else math.nan,
                         history=tuple(self.history), steps_run=self.steps_run, stop_reason=self.reason,
                         step_losses=tuple(self.step_losses), chance_level=bool(self.warnings),
                         warnings=tuple(self.warnings), precision=self.opts.precision,
                         skipped_steps=self.skipped_steps)
