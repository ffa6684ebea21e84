"""Worker functions that die, for the batch tests (imported by name in spawned worker processes)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from medanomaly.privacy.deid import _work as _real_work  # bound before any test patches deid._work


def work_or_die(path: Path, fid: str, key: bytes, config, out_dir: Path):
    """``kill_me*`` kills its worker every time, ``kill_once*`` only the first time (a marker file
    beside the input folder remembers); the others are de-identified as usual."""
    if path.name.startswith("kill_me"):
        os.kill(os.getpid(), signal.SIGKILL)
    if path.name.startswith("kill_once"):
        marker = path.parent.parent / f"{path.name}.killed"
        if not marker.exists():
            marker.write_text("x")
            os.kill(os.getpid(), signal.SIGKILL)
    return _real_work(path, fid, key, config, out_dir)


def square_or_die(x: int) -> int:
    """``x * x``; the worker computing 13 dies."""
    if x == 13:
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x


def always_die(*_args):
    """A worker that can never finish (as when worker processes cannot start)."""
    os.kill(os.getpid(), signal.SIGKILL)
