"""Choose torch's CPU thread count by timing real training steps (``train.threads: auto``).

More threads are not always faster: on an idle 2-core machine two torch threads train the lung detector about
1.4x faster than one (4.0 against 2.8-3.1 steps a second, demo config), but where another process holds a core
the two OpenMP threads wait on each other and a step takes 4-5x longer (docs/lung_nodules_runs.md). So the count is
measured, not guessed: the first steps of the run itself are timed with each candidate in turn (``steps_each``
steps each, the first of each a warm-up), and the fastest by median step time is kept for the rest of the run.
The probe steps are ordinary training steps; nothing is repeated. A step during which something else ran (a
validation between two steps: :meth:`ThreadProbe.discard`) is not counted.

Example:
    >>> ticks = iter([0.0, 1.0, 1.5, 2.0, 2.5, 3.5, 4.5])  # 0.5 s steps with 2 threads, 1 s with 1
    >>> probe = ThreadProbe((2, 1), steps_each=3, clock=lambda: next(ticks), set_threads=lambda n: None)
    >>> for _ in range(7):
    ...     probe.on_step()
    >>> probe.chosen, probe.step_seconds
    (2, {2: 0.5, 1: 1.0})
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

from medanomaly.processes import usable_cpus

__all__ = ["ThreadProbe", "thread_candidates"]


def thread_candidates(cap: int = 4) -> tuple[int, ...]:
    """The thread counts worth timing: the CPUs this process may use (at most ``cap``) and 1."""
    return tuple(sorted({1, max(1, min(cap, usable_cpus()))}, reverse=True))


class ThreadProbe:
    """Times the first steps of a run with each candidate thread count, then keeps the fastest.

    Call :meth:`on_step` at the start of every training step, and :meth:`discard` when something other than
    training ran since the last one (a validation). After ``steps_each x len(candidates)`` steps ``chosen``
    holds the count kept (and set); before that it is None. ``step_seconds``: median seconds of a step per
    candidate (warm-up and discarded steps left out; a candidate with no step left is not chosen unless none has
    one, when the first candidate is kept).

    Args:
        candidates: thread counts to try, in order (one candidate: chosen at once, nothing timed).
        steps_each: steps per candidate (at least 2: the first is a warm-up).
        clock: seconds (wall clock).
        set_threads: sets the count (default ``torch.set_num_threads``).
    """

    def __init__(self, candidates: Sequence[int], steps_each: int = 4, clock: Callable[[], float] = time.perf_counter,
                 set_threads: Callable[[int], None] | None = None) -> None:  # fmt: skip
        if not candidates or steps_each < 2:
            raise ValueError("a thread probe needs at least one candidate and two steps each")
        self.candidates = [int(c) for c in candidates]
        self.steps_each, self.clock = int(steps_each), clock
        self._set = set_threads or _torch_set_threads
        self._times: dict[int, list[float]] = {c: [] for c in self.candidates}
        self._step, self._last, self._discard = 0, 0.0, False
        self.chosen: int | None = None
        self.step_seconds: dict[int, float] = {}
        if len(self.candidates) == 1:
            self.chosen = self.candidates[0]

    @property
    def probe_steps(self) -> int:
        """Steps the probe times before it chooses."""
        return 0 if len(self.candidates) == 1 else self.steps_each * len(self.candidates)

    def discard(self) -> None:
        """Leave the step now running out of the timing (something else ran during it)."""
        self._discard = True

    def on_step(self) -> None:
        """Record the step that just ended (if it is timed) and set the count for the one that starts."""
        if self.chosen is not None:
            return
        now = self.clock()
        done = self._step - 1  # the step that just ended
        if done >= 0 and done % self.steps_each > 0 and not self._discard:
            self._times[self.candidates[done // self.steps_each]].append(now - self._last)
        self._discard = False
        if self._step < self.probe_steps:
            self._set(self.candidates[self._step // self.steps_each])
        else:
            self.step_seconds = {c: statistics.median(t) for c, t in self._times.items() if t}
            timed = [c for c in self.candidates if c in self.step_seconds]
            self.chosen = min(timed, key=lambda c: self.step_seconds[c]) if timed else self.candidates[0]
            self._set(self.chosen)
        self._last = now
        self._step += 1


def _torch_set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(int(n))
