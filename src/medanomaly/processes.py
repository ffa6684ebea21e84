"""Processes: whether one runs (the one test behind every lock and leftover that names the process that made it: a
training's lock and status, a de-identification's temporary files, an archive batch's folders of links), and how many
CPUs this one may use.

Example:
    >>> import os
    >>> pid_alive(os.getpid()), pid_alive(0)
    (True, False)
"""

from __future__ import annotations

import os

__all__ = ["pid_alive", "usable_cpus"]


def pid_alive(pid: int) -> bool:
    """True when a process with this id exists on this machine (a zombie counts as alive, and so does another user's
    process, which this one may not signal)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: a container's or ``taskset``'s share, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
