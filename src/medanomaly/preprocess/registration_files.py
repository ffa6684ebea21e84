"""``medanomaly register`` on files: read and check both images, register, write the resampled image and the
transform, optionally within a time budget.

ITK's optimisers run inside one native call per level, and its L-BFGS-B (the B-spline stage) ignores
``StopRegistration``: a three-stage registration of two brains ran over 6 minutes with no way to stop it but the
process. :func:`register_files_within` therefore runs the registration in a child process and stops that process
at the deadline: one line, exit 2, the outputs not written (they are written only when the registration is done).

Example:
    >>> summary = register_files("ct.nii.gz", "mr.nii.gz", "mr_on_ct.nii.gz", ["rigid"], "mattes")  # doctest: +SKIP
    >>> summary["transform"]  # doctest: +SKIP
    'mr_on_ct.tfm'
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medanomaly.errors import InputError, about_file, out_of_memory
from medanomaly.preprocess.registration import REGISTRATION_THREADS

__all__ = ["register_files", "register_files_within"]

#: Seconds the child is given to end after SIGTERM before it is killed.
TERMINATE_GRACE_S = 10.0


def register_files(fixed: str | Path, moving: str | Path, out: str | Path, stages: Sequence[str], metric: str,
                   progress: Callable[[str], None] | None = None,
                   frames: tuple[int | None, int | None] = (None, None), threads: int = REGISTRATION_THREADS) -> dict[str, Any]:  # fmt: skip
    """Register ``moving`` to ``fixed`` and write ``out`` and ``out``'s ``.tfm``; returns the summary (JSON-able).
    ``frames``: the frame (cine) or volume (4D image) of ``fixed`` and of ``moving`` to take, None for a 2D or 3D one;
    ``threads``: ITK threads (:data:`~medanomaly.preprocess.registration.REGISTRATION_THREADS`, 1: reproducible).

    Raises:
        InputError: an image registration cannot use, named by its file; a pair that does not fit, naming
            ``moving``.
    """
    from medanomaly.io import write
    from medanomaly.preprocess.registration import check_registrable, load_scalar, register, write_transform

    images = {}
    for role, path, frame in (("fixed", fixed, frames[0]), ("moving", moving, frames[1])):
        with about_file(path):  # each bad image is named by its file
            images[role] = load_scalar(path, frame=frame)
            check_registrable(images[role], role)
    with about_file(moving):  # what is left is a pair that does not fit: the moving image is named
        result = register(images["fixed"], images["moving"], stages=list(stages), metric=metric, progress=progress,
                          threads=threads)  # fmt: skip
    written = write(result.resampled, out)
    name = written.name
    stem = name[: -len("".join(written.suffixes))] if written.suffixes else name
    tfm = write_transform(result.transform, written.with_name(stem + ".tfm"))
    return {**result.summary(), "image": str(written), "transform": str(tfm)}


def register_files_within(minutes: float, fixed: str | Path, moving: str | Path, out: str | Path,
                          stages: Sequence[str], metric: str,
                          frames: tuple[int | None, int | None] = (None, None), threads: int = REGISTRATION_THREADS) -> dict[str, Any]:  # fmt: skip
    """:func:`register_files` in a child process stopped after ``minutes`` (its progress lines go to stderr).

    Raises:
        InputError: what :func:`register_files` raises, or the registration ran over ``minutes`` (the child is
            stopped; nothing is written), naming ``moving``.
    """
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked ITK or torch threads
    answers = context.Queue()
    child = context.Process(target=_child, args=(answers, os.getpid(), str(fixed), str(moving), str(out),
                                                 list(stages), metric, frames, threads), daemon=True)  # fmt: skip
    child.start()
    answer: tuple[Any, ...] = ("timeout",)
    try:
        answer = _wait(answers, child, time.monotonic() + minutes * 60.0)
    finally:
        _stop(child, grace=TERMINATE_GRACE_S if answer[0] != "timeout" else 0.0)
    if answer[0] == "timeout":
        raise InputError(f"registration did not finish within {minutes:g} minute(s) and was stopped; nothing was "
                         "written (give fewer stages, or more --max-minutes)", moving)  # fmt: skip
    if answer[0] == "error":
        raise InputError(answer[1], answer[2] or moving)
    if answer[0] == "crash":
        raise RuntimeError(f"registration failed in its process: {answer[1]}")
    return answer[1]


def _wait(answers: Any, child: Any, deadline: float) -> tuple[Any, ...]:
    """The child's answer, ``("timeout",)`` at the deadline, or ``("crash", ...)`` when it ended without one (killed
    by the system, a native crash)."""
    while time.monotonic() < deadline:
        try:
            return answers.get(timeout=min(1.0, max(deadline - time.monotonic(), 0.01)))
        except queue.Empty:
            if not child.is_alive():
                try:  # it may have answered just before it ended
                    return answers.get(timeout=1.0)
                except queue.Empty:
                    if child.exitcode == -signal.SIGKILL:  # the kernel's OOM killer, in a container above all
                        return ("error", "the registration's process was killed (SIGKILL: the system may have run "
                                "out of memory); nothing was written", None)  # fmt: skip
                    return ("crash", f"the process ended without an answer (exit code {child.exitcode})")
    return ("timeout",)


def _stop(child: Any, grace: float) -> None:
    """Let ``child`` end within ``grace`` seconds, else terminate it (SIGTERM), then kill it."""
    child.join(grace)
    if child.is_alive():
        child.terminate()
        child.join(TERMINATE_GRACE_S)
        if child.is_alive():
            child.kill()
    child.join()


def _child(answers: Any, parent: int, fixed: str, moving: str, out: str, stages: list[str], metric: str,
           frames: tuple[int | None, int | None] = (None, None), threads: int = REGISTRATION_THREADS) -> None:  # fmt: skip
    """The child's work: one answer on ``answers``, ``("done", summary)``, ``("error", reason, path)`` or
    ``("crash", what)``. It ends itself when its parent is gone (killed outright: no one would stop it)."""
    from medanomaly.io.library_logs import quiet_image_libraries

    quiet_image_libraries()  # a spawned interpreter starts without the CLI's: header values stay out of its stderr
    threading.Thread(target=_end_with_parent, args=(parent,), daemon=True).start()

    def say(line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    try:
        answers.put(("done", register_files(fixed, moving, out, stages, metric, progress=say, frames=frames,
                                            threads=threads)))  # fmt: skip
    except InputError as exc:
        answers.put(("error", exc.reason, None if exc.path is None else str(exc.path)))
    except Exception as exc:  # noqa: BLE001 (reported to the parent, which raises it)
        reason = out_of_memory(exc)
        answers.put(("error", reason, moving) if reason else ("crash", f"{type(exc).__name__}: {exc}"))


def _end_with_parent(parent: int) -> None:
    """End this process (exit 1, nothing written) once ``parent`` is no longer its parent."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)
