"""What a prediction leaves on disk, the same for every task.

For an input ``NAME`` (its file name as the user gave it) :func:`write_prediction` writes into the
output folder ``NAME.json`` (the :class:`~medanomaly.types.Prediction` JSON), ``NAME.findings.json``
when the model found lesions (the one findings schema, :mod:`medanomaly.io.findings`), and
``NAME_anomaly_map.nii.gz`` on the input's grid when the model gives a voxel map. Nothing is
overwritten silently: a prediction's files are written together into a hidden folder and moved into place only
when all are whole (:func:`medanomaly.io.staged.write_staged`), so a write that fails (a full disk) leaves the
earlier prediction of that name as it was, never a new ``NAME.json`` beside no map. Both JSON files, and
``detect``'s ``findings.json``, carry ``"spacing_assumed": true`` and ``"spacing_assumed_axes"`` when the input states
no spacing along some axes (a picture: x and y): their millimetres are then voxels along those axes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from medanomaly.io.assumed_spacing import assumed_spacing_json
from medanomaly.io.staged import write_staged
from medanomaly.jsonio import write_json
from medanomaly.types import Prediction

__all__ = ["output_dir", "output_stem", "prediction_stem", "prepare_output_dir", "write_prediction"]

#: The lone surrogates (U+DC80..U+DCFF) by which Python's file-system decoding keeps the bytes of a name that are not
#: UTF-8.
_NOT_UTF8 = re.compile("[\udc80-\udcff]")

_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".png", ".jpg", ".jpeg", ".npz")


def output_stem(path: str | Path) -> str:
    """The input's name without its image extension (``lung1.nii.gz`` -> ``lung1``), as UTF-8 text: a byte of a
    name that is not UTF-8 (0xFF from a Latin-1 system, a lone surrogate to Python) is written ``%FF``, as the
    map's writer (ITK) cannot take such a name.

    Example:
        >>> import os
        >>> output_stem("a/lung1.nii.gz"), output_stem(os.fsdecode(b"scan\\xff.nii.gz"))
        ('lung1', 'scan%FF')
    """
    name = Path(path).name
    name = _NOT_UTF8.sub(lambda m: f"%{ord(m[0]) - 0xDC00:02X}", name)
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return name


def check_distinct_outputs(sources: list[str | Path]) -> None:
    """Refuse, before any work, inputs whose outputs would share names in one folder (``a/x.nrrd`` and
    ``b/x.nrrd`` both write ``x.json``: the second overwrote the first, and the first's ``x.findings.json`` stayed
    beside the second's ``x.json``).

    Example:
        >>> check_distinct_outputs(["a/x.nrrd", "b/y.nii.gz"])
        >>> check_distinct_outputs(["a/x.nrrd", "b/x.nii.gz"])
        Traceback (most recent call last):
        ...
        medanomaly.errors.InputError: a/x.nrrd and b/x.nii.gz would write the same outputs (x.json): predict them into separate --out folders
    """
    from medanomaly.errors import InputError

    first: dict[str, str | Path] = {}
    for source in sources:
        stem = output_stem(source)
        if stem in first:
            raise InputError(f"{first[stem]} and {source} would write the same outputs ({stem}.json): predict them "
                             "into separate --out folders")  # fmt: skip
        first[stem] = source


def prediction_stem(source: str | Path, frame: int | None = None) -> str:
    """The name of one prediction's files: the input's stem, and ``_frameN`` for frame ``N`` of a cine or 4D image.

    Example:
        >>> prediction_stem("scan.nii.gz"), prediction_stem("scan.nii.gz", 3)
        ('scan', 'scan_frame3')
    """
    return output_stem(source) + ("" if frame is None else f"_frame{int(frame)}")


def output_names_too_long(sources: list[str | Path], out_dir: str | Path,
                          frame: int | None = None) -> dict[str | Path, Any]:  # fmt: skip
    """The inputs whose outputs in ``out_dir`` would have names longer than its file system takes (255 bytes on
    most), each with its :class:`~medanomaly.errors.InputError`: checked before the work, so such a file is
    skipped with its reason and the rest are predicted (a 248-character name was predicted, then its
    ``NAME_anomaly_map.nii.gz`` could not be written and the command stopped there, the files after it never run)."""
    import os

    from medanomaly.errors import InputError
    from medanomaly.io.limits import name_max

    limit = name_max(out_dir)
    too_long: dict[str | Path, Any] = {}
    for source in sources:
        stem = prediction_stem(source, frame)
        longest = len(os.fsencode(f"{stem}_anomaly_map.nii.gz"))  # the longest of NAME.json, NAME.findings.json
        if longest > limit:
            too_long[source] = InputError(f"the name is too long for its outputs ({longest} bytes with their "
                                          f"endings; the output folder takes {limit}): shorten it", source)  # fmt: skip
    return too_long


def prepare_output_dir(path: str | Path) -> Path:
    """Create the output folder and prove it can be written, before any work is done.

    A probe file is created and removed at once, so an unwritable, read-only or impossible location
    (a path under a regular file, a full disk) fails in one line naming the folder, not after minutes
    of work with a traceback.

    Raises:
        InputError: the folder cannot be created or written, or its name is not UTF-8 (the maps, masks and pictures
            in it are written by ITK, which cannot take such a name: that failed after the work, naming a hidden
            staging folder).
    """
    import os
    import tempfile

    from medanomaly.errors import InputError, utf8_path

    folder = Path(path)
    utf8_path(folder, "ITK (the image writer)", what="output folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise InputError(f"cannot write the output folder ({reason})", folder) from None
    return folder


@contextmanager
def output_dir(path: str | Path) -> Iterator[Path]:
    """:func:`prepare_output_dir` for one command's work: the folder is proved writable before the work, and when the
    work then fails, the folders this command made for it are removed if they hold nothing (a ``detect`` refused for
    its input had left an empty ``runs/detect-<name>-<time>`` behind; a folder that existed, or holds anything,
    stays)."""
    folder = Path(path)
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # the folder and the parents made for it
    prepare_output_dir(folder)
    try:
        yield folder
    except BaseException:
        with suppress(OSError):  # one not empty stops it: what is in it stays
            for empty in made:
                empty.rmdir()
        raise


def write_prediction(out_dir: str | Path, source: str | Path, prediction: Prediction,
                     context: dict[str, Any] | None = None) -> list[Path]:  # fmt: skip
    """Write one prediction's files into ``out_dir`` (``NAME.json``; ``NAME_frameN.json`` when ``context`` names the
    ``frame`` of a cine or 4D image, so that two frames' predictions do not replace each other); returns the paths
    written."""
    from medanomaly.io import write
    from medanomaly.io.findings import write_findings

    out_dir = Path(out_dir)
    stem = prediction_stem(source, (context or {}).get("frame"))
    doc = {"image": Path(source).name, **(context or {}), **prediction.to_json()}
    record, findings, anomaly_map = (out_dir / f"{stem}{end}" for end in (".json", ".findings.json",
                                                                           "_anomaly_map.nii.gz"))  # fmt: skip
    parts: list[tuple[Path, Callable[[Path], Any]]] = []  # the largest first: a full disk stops before the rest
    if prediction.anomaly_map is not None:
        parts.append((anomaly_map, lambda path: write(prediction.anomaly_map, path)))
    if prediction.findings:
        parts.append((findings, lambda path: write_findings(path, prediction.findings, image=Path(source).name,
                                                            **(context or {}))))  # fmt: skip

    def write_all(staged_record: Path) -> None:
        for final, write_part in parts:
            write_part(staged_record.parent / final.name)
        write_json(staged_record, doc)

    write_staged(record, write_all)
    written = [final for final, _ in parts] + [record]
    for stale in {findings, anomaly_map} - set(written):  # an earlier prediction's, no longer true beside this one
        stale.unlink(missing_ok=True)
    return written


def write_detection(out_dir: str | Path, source: str | Path, volume: Any, prediction: Prediction,
                    overlays: bool = False, masks: bool = False, run: str | None = None) -> Path:  # fmt: skip
    """``findings.json`` of one detection (the one schema), with optional per-finding overlay PNGs
    (axial, LPS) and lesion masks (NRRD on the input grid) beside it, all moved into ``out_dir`` together when
    all are whole; returns the JSON's path."""
    from medanomaly.io.findings import write_findings

    def write_all(staged_json: Path) -> None:
        stage, extra = staged_json.parent, []
        for i, finding in enumerate(prediction.findings, start=1):
            row: dict[str, Any] = {}
            if overlays:
                from medanomaly.evaluate.lung_report import plot_finding

                row["overlay"] = plot_finding(volume, finding, stage / f"finding_{i:02d}.png").name
            if masks and finding.mask is not None:
                from medanomaly.io import write

                row["mask"] = Path(write(finding.mask, stage / f"finding_{i:02d}_mask.nrrd")).name
            extra.append(row)
        write_findings(staged_json, prediction.findings, image=Path(source).name, extra=extra, run=run,
                       flags=list(prediction.flags), **assumed_spacing_json(volume))  # fmt: skip

    return write_staged(Path(out_dir) / "findings.json", write_all)
