"""Batch sources of the training loop: epoch-wise index batches, or a step-wise sampler.

A source yields :class:`Batch` es for one epoch and knows its length (steps per epoch). Two kinds:

* :class:`ArrayBatches`: in-memory tensors cut by a seeded permutation of the indices (or a
  weighted draw with replacement). Every rank draws the SAME global batch and takes its share
  (:func:`medanomaly.train.distributed.shard`), like ``DistributedSampler`` but batch by batch,
  so N processes at a global batch size B step exactly like one process at B.
* :class:`SampledBatches`: a function draws a fresh batch each step (detection patches); each
  rank draws its share of the global batch from its own seeded stream.

A ``transform(x, y, extras, rng)`` hook (augmentation, modality dropout) runs on each rank's share
with that rank's NumPy generator. Sources save and restore their random state for resuming.

Example:
    >>> import torch
    >>> src = ArrayBatches(torch.arange(10.0)[:, None], torch.arange(10), batch_size=4, seed=0)
    >>> len(src), [b.n for b in src.epoch()]
    (3, [4, 4, 2])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medanomaly.errors import InputError
from medanomaly.train.distributed import DistContext, shard

__all__ = ["Batch", "ArrayBatches", "SampledBatches", "rank_rng"]

#: ``transform(x, y, extras, rng) -> (x, y, extras)``: per-batch augmentation on a rank's share.
Transform = Callable[[Any, Any, dict[str, Any], np.random.Generator], tuple[Any, Any, dict[str, Any]]]


@dataclass
class Batch:
    """One rank's share of a training batch: inputs, targets, extra tensors (a presence mask...)
    and ``n``, the samples in this share (``total``: in the whole global batch)."""

    x: Any
    y: Any
    extras: dict[str, Any] = field(default_factory=dict)
    n: int = 0
    total: int = 0

    def to(self, device: str) -> Batch:
        """The batch on ``device`` (tensors only; a no-op on the CPU)."""
        if device == "cpu":
            return self
        extras = {k: v.to(device) if hasattr(v, "to") else v for k, v in self.extras.items()}
        return Batch(self.x.to(device), self.y.to(device), extras, self.n, self.total)


def rank_rng(seed: int, rank: int) -> np.random.Generator:
    """Rank 0 draws from ``default_rng(seed)`` (so a single process is unchanged), rank r from
    ``default_rng([seed, r])``: independent augmentation streams, reproducible per rank."""
    return np.random.default_rng(seed if rank == 0 else [seed, rank])


class ArrayBatches:
    """Epoch-wise batches of in-memory tensors (see the module docstring).

    Args:
        x / y: inputs (N, ...) and targets (N, ...), torch tensors.
        batch_size: GLOBAL samples per step (split over ranks).
        seed: seeds the (global) index stream and this rank's transform generator.
        ctx: the distributed context (default: one process).
        extras: further per-sample tensors (N, ...) cut alongside.
        weights: per-sample weights: draw N indices with replacement (class-balanced sampling).
        transform: per-batch hook on this rank's share.
        min_per_rank: a trailing batch that would give some rank fewer samples is dropped
            (2 for networks with batch norm over features).
    """

    def __init__(self, x: Any, y: Any, batch_size: int, seed: int = 0, ctx: DistContext | None = None,
                 extras: dict[str, Any] | None = None, weights: np.ndarray | None = None,
                 transform: Transform | None = None, min_per_rank: int = 1) -> None:
        import torch

        self.x, self.y, self.extras = x, y, dict(extras or {})
        self.batch_size, self.ctx = int(batch_size), ctx or DistContext()
        self.weights, self.transform = weights, transform
        self.minimum = max(1, min_per_rank) * self.ctx.world_size
        if self.batch_size < self.minimum:
            raise InputError(f"batch_size {batch_size} is too small for {self.ctx.world_size} process(es) "
                             f"(each needs at least {max(1, min_per_rank)} sample(s) per step)")
        self.generator = torch.Generator().manual_seed(int(seed))
        self.rng = rank_rng(int(seed), self.ctx.rank)

    def __len__(self) -> int:
        n = len(self.x)
        full, rest = divmod(n, self.batch_size)
        return full + (1 if rest >= self.minimum else 0)

    def epoch(self) -> Iterator[Batch]:
        """This epoch's batches (the permutation is drawn up front, as a single process does)."""
        import torch

        n = len(self.x)
        if self.weights is not None:
            w = torch.as_tensor(self.weights, dtype=torch.double)
            order = torch.multinomial(w, n, replacement=True, generator=self.generator)
        else:
            order = torch.randperm(n, generator=self.generator)
        for idx in order.split(self.batch_size):
            if len(idx) < self.minimum:
                return
            mine = shard(idx, self.ctx)
            x, y = self.x[mine], self.y[mine]
            extras = {k: v[mine] for k, v in self.extras.items()}
            if self.transform is not None:
                x, y, extras = self.transform(x, y, extras, self.rng)
            yield Batch(x, y, extras, n=len(mine), total=len(idx))

    def state(self) -> dict[str, Any]:
        """JSON-able random state (index stream and this rank's generator)."""
        return {"generator": self.generator.get_state().tolist(), "rng": self.rng.bit_generator.state}

    def load_state(self, state: dict[str, Any]) -> None:
        import torch

        self.generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
        self.rng.bit_generator.state = state["rng"]


class SampledBatches:
    """Step-wise batches from a sampler (detection patches; see the module docstring).

    Args:
        sample: ``sample(rng, n) -> (x, y)`` NumPy arrays (or tensors) of n samples.
        batch_size: GLOBAL samples per step (each rank draws its share).
        steps_per_epoch: steps that make one epoch (validation, checkpoint and log cadence).
        seed / ctx: see :class:`ArrayBatches`.
    """

    def __init__(self, sample: Callable[[np.random.Generator, int], tuple[Any, Any]], batch_size: int,
                 steps_per_epoch: int, seed: int = 0, ctx: DistContext | None = None) -> None:
        self.sample, self.batch_size, self.steps = sample, int(batch_size), int(steps_per_epoch)
        self.ctx = ctx or DistContext()
        if self.batch_size < self.ctx.world_size or self.steps < 1:
            raise InputError(f"batch_size {batch_size} and steps {steps_per_epoch} must be at least "
                             f"{self.ctx.world_size} and 1")
        self.share = len(np.array_split(np.arange(self.batch_size), self.ctx.world_size)[self.ctx.rank])
        self.rng = rank_rng(int(seed), self.ctx.rank)

    def __len__(self) -> int:
        return self.steps

    def epoch(self) -> Iterator[Batch]:
        import torch

        for _ in range(self.steps):
            x, y = self.sample(self.rng, self.share)
            x, y = torch.as_tensor(x), torch.as_tensor(y)
            yield Batch(x, y, {}, n=len(x), total=self.batch_size)

    def state(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
