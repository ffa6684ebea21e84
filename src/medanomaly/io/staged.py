"""Image files written all-or-nothing, whatever library writes them.

SimpleITK writes an image straight to its path: a write that fails half-way (full disk, Ctrl-C, a
killed process) leaves a cut file, and an earlier file of that name is already gone. Here the writer
gets the same file name inside a fresh hidden folder beside the target (same file system); only
when it has finished are its files fsynced and moved into place with ``os.replace``, each file
whole, the named file last (a detached header such as ``.nhdr`` / ``.mhd`` names its data file,
which is moved first). On failure the hidden folder is removed and the old file is untouched.

A full disk counts as a failure even when the writer does not say so: ITK's NIfTI writer (``.nii`` and
``.nii.gz``) and its transform writer print ``** ERROR: NWAD: wrote only 0 of N bytes`` and return normally,
leaving a cut file that was then moved into place and reported as written. A file system left with less than
:data:`FULL_BELOW_BYTES` free after the write is therefore treated as "No space left on device", and a file as large
as the process may write one (``ulimit -f``) as "File too large".

Example:
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> write_staged(target, lambda p: p.write_text("whole")).read_text()
    'whole'
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medanomaly.errors import named_os_error

__all__ = ["FULL_BELOW_BYTES", "disk_full", "save_figure", "write_safetensors", "write_staged"]

#: Free space (bytes) under which a file system is taken to have filled during a write: a writer that stopped
#: short left at most one of its buffers unwritten (the kernel fills the last block before ENOSPC).
FULL_BELOW_BYTES = 64 << 10


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def disk_full(folder: Path | int) -> bool:
    """True when ``folder``'s (or an open file descriptor's) file system has less than :data:`FULL_BELOW_BYTES` left
    for this process (root may use the blocks a file system reserves; others may not). A file system that reports no size at all (some FUSE
    mounts answer zeros) is never taken for full."""
    if not hasattr(os, "statvfs"):
        return False
    st = os.statvfs(folder)
    if st.f_blocks == 0:
        return False
    blocks = st.f_bfree if os.geteuid() == 0 else st.f_bavail
    return blocks * st.f_frsize < FULL_BELOW_BYTES


def _refuse_cut_files(stage: Path, path: Path) -> None:
    """Raise "No space left on device" when the stage's file system is full, or "File too large" when one of its
    files is as large as this process may write one (``ulimit -f``, RLIMIT_FSIZE: Python ignores SIGXFSZ, and ITK's
    NIfTI writer stopped there without an error: a cut ``.nii.gz`` was reported as written), naming ``path``."""
    import resource

    if disk_full(stage):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if soft != resource.RLIM_INFINITY and any(f.stat().st_size >= soft for f in stage.rglob("*") if f.is_file()):
        raise OSError(errno.EFBIG, f"{os.strerror(errno.EFBIG)} (the file size limit, ulimit -f)", str(path))


#: How much of the file's name its hidden staging folder keeps: the full name plus ``.``, 8 random characters and
#: ``.part`` went over 255 bytes for a name of 241 that the file system takes ("File name too long" after the work).
STAGE_NAME_CHARS = 100


def write_staged(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(staged_path)``, then move what it wrote to ``path``'s folder.

    Args:
        path: the final file; its folder is created.
        write: writes the file (and any companion files, also in sub-folders, which are merged into those of
            ``path``'s folder) at the path it is given, which has ``path``'s name.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        stage = Path(tempfile.mkdtemp(prefix=f".{path.name[:STAGE_NAME_CHARS]}.", suffix=".part", dir=path.parent))
    except OSError as exc:  # name the file asked for, not the hidden folder
        raise named_os_error(exc, path) from None
    try:
        try:
            write(stage / path.name)
        except Exception:  # noqa: BLE001 - NRRD's writer says "corrupt compressed data" when cut short by ulimit -f
            _refuse_cut_files(stage, path)
            raise
        named = stage / path.name
        written = sorted((p for p in stage.rglob("*") if not p.is_dir()), key=lambda p: p == named)  # named last
        for file in written:
            _fsync(file)
        _refuse_cut_files(stage, path)  # a writer may have stopped short without an error (module docstring)
        for file in written:
            target = path.parent / file.relative_to(stage)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(file, target)
    except OSError as exc:
        raise named_os_error(exc, path) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return path


def save_figure(fig: Any, path: str | Path, dpi: int = 120, **options: Any) -> Path:
    """Write a matplotlib figure all-or-nothing (:func:`write_staged`; PNG unless ``path`` says otherwise), then
    close it in pyplot, if pyplot made it, whether or not the write succeeded; ``options`` go to ``savefig``."""
    try:
        return write_staged(path, lambda staged: fig.savefig(staged, dpi=dpi, **options))
    finally:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            pyplot.close(fig)


def write_safetensors(path: str | Path, save: Callable[[str], Any]) -> Path:
    """Write a safetensors file all-or-nothing: ``save(staged_path)`` is safetensors' own ``save_file`` (torch or
    NumPy) bound to its tensors. The file gets the permissions of any new file (safetensors makes it 0600: weights
    unreadable by the rest of a team), and safetensors' I/O errors (``Error while serializing: I/O error: No space
    left on device (os error 28)``, a traceback before) become the OSError they report, naming ``path``."""
    from safetensors import SafetensorError

    from medanomaly.jsonio import new_file_mode

    def write(staged: Path) -> None:
        try:
            save(str(staged))
        except SafetensorError as exc:
            found = re.search(r"\(os error (\d+)\)", str(exc))
            code = int(found.group(1)) if found else errno.EIO
            raise OSError(code, os.strerror(code), str(path)) from None
        os.chmod(staged, new_file_mode())

    return write_staged(path, write)
