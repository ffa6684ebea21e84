"""The registration's child process (``register --max-minutes``) reports running out of memory as the one-line
error it is, naming the moving image; it was a crash the parent raised as a traceback."""

from __future__ import annotations

import os
import queue

from medanomaly.preprocess import registration_files


def _answer_of(monkeypatch, failure: BaseException) -> tuple:
    def register_files(*args, **kwargs):
        raise failure

    monkeypatch.setattr(registration_files, "register_files", register_files)
    monkeypatch.setattr("medanomaly.io.library_logs.quiet_image_libraries", lambda: None)
    answers: queue.Queue = queue.Queue()
    registration_files._child(answers, os.getppid(), "fixed.nii.gz", "moving.nii.gz", "out.nii.gz", ["rigid"], "mi")
    return answers.get_nowait()


def test_out_of_memory_in_the_child_is_an_error_naming_the_moving_image(monkeypatch):
    failed = RuntimeError("Exception thrown in SimpleITK Execute: itkImportImageContainer.hxx:179:\n"
                          "Failed to allocate memory for image.")  # fmt: skip
    assert _answer_of(monkeypatch, failed) == ("error", "not enough memory (an allocation failed)", "moving.nii.gz")


def test_any_other_failure_in_the_child_stays_a_crash(monkeypatch):
    assert _answer_of(monkeypatch, ValueError("odd")) == ("crash", "ValueError: odd")


def test_a_child_killed_outright_is_one_line_not_a_crash():
    """In a container the kernel's OOM killer ends the child with SIGKILL: that was a RuntimeError traceback ("the
    process ended without an answer (exit code -9)")."""
    import signal
    import time

    class Gone:
        exitcode = -signal.SIGKILL

        def is_alive(self) -> bool:
            return False

    answer = registration_files._wait(queue.Queue(), Gone(), time.monotonic() + 5)
    assert answer[0] == "error" and "killed (SIGKILL: the system may have run out of memory)" in answer[1]
    Gone.exitcode = 1
    assert registration_files._wait(queue.Queue(), Gone(), time.monotonic() + 5)[0] == "crash"
