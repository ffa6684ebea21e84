"""Errors users see. The CLI prints ``str(error)`` on one line and exits with code 2.

Messages name the file (never a patient) and the reason, e.g.
``lung1.dcm: truncated DICOM (pixel data ends early)``.
"""

from __future__ import annotations

import errno
import re
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: errno values meaning "this output folder cannot take more files" (full, over quota, read-only, not ours).
OUTPUT_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


class MedanomalyError(Exception):
    """Base class for every error medanomaly raises on purpose."""


class InputError(MedanomalyError, ValueError):
    """Bad input: a file, folder, config or argument that cannot be used.

    Args:
        reason: what is wrong, in plain words.
        path: the offending file or folder (shown by name, relative where possible).
    """

    def __init__(self, reason: str, path: str | Path | None = None) -> None:
        self.reason = reason
        self.path = Path(path) if path is not None else None
        super().__init__(f"{self.path}: {reason}" if self.path is not None else reason)


class Terminated(BaseException):
    """The process received SIGTERM (a scheduler, a container stop, ``kill``) during a training, an archive batch or
    a de-identification: raised in the main thread by :func:`sigterm_raises`, so a run folder is marked failed instead
    of staying "running" with no process behind it, and a batch says what it kept. A BaseException, as
    KeyboardInterrupt, so no ``except Exception`` takes it."""


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`medanomaly.errors.Terminated` in the main thread (elsewhere, where no
    handler can be set, nothing changes); the previous handler comes back after it."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum: int, frame: object) -> None:
        raise Terminated("terminated (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class ConfigError(InputError):
    """A config that does not validate (unknown name, wrong type, missing field)."""


@contextmanager
def about_file(path: str | Path, kind: type[InputError] = InputError) -> Iterator[None]:
    """Inside the block, an :class:`InputError` (or only the narrower ``kind``, e.g. :class:`ConfigError`)
    raised without a file (e.g. "image has 1 NaN voxel", raised deep in a check) names ``path``, the input
    being worked on.

    Example:
        >>> try:
        ...     with about_file("scan.nii.gz"):
        ...         raise InputError("image has 1 NaN/infinite voxels")
        ... except InputError as exc:
        ...     print(exc)
        scan.nii.gz: image has 1 NaN/infinite voxels

    An allocation that fails inside the block (:func:`out_of_memory`) is an :class:`InputError` naming ``path``
    too: in a batch that file is reported and the rest go on.
    """
    try:
        yield
    except kind as exc:
        if exc.path is not None:
            raise
        raise type(exc)(exc.reason, path) from None
    except (MemoryError, RuntimeError) as exc:
        reason = out_of_memory(exc)
        if reason is None:
            raise
        traceback.clear_frames(exc.__traceback__)  # the failed work's arrays go now, not when the error does
        raise InputError(reason, path) from None


#: How the libraries say that an allocation failed: torch's CPU allocator ("can't allocate memory"), ITK ("Failed to
#: allocate memory for image"), C++ (``std::bad_alloc``), errno 12 ("Cannot allocate memory").
_ALLOCATION_FAILED = ("can't allocate memory", "failed to allocate memory", "bad_alloc", "cannot allocate memory")


def raise_if_out_of_memory(exc: BaseException) -> None:
    """Raise ``exc`` again when it is an allocation that failed (:func:`out_of_memory`): a reader's or a filter's
    catch-all must not call it a damaged file or a refused image (ITK says "Failed to allocate memory" for a file it
    reads well); :func:`about_file` and the CLI name it for what it is."""
    if out_of_memory(exc) is not None:
        raise exc


def out_of_memory(exc: BaseException) -> str | None:
    """The one-line reason when ``exc`` is an allocation that failed (numpy's ``MemoryError``, a RuntimeError from
    torch or ITK saying so), with its size where the library gave it; None for any other error.

    Example:
        >>> out_of_memory(MemoryError("Unable to allocate 150. MiB for an array with shape (600, 512, 512)"))
        'not enough memory (150 MiB could not be allocated)'
        >>> out_of_memory(RuntimeError("shape mismatch")) is None
        True
    """
    text = str(exc)
    if not isinstance(exc, MemoryError) and not any(m in text.lower() for m in _ALLOCATION_FAILED):
        return None
    numpy_size = re.search(r"Unable to allocate ([\d.]+)\.? ?([KMGTP]?i?B)", text)
    torch_bytes = re.search(r"tried to allocate (\d+) bytes", text)
    if numpy_size:
        size = f"{numpy_size.group(1).rstrip('.')} {numpy_size.group(2)}"
    elif torch_bytes:
        size = f"{int(torch_bytes.group(1)) / 2**20:.0f} MiB"
    else:
        return "not enough memory (an allocation failed)"
    return f"not enough memory ({size} could not be allocated)"


@contextmanager
def unfit_file(path: str | Path, what: str) -> Iterator[None]:
    """Inside the block, a saved file's values that do not build (not JSON, a wrong type, an unknown or
    missing key, a network that cannot be made: TypeError, ValueError, RuntimeError or KeyError) are one :class:`InputError`
    naming ``path``: ``<what> do not fit (<error type>: <its first line>)``, for a hand-edited or
    foreign file. An :class:`InputError` raised inside passes unchanged when it names a file, and is given
    ``path`` when it names none (e.g. a model size limit, raised far from the file that asked for it).

    Example:
        >>> try:
        ...     with unfit_file("detector.json", "detector parameters"):
        ...         float("x")
        ... except InputError as exc:
        ...     print(exc)
        detector.json: detector parameters do not fit (ValueError: could not convert string to float: 'x')
    """
    try:
        yield
    except InputError as exc:
        if exc.path is not None:
            raise  # already one line naming its file
        raise type(exc)(exc.reason, path) from None
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        raise InputError(f"{what} do not fit ({type(exc).__name__}: {first_reason(exc)})", path) from None


def named_os_error(exc: OSError, path: str | Path) -> OSError:
    """``exc`` (same errno and reason, so the same OSError subclass) naming ``path``: a write into a full disk, or a
    library's error about its own temporary file, names no file the user asked for."""
    return OSError(exc.errno, exc.strerror or str(exc), str(path))


def first_reason(exc: Exception) -> str:
    """The first line of an error; for pydantic's ValidationError (whose first line only counts the errors) the
    first error's field and message, e.g. ``grow_min_hu: Input should be a valid number`` (a validator's own
    sentence without the ``Value error,`` pydantic puts before it)."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError) and exc.errors():
        errors = exc.errors()
        error = errors[0]
        at = next((k for k, part in enumerate(error["loc"]) if k and _union_branch(part)), None)
        if at is not None:  # "spacing.float: Input should be a valid number", of [1, 1]: the union's first member
            return _union_reason(errors, at)
        return _error_line(error)
    return (str(exc).splitlines() or [""])[0]


def _error_line(error: Any, loc: tuple | None = None) -> str:
    """``field: message`` of one pydantic error (``loc`` in place of its own); a tuple's missing item says how many
    values were given (``patch_size: item 2 (counting from 0) is missing, got [8, 48]``, was "Field required")."""
    loc = tuple(error["loc"]) if loc is None else loc
    if error.get("type") == "missing" and loc and isinstance(loc[-1], int):
        field = ".".join(str(part) for part in loc[:-1])
        return f"{field}: item {loc[-1]} (counting from 0) is missing, got {error.get('input')!r}"
    field = ".".join(str(part) for part in loc)
    message = str(error["msg"]).removeprefix("Value error, ")
    message = re.sub(r" for <class '[^']*'>", "", message)  # "Input is not a valid path for <class 'pathlib.Path'>"
    message = re.sub(r"a valid dictionary or instance of \w+", "a mapping (key: value)", message)  # our class names
    return f"{field}: {message}" if field else message


_SCALAR_WORDS = {"float": "a number", "int": "a whole number", "str": "text", "bool": "true or false", "none": "null",
                 "constrained-int": "a whole number", "constrained-float": "a number"}
#: pydantic error types that mean the value is not of a union member's type (any other: it is, but out of bounds).
_TYPE_MISMATCH = ("_parsing", "_type", "literal_error", "missing", "too_long", "too_short")


def _union_branch(label: object) -> bool:
    """Whether a pydantic error location part names a member of a union type (``float``, ``tuple[float, float]``,
    ``constrained-int``, ``literal['auto']``) rather than a field or an index."""
    return isinstance(label, str) and (label in _SCALAR_WORDS or "[" in label)


def _member_words(label: str) -> str:
    """A union member's pydantic label in words: ``float`` -> a number, ``tuple[float, float, float]`` -> 3 numbers,
    ``tuple[constrained-float, ...]`` -> a list of numbers, ``literal['balanced','none']`` -> 'balanced' or 'none'.

    Example:
        >>> [_member_words(x) for x in ("constrained-int", "tuple[int, int]", "tuple[float, ...]", "literal['a','b']")]
        ['a whole number', '2 numbers', 'a list of numbers', "'a' or 'b'"]
    """
    if label in _SCALAR_WORDS:
        return _SCALAR_WORDS[label]
    inner = [part.strip() for part in label[label.find("[") + 1 : -1].split(",")] if "[" in label else []
    if label.startswith("literal["):
        return " or ".join(inner)
    numbers = {"float", "int", "constrained-float", "constrained-int"}
    if len(inner) == 2 and inner[1] == "..." and inner[0] in numbers:
        return "a list of numbers"
    if inner and set(inner) <= numbers:
        return f"{len(inner)} numbers"
    return label


def _union_reason(errors: list, at: int) -> str:
    """The error of a union-typed field (its members at location part ``at``): the message of the member whose type
    the value has, when one fails only on a bound (``threads: Input should be less than or equal to 256``); else
    every member and the value (``spacing: expected a number or 3 numbers, got [1, 1]``).

    Example:
        >>> _union_reason([{"loc": ("spacing", "float"), "input": [1, 1], "msg": "...", "type": "float_type"},
        ...                {"loc": ("spacing", "tuple[float, float, float]", 2), "input": [1, 1], "msg": "...",
        ...                 "type": "missing"}], 1)
        'spacing: expected a number or 3 numbers, got [1, 1]'
    """
    field = tuple(errors[0]["loc"][:at])
    own = [e for e in errors if tuple(e["loc"][:at]) == field and len(e["loc"]) > at]
    by_member: dict[str, list] = {}
    for error in own:
        by_member.setdefault(error["loc"][at], []).append(error)
    fitting = [e for es in by_member.values() if not any(e["type"].endswith(_TYPE_MISMATCH) for e in es) for e in es]
    if fitting:
        error = fitting[0]
        return _error_line(error, field + tuple(error["loc"][at + 1 :]))
    words = [_member_words(label) for label in by_member]
    value = next((e.get("input") for e in own if len(e["loc"]) == at + 1), own[0].get("input"))
    return f"{'.'.join(str(part) for part in field)}: expected {' or '.join(words)}, got {value!r}"


def unexpected_reason(exc: BaseException) -> str:
    """A record's one-line reason for an error no check foresaw: its type and the first 200 characters of its message
    on one line (a series or a job that fails so is recorded, and the run goes on).

    Example:
        >>> unexpected_reason(RuntimeError("planted\\n  failure"))
        'RuntimeError: planted failure'
    """
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


#: Characters a console line must not carry raw: line breaks would split one error into several (or forge a
#: line), terminal escapes could recolour or rewrite the console, bidi controls reorder what is shown.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: str) -> str:
    """``text`` with control characters (C0, C1, DEL, line and paragraph separators, bidi controls) written as
    escapes, so that a file name from an archive or a PACS cannot break one line into two or drive the console; so
    are lone surrogates (the bytes of a file name that are not UTF-8), which a strict console cannot encode.

    Example:
        >>> printable("scan\\n\\x1b[2Jname.dcm: truncated")
        'scan\\\\n\\\\x1b[2Jname.dcm: truncated'
    """
    import unicodedata

    def escaped(ch: str) -> str:
        unsafe = ch in _BIDI_CONTROLS or unicodedata.category(ch) in ("Cc", "Zl", "Zp", "Cs")
        return ch.encode("unicode_escape").decode("ascii") if unsafe else ch

    return "".join(escaped(ch) for ch in text) if not text.isprintable() else text


def utf8_path(path: str | Path, readers: str, *, name: str | Path | None = None, what: str = "file") -> str:
    """``str(path)``, or an InputError naming ``name`` (default ``path``) when the path is not UTF-8 text: a byte
    such as 0xFF in a name (written on a Latin-1 system) reaches Python as a lone surrogate, which libraries that
    take only UTF-8 paths (``readers``: SimpleITK aborted the whole process, safetensors' torch reader and the ONNX
    exporter raised their own errors) cannot open.

    Example:
        >>> import os
        >>> utf8_path("a/lung1.nrrd", "ITK")
        'a/lung1.nrrd'
        >>> utf8_path(os.fsdecode(b"a/scan\\xff.nrrd"), "ITK")
        Traceback (most recent call last):
        ...
        medanomaly.errors.InputError: a/scan\udcff.nrrd: file name is not UTF-8 text, which ITK cannot open: rename it (or the folder holding it)
    """
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{what} name is not UTF-8 text, which {readers} cannot open: rename it (or the folder "
                         "holding it)", name if name is not None else path) from None
    return text
