"""``itk_threads``: ITK's global default thread count is process-wide, so blocks in Python threads of one process
share it when they ask the same count, wait when they ask another, and the default comes back when the last leaves."""

from __future__ import annotations

import threading

import pytest

from medanomaly.preprocess.registration import itk_threads


@pytest.fixture
def default_three():
    import SimpleITK as sitk

    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(3)
    yield sitk.ProcessObject
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


def test_blocks_of_one_count_overlap_and_the_default_returns_when_the_last_leaves(default_three):
    """The first block leaves while the second still runs (not last in, first out): the second keeps its count."""
    second_in, first_left = threading.Event(), threading.Event()
    seen = []

    def second() -> None:
        with itk_threads(1):
            second_in.set()
            assert first_left.wait(10)
            seen.append(default_three.GetGlobalDefaultNumberOfThreads())

    worker = threading.Thread(target=second)
    with itk_threads(1):
        worker.start()
        assert second_in.wait(10)
    first_left.set()
    worker.join(10)
    assert seen == [1] and default_three.GetGlobalDefaultNumberOfThreads() == 3


def test_a_block_of_another_count_waits_for_the_others_to_leave(default_three):
    first_in = threading.Event()
    seen = []

    def other() -> None:
        first_in.wait()
        with itk_threads(2):
            seen.append(default_three.GetGlobalDefaultNumberOfThreads())

    worker = threading.Thread(target=other)
    worker.start()
    with itk_threads(1):
        first_in.set()
        worker.join(0.3)
        assert worker.is_alive() and seen == []  # waiting: the default is 1 while this block runs
        assert default_three.GetGlobalDefaultNumberOfThreads() == 1
    worker.join(10)
    assert seen == [2] and default_three.GetGlobalDefaultNumberOfThreads() == 3


def test_a_nested_block_of_another_count_is_refused_not_a_deadlock(default_three):
    with itk_threads(1):
        with itk_threads(1):  # the same count nests
            pass
        with pytest.raises(RuntimeError, match="inside itk_threads"):
            with itk_threads(2):
                pass
        assert default_three.GetGlobalDefaultNumberOfThreads() == 1
    assert default_three.GetGlobalDefaultNumberOfThreads() == 3
