"""The thread probe: times real training steps with each candidate count, keeps the fastest, then stays out of the way."""

from __future__ import annotations

import pytest

from medanomaly.train.thread_probe import ThreadProbe, thread_candidates


def _run(step_seconds: dict[int, float], candidates=(2, 1), steps_each: int = 3, steps: int = 12):
    """Drive a probe over ``steps`` steps whose duration depends on the thread count in force; return it and the
    counts set, in order."""
    state = {"t": 0.0, "threads": 1}
    sets: list[int] = []

    def set_threads(n: int) -> None:
        state["threads"] = n
        sets.append(n)

    probe = ThreadProbe(candidates, steps_each=steps_each, clock=lambda: state["t"], set_threads=set_threads)
    for _ in range(steps):
        probe.on_step()
        state["t"] += step_seconds[state["threads"]]
    return probe, sets


@pytest.mark.parametrize(("seconds", "kept"), [({2: 0.25, 1: 0.35}, 2), ({2: 1.6, 1: 0.35}, 1)])
def test_probe_keeps_the_faster_count_and_sets_it_once_more_only(seconds: dict[int, float], kept: int) -> None:
    probe, sets = _run(seconds)
    assert probe.chosen == kept
    assert probe.step_seconds == pytest.approx(seconds)
    assert sets == [2, 2, 2, 1, 1, 1, kept]  # 3 steps each, then the choice; later steps set nothing


def test_probe_with_one_candidate_chooses_it_at_once_and_a_short_run_chooses_nothing() -> None:
    probe, sets = _run({1: 0.3}, candidates=(1,))
    assert probe.chosen == 1 and sets == [] and probe.probe_steps == 0
    short, _ = _run({2: 0.2, 1: 0.3}, steps=4)
    assert short.chosen is None  # the training stopped before the probe finished: the caller falls back to 1
    with pytest.raises(ValueError, match="two steps each"):
        ThreadProbe((2, 1), steps_each=1)


def test_candidates_are_the_usable_cpus_capped_and_one() -> None:
    candidates = thread_candidates(cap=4)
    assert candidates[-1] == 1 and all(1 <= c <= 4 for c in candidates)
    assert list(candidates) == sorted(set(candidates), reverse=True)


def test_a_validation_inside_the_probe_is_not_counted_as_a_step() -> None:
    """A 30 s validation after the second 2-thread step would make 2 threads look slower than 1 if it were timed."""
    state = {"t": 0.0, "threads": 1}
    probe = ThreadProbe((2, 1), steps_each=3, clock=lambda: state["t"],
                        set_threads=lambda n: state.update(threads=n))  # fmt: skip
    seconds = {2: 0.25, 1: 0.35}
    for step in range(8):
        probe.on_step()
        state["t"] += seconds[state["threads"]]
        if step == 1:
            probe.discard()
            state["t"] += 30.0
    assert probe.chosen == 2 and probe.step_seconds == pytest.approx(seconds)


def test_every_step_discarded_keeps_the_first_candidate() -> None:
    state = {"t": 0.0}
    probe = ThreadProbe((2, 1), steps_each=2, clock=lambda: state["t"], set_threads=lambda n: None)
    for _ in range(5):
        probe.on_step()
        probe.discard()
        state["t"] += 1.0
    assert probe.chosen == 2 and probe.step_seconds == {}


def test_a_run_on_a_gpu_is_not_probed_and_inference_then_uses_the_machines_cpus(monkeypatch) -> None:
    """On a GPU the probe would time the GPU's steps (G1: 9.6 ms with 4 threads or 1), and its pick, 1, was then
    the CPU thread count of every later CPU inference with the run. Now a GPU run leaves ``"auto"``, which at
    inference is the CPUs this process may use (at most 4)."""
    import torch

    from medanomaly.detect.generic import thread_probe, torch_threads

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert isinstance(thread_probe("auto"), ThreadProbe) and thread_probe(2) is None  # a CPU machine
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine, as train.device "auto" sees it
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert thread_probe("auto") is None
    before = torch.get_num_threads()
    with torch_threads("auto"):
        assert torch.get_num_threads() == thread_candidates()[0]
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
