"""The ``medanomaly`` typer app.

Each command module in :data:`COMMAND_MODULES` defines ``register(app)`` and adds its commands;
heavy libraries are imported inside the commands, so ``medanomaly --help`` stays fast.
Errors raised on purpose (:class:`medanomaly.errors.MedanomalyError`) print one line and exit 2.
"""

from __future__ import annotations

import errno
import importlib
import io
import os
import sys
from pathlib import Path
from typing import NoReturn

import typer

from medanomaly.errors import MedanomalyError, Terminated, out_of_memory, printable

COMMAND_MODULES: tuple[str, ...] = (
    "medanomaly.cli.runs",
    "medanomaly.cli.preprocess",
    "medanomaly.cli.info",
    "medanomaly.cli.demo",
    "medanomaly.cli.predict",
    "medanomaly.cli.deid",
    "medanomaly.cli.explain",
    "medanomaly.cli.lung",
    "medanomaly.cli.fusion",
    "medanomaly.cli.serve",
    "medanomaly.cli.export",
    "medanomaly.cli.pacs",
    "medanomaly.cli.listen",
)

app = typer.Typer(
    name="medanomaly",
    help="Deep-learning anomaly detection in medical images.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)



@app.callback()
def _every_command() -> None:
    """Before any command: pydicom's warnings about odd-but-readable headers (multi-line, with
    source lines, quoting header values) and the DICOM libraries' log messages are silenced; what matters
    (skipped files, refusals) medanomaly reports itself, one line each."""
    from medanomaly.io.library_logs import quiet_image_libraries

    quiet_image_libraries()  # pydicom also logs the values it warns about: a birth date, a name


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def main() -> None:
    """Console entry point: run the app, turning expected errors into one line and exit code 2.

    Standard output writes what it cannot encode as backslash escapes, as standard error always does: a file name
    that is not UTF-8 (byte 0xFF, a lone surrogate to Python) in a result line was a UnicodeEncodeError traceback
    under a strict locale such as ``en_US.UTF-8``, after the outputs had been written.
    """
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        app()
    except MedanomalyError as exc:
        typer.echo(f"error: {printable(str(exc))}", err=True)  # a file name cannot split the line
        sys.exit(2)
    except Terminated as exc:  # SIGTERM in a training (its run folder marked failed), an archive batch or a deid
        typer.echo(f"error: {exc}", err=True)
        _exit_at_once(128 + 15)
    except OSError as exc:
        if exc.errno == errno.ENOMEM:  # fork or mmap refused
            _exit_out_of_memory("not enough memory (the system refused more)")
        if not _os_error_line(exc):  # not about a path the user gave (a socket, a library): a real failure, whole
            raise
        sys.exit(2)
    except (MemoryError, RuntimeError) as exc:
        reason = out_of_memory(exc)
        if reason is None:
            raise
        _exit_out_of_memory(reason)


def _exit_at_once(code: int) -> NoReturn:
    """Exit with ``code`` without the interpreter's teardown, once what was done is written (the run marked failed,
    the records whole) and said: after SIGTERM, native threads still running (torch's, a loader's) raced the
    finalization, and the process sometimes died of "Fatal Python error: PyThreadState_Get" (SIGABRT, exit -6) after
    its line, instead of exiting 143 (1 fresh-clone CI run in ~40)."""
    import logging
    import os

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more to say there
            pass
    os._exit(code)


def _exit_out_of_memory(reason: str) -> NoReturn:
    """One line for an allocation that failed outside any one input file (an input's names the file: see
    :func:`medanomaly.errors.about_file`), with what this process may still take, exit 2."""
    from medanomaly.io.limits import format_bytes
    from medanomaly.io.memory import available_memory_bytes

    left = available_memory_bytes()
    room = f"about {format_bytes(left)} is left to this process" if left is not None else "how much is left is unknown"
    typer.echo(f"error: {reason}: {room} (the least of the system's available memory, a container's limit and "
               "ulimit -v); give the work less (a smaller image, batch or grid) or the process more", err=True)  # fmt: skip
    sys.exit(2)


def _os_error_line(exc: OSError) -> bool:
    """Print the one line for an OSError about standard output, a full disk, or a path the user gave (missing, in
    the way, read-only or full); False when it is about none of them."""
    if exc.filename is None and _stdout_failed(exc):  # `> /dev/full`, a full disk under `> out.txt`
        sys.stdout = io.StringIO()  # nothing more to print: the exit's flush must not fail
        typer.echo(f"error: standard output: {exc.strerror or exc} (the results could not be printed)", err=True)
        return True
    if exc.filename is None and exc.errno in (errno.ENOSPC, errno.EDQUOT):  # a library's write named no file
        typer.echo(f"error: {exc.strerror or exc} (the disk of an output folder is full)", err=True)
        return True
    if exc.filename is None:
        return False
    reason = exc.strerror or str(exc)
    if isinstance(exc, FileExistsError) and Path(exc.filename).is_file():  # mkdir where a file is in the way
        reason = "is a file, where a folder is needed"
    typer.echo(printable(f"error: {exc.filename}: {reason}"), err=True)
    return True


def _stdout_failed(exc: OSError) -> bool:
    """Whether ``exc`` (an error naming no file) is standard output's: ``> /dev/full`` (a character device: a
    terminal is never full) or a file on a full disk (``> out.txt``). It had said "the disk of an output folder is
    full" for ``info > /dev/full``. (A reader gone from the pipe, ``| head -1``, is click's: exit 1, no word.)"""
    import stat

    from medanomaly.io.staged import disk_full

    try:
        fd = sys.stdout.fileno()
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError, AttributeError):  # closed, or not a file
        return False
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return stat.S_ISCHR(mode) or (stat.S_ISREG(mode) and disk_full(fd))
    return False


if __name__ == "__main__":
    main()
