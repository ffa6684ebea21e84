"""The temporary folders of links through which an archive's multi-file DICOM series are read, and what a killed
batch leaves of them.

:func:`~medanomaly.deploy.archive.read_series` reads a series whose files lie anywhere in the archive through a
folder of links to exactly its files (``$TMPDIR/medanomaly-series-<pid>-<random>``). The folder is removed when
the read ends, also on an error or SIGTERM; a process killed outright (SIGKILL, the out-of-memory killer, a power
cut) cannot remove it. The process id in the name lets the next batch on this machine find such folders:
:func:`remove_orphaned_series_links` removes those of processes that no longer run, when they hold nothing but
links (links only: the files they point to are the archive's, never touched).

Example:
    >>> with series_links_folder() as tmp:  # doctest: +SKIP
    ...     os.symlink("/archive/a/1.dcm", os.path.join(tmp, "000000.dcm"))
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from medanomaly.processes import pid_alive

PREFIX = "medanomaly-series-"
_ORPHAN = re.compile(re.escape(PREFIX) + r"(\d+)-")


def series_links_folder() -> tempfile.TemporaryDirectory:
    """A new, empty temporary folder for one series' links, named by this process (see the module's text)."""
    return tempfile.TemporaryDirectory(prefix=f"{PREFIX}{os.getpid()}-")


def remove_orphaned_series_links(root: str | Path | None = None) -> int:
    """Remove the link folders (in ``root``, default the temporary folder) left by processes that no longer run;
    returns how many were removed. A folder of another user, of a running process, or holding anything but links
    is left as it is."""
    root = Path(root or tempfile.gettempdir())
    removed = 0
    try:
        candidates = [entry for entry in os.scandir(root) if _ORPHAN.match(entry.name)]
    except OSError:
        return 0
    for entry in candidates:
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
            if pid_alive(int(_ORPHAN.match(entry.name)[1])):  # type: ignore[index]
                continue
            links = list(os.scandir(entry.path))
            if not all(link.is_symlink() for link in links):
                continue
            for link in links:
                os.unlink(link.path)
            os.rmdir(entry.path)
            removed += 1
        except OSError:  # gone meanwhile, or not ours to remove
            continue
    return removed
