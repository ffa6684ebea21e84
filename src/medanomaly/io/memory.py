"""How much more memory this process may take (bytes), for the checks made before the work.

The system's ``MemAvailable`` alone overstates it wherever the process is held to less than the machine has: in a
container (Docker ``--memory``, a Kubernetes limit, a systemd slice: a cgroup, whose limit the kernel enforces with
the OOM killer, exit 137 and not a word) or under ``ulimit -v`` / ``ulimit -d`` (an address-space or data limit: the
allocation fails, numpy's ``MemoryError``). :func:`available_memory_bytes` is the least of the three. A cgroup's use
is counted as Kubernetes counts its working set: usage less the inactive file cache, which the kernel reclaims
before it kills.

Example:
    >>> headroom = available_memory_bytes()
    >>> headroom is None or headroom >= 0
    True
"""

from __future__ import annotations

import os
from pathlib import Path

#: A cgroup v1 limit at or above this is "no limit" (the kernel writes 2**63 - 4096 for unlimited).
_V1_UNLIMITED = 1 << 60


def available_memory_bytes() -> int | None:
    """The memory this process may still take without being killed or refused (bytes): the least of the system's
    ``MemAvailable``, its cgroup's remaining limit (v1 or v2, the tightest of its ancestors) and what ``ulimit -v`` /
    ``ulimit -d`` still leave; None when none of them can be read."""
    known = [v for v in (system_available(), cgroup_headroom(), rlimit_headroom()) if v is not None]
    return max(0, min(known)) if known else None


def system_available(proc: Path = Path("/proc")) -> int | None:
    """Memory the system can still give without swapping (Linux ``MemAvailable``, bytes), else the free physical
    pages; None when neither can be read."""
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def cgroup_headroom(proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """What this process's memory cgroup still allows (bytes): its limit less its working set, the least over the
    cgroup and its ancestors; None without a memory limit (or on a system without cgroups)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    room: list[int] = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":  # v2: one unified hierarchy
            room += [r for d in _levels(root, path) if (r := _v2_room(d)) is not None]
        elif "memory" in controllers.split(","):
            room += [r for d in _levels(root / "memory", path) if (r := _v1_room(d)) is not None]
    return min(room) if room else None


def _levels(mount: Path, path: str) -> list[Path]:
    """The cgroup's folder under ``mount`` and its ancestors up to the mount; the mount alone when the process's path
    is not there (a container that sees its own cgroup as the root)."""
    parts = [p for p in path.strip().split("/") if p not in ("", ".", "..")]
    levels = [mount.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]
    return [d for d in levels if d.is_dir()] or [mount]


def _v2_room(folder: Path) -> int | None:
    """``memory.max`` less the working set of one v2 cgroup; None when it has no limit."""
    limit = _read_int(folder / "memory.max")
    usage = _read_int(folder / "memory.current")
    if limit is None or usage is None:
        return None
    return limit - max(0, usage - _stat(folder / "memory.stat", "inactive_file"))


def _v1_room(folder: Path) -> int | None:
    """``memory.limit_in_bytes`` less the working set of one v1 cgroup; None when it has no limit."""
    limit = _read_int(folder / "memory.limit_in_bytes")
    usage = _read_int(folder / "memory.usage_in_bytes")
    if limit is None or usage is None or limit >= _V1_UNLIMITED:
        return None
    return limit - max(0, usage - _stat(folder / "memory.stat", "total_inactive_file"))


def _read_int(path: Path) -> int | None:
    """The integer in a cgroup file; None when missing, unreadable or ``max`` (no limit)."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _stat(path: Path, key: str) -> int:
    """One counter of a cgroup's ``memory.stat`` (bytes); 0 when missing."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def rlimit_headroom(status: Path = Path("/proc/self/status")) -> int | None:
    """What ``ulimit -v`` (RLIMIT_AS, against the process's virtual size) and ``ulimit -d`` (RLIMIT_DATA, against its
    data segments) still leave (bytes), the lesser; None when neither is set."""
    import resource

    room = []
    for limit_kind, field in ((resource.RLIMIT_AS, "VmSize"), (resource.RLIMIT_DATA, "VmData")):
        soft = resource.getrlimit(limit_kind)[0]
        used = _status_kib(status, field)
        if soft != resource.RLIM_INFINITY and used is not None:
            room.append(soft - used * 1024)
    return min(room) if room else None


def _status_kib(status: Path, field: str) -> int | None:
    """A ``/proc/self/status`` size field (kB); None when it cannot be read."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None
