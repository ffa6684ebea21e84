"""Optimisers (Adam, AdamW, SGD with Nesterov momentum) and learning-rate schedules.

Schedules step once per optimiser step: ``cosine`` (to 0 over training, after an optional linear
warm-up), ``step`` (x``gamma`` every ``step_epochs``), ``onecycle`` or ``none``.

Example:
    >>> import torch
    >>> net = torch.nn.Linear(2, 2)
    >>> opt = make_optimizer("adamw", net.parameters(), lr=1e-3, weight_decay=1e-4)
    >>> sched = make_scheduler("cosine", opt, total_steps=10)
    >>> type(opt).__name__
    'AdamW'
"""

from __future__ import annotations

import math
from collections.abc import Iterable

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("none", "cosine", "step", "onecycle")


def make_optimizer(name: str, params: Iterable, lr: float = 1e-3, weight_decay: float = 0.0,
                   momentum: float = 0.9):
    """Build an optimiser. ``weight_decay`` is the L2 penalty (decoupled for AdamW)."""
    import torch

    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")


def make_scheduler(name: str, optimizer, total_steps: int, warmup_steps: int = 0,
                   steps_per_epoch: int = 1, step_epochs: int = 10, gamma: float = 0.1):
    """Build a per-step schedule (a ``LambdaLR``/``OneCycleLR``); ``none`` keeps the rate constant."""
    import torch

    total_steps = max(int(total_steps), 1)
    if name == "onecycle":
        max_lr = [g["lr"] for g in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps)

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if name == "none":
            return 1.0
        if name == "cosine":
            t = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
            return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))
        if name == "step":
            return gamma ** (step // max(step_epochs * steps_per_epoch, 1))
        raise ValueError(f"unknown schedule {name!r}; valid: {', '.join(SCHEDULES)}")

    factor(0)  # validate the name now, not at the first step
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
