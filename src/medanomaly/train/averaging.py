"""An exponential moving average of a network's weights during training (Polyak averaging).

After every optimiser step the average moves towards the live weights:
``average = d x average + (1 - d) x weights``, with ``d = min(decay, (1 + n) / (10 + n))`` after ``n``
updates, so the first steps' weights do not linger (the warm-up TensorFlow's ``ExponentialMovingAverage``
takes ``num_updates`` for). torch's :class:`torch.optim.swa_utils.AveragedModel` holds the average and
updates it; this module adds the warm-up, swaps the average into the live network for validation and
for the result, and exposes its tensors for resumable checkpoints. Only parameters are averaged: buffers
(normalisation statistics) stay the live network's.

Example:
    >>> import torch
    >>> net = torch.nn.Linear(2, 1)
    >>> average = WeightAverage(net, decay=0.9)
    >>> with torch.no_grad():
    ...     _ = net.weight.fill_(1.0)
    >>> average.update(net)          # the first update copies the weights
    >>> with torch.no_grad():
    ...     _ = net.weight.fill_(3.0)
    >>> average.update(net)          # n = 1: d = min(0.9, 2 / 11)
    >>> with average.swapped_in(net):
    ...     round(float(net.weight[0, 0]), 4)
    2.6364
    >>> float(net.weight[0, 0])      # the live weights are back
    3.0
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["WeightAverage", "warmed_decay"]


def warmed_decay(decay: float, updates: float) -> float:
    """The decay used after ``updates`` averaging updates: ``min(decay, (1 + n) / (10 + n))``.

    Example:
        >>> warmed_decay(0.995, 0), round(warmed_decay(0.995, 90), 3), warmed_decay(0.995, 10_000)
        (0.1, 0.91, 0.995)
    """
    return min(decay, (1.0 + updates) / (10.0 + updates))


def _warmed_update(decay: float) -> Callable[[list[Any], list[Any], Any], None]:
    def update(averaged: list[Any], current: list[Any], updates: Any) -> None:
        weight = 1.0 - warmed_decay(decay, float(updates))
        for avg, cur in zip(averaged, current, strict=True):
            avg.lerp_(cur, weight)

    return update


def _copy_into(model: Any, tensors: Any) -> None:
    """Copy ``tensors`` into ``model``'s parameters, in order."""
    import torch

    with torch.no_grad():
        for p, value in zip(model.parameters(), tensors, strict=True):
            p.copy_(value)


class WeightAverage:
    """The moving average of ``model``'s parameters (``decay`` in (0, 1); see the module docstring)."""

    def __init__(self, model: Any, decay: float) -> None:
        from torch.optim.swa_utils import AveragedModel

        if not 0.0 < decay < 1.0:
            raise ValueError(f"weight-average decay must be in (0, 1), got {decay}")
        self.averaged = AveragedModel(model, multi_avg_fn=_warmed_update(decay), use_buffers=False)

    def update(self, model: Any) -> None:
        """One averaging step towards ``model``'s current parameters (after an optimiser step)."""
        self.averaged.update_parameters(model)

    @contextmanager
    def swapped_in(self, model: Any) -> Iterator[None]:
        """Inside the block ``model`` holds the averaged parameters; its own come back after."""
        live = [p.detach().clone() for p in model.parameters()]
        self.load_into(model)
        try:
            yield
        finally:
            _copy_into(model, live)

    def load_into(self, model: Any) -> None:
        """Copy the averaged parameters into ``model`` for good (the result of training)."""
        _copy_into(model, self.averaged.module.parameters())

    def state_tensors(self) -> dict[str, Any]:
        """The average's tensors (parameters and update count) for a checkpoint."""
        return {k: v.detach().cpu().contiguous().clone() for k, v in self.averaged.state_dict().items()}

    def load_state_tensors(self, tensors: dict[str, Any]) -> None:
        """Restore what :meth:`state_tensors` gave."""
        self.averaged.load_state_dict(tensors)
