"""``medanomaly info PATH [--json] [--series UID]``: what an image is, without opening a viewer.

Prints modality, shape (z, y, x), spacing / origin (x, y, z, mm, LPS), direction, dtype,
intensity range, number of frames and series. ``--json`` prints one JSON object with the keys
``modality``, ``shape``, ``spacing_mm``, ``origin_mm``, ``direction``, ``min``, ``max`` (plus
``dtype``, ``format``, ``components``, ``units``, ``n_frames``, ``n_series``, ``skipped_files``, ``shear_deg``: how
far the grid's axes are from square, the tilt of a gantry-tilted stack, 0 otherwise; ``exif_orientation``: the EXIF
orientation a picture was turned upright by, else null; ``nifti_geometry``: which NIfTI transform gave the geometry,
and a unit converted to mm, else null; ``spacing_assumed``: the file states no pixel spacing, 1 mm was taken;
``spacing_assumed_axes``: along which of x, y, z (``[]`` when all are stated);
``orientation_assumed``: its ImageOrientationPatient gives no plane (zero or parallel rows), axial was taken;
``print_resolution_dpi``: a JPEG's or TIFF's print density (x, y), not used as spacing, else null; ``frame_axis``:
``"time"`` for a cine loop, whose z is time and not mm, else null; ``volumes``: how many volumes a 4D NIfTI, MGH,
NRRD or MetaImage holds, 1 otherwise, and ``volume``: the one shown, volume 0 unless ``--frame N``, else null). An RT
Structure Set (contours, no pixels) is
shown by its ROIs instead: number, closed contours, points and span along z (``--json``: ``rois``), never their names.
``min``/``max`` are over finite voxels; ``nonfinite_voxels`` counts the NaN/Inf ones (kept in
the image, never turned into 0).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import typer


def describe(path: Path, series_uid: str | None = None, frame: int | None = None) -> dict[str, Any]:
    """Read ``path`` (frame ``frame`` of a cine loop or volume ``frame`` of a 4D image: volume 0 when none is given, so
    that a 4D file is shown, not refused) and summarise it as a JSON-able dict (no PHI: technical fields only)."""
    import numpy as np

    from medanomaly.io import count_volumes
    from medanomaly.io.assumed_spacing import assumed_axes
    from medanomaly.io.frames import read_frame

    volumes = count_volumes(path) if series_uid is None else 1  # 1 for every format without a fourth dimension
    if frame is None and volumes > 1:
        frame = 0
    vol = read_frame(path, frame, series_uid=series_uid)
    array = vol.array
    finite = array if array.dtype.kind in "iub" else array[np.isfinite(array)]
    lo = finite.min().item() if finite.size else None
    hi = finite.max().item() if finite.size else None
    nonfinite = int(array.size - finite.size)  # NaN / Inf voxels: kept in the volume, left out of the range
    meta = vol.meta
    return {
        "path": path.name,
        "format": meta.get("source_format"),
        "modality": vol.modality,
        "shape": list(vol.shape),
        "components": vol.n_components,
        "spacing_mm": [round(s, 6) for s in vol.spacing],
        "origin_mm": [round(o, 6) for o in vol.origin],
        "direction": [[round(float(v), 6) + 0.0 for v in row] for row in vol.direction],  # + 0.0: no "-0"
        "shear_deg": _shear_deg(vol.direction),
        "dtype": str(array.dtype),
        "min": lo,
        "max": hi,
        "nonfinite_voxels": nonfinite,
        "units": meta.get("units"),
        "n_frames": int(meta.get("n_frames", vol.shape[0])),
        "n_series": int(meta.get("n_series", 1)),
        "series_uid": meta.get("series_uid"),
        "frame_of_reference_uid": meta.get("frame_of_reference_uid"),  # what a mask or structure set must share
        "transfer_syntax": meta.get("transfer_syntax"),
        "photometric": meta.get("photometric"),
        "skipped_files": list(meta.get("skipped_files", [])),
        "spacing_assumed": bool(meta.get("spacing_assumed")),
        "spacing_assumed_axes": list(assumed_axes(vol)),
        "orientation_assumed": bool(meta.get("orientation_assumed")),
        "exif_orientation": meta.get("exif_orientation"),
        "print_resolution_dpi": meta.get("print_resolution_dpi"),
        "frame_axis": meta.get("frame_axis"),
        "nifti_geometry": meta.get("description") if meta.get("source_format") in ("nifti", "mgh") else None,
        "volumes": volumes,  # along a fourth dimension; the one shown is "volume"
        "volume": frame if volumes > 1 else None,
    }


def _shear_deg(direction: Any) -> float:
    """How far (degrees) the grid's axes are from square: 0 for a rotation, the gantry tilt for a tilted CT stack."""
    import numpy as np

    d = np.asarray(direction, dtype=np.float64)
    cosines = [abs(float(d[:, i] @ d[:, j]) / float(np.linalg.norm(d[:, i]) * np.linalg.norm(d[:, j])))
               for i, j in ((0, 1), (0, 2), (1, 2))]  # fmt: skip
    return round(float(np.degrees(np.arcsin(min(max(cosines), 1.0)))), 3) + 0.0


def _assumed_note(info: dict[str, Any]) -> str:
    """What the file did not state about its spacing: every axis (its lengths are pixels) or some, named."""
    from medanomaly.io.assumed_spacing import unstated_throughout

    axes = info.get("spacing_assumed_axes") or []
    if not axes:
        return ""
    if unstated_throughout(axes, info["shape"][::-1]):
        return " (not in the file: 1 mm assumed, lengths are pixels)"
    return f" (not in the file along {' and '.join(axes)}: 1 mm assumed there)"


def _fmt_vec(values: list[float]) -> str:
    return "(" + ", ".join(f"{v + 0.0:.4g}" for v in values) + ")"


def print_human(info: dict[str, Any]) -> None:
    """Aligned ``key: value`` lines (rich table)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    rng = f"{info['min']} .. {info['max']}" + (f" {info['units']}" if info.get("units") else "")
    if info.get("nonfinite_voxels"):
        rng += f" (finite voxels; {info['nonfinite_voxels']} NaN/Inf voxel(s) not counted)"
    rows = [
        ("file", info["path"]),
        ("format", str(info["format"])),
        ("modality", info["modality"]),
        ("shape (z, y, x)", " x ".join(map(str, info["shape"])) + (f" x {info['components']} channels" if info["components"] > 1 else "")),
        ("spacing (x, y, z) mm", _fmt_vec(info["spacing_mm"]) + _assumed_note(info)),
        ("origin (x, y, z) mm", _fmt_vec(info["origin_mm"])),
        ("direction", " ".join(_fmt_vec(row) for row in info["direction"])
         + (" (ImageOrientationPatient gives no plane: axial assumed)" if info.get("orientation_assumed") else "")),
        *([("grid", f"sheared: axes {info['shear_deg']:.1f} deg from square (a gantry tilt?)")]
          if info["shear_deg"] >= 0.01 else []),  # fmt: skip
        *([("orientation", f"turned upright as its EXIF orientation {info['exif_orientation']} says")]
          if info.get("exif_orientation") else []),  # fmt: skip
        *([("geometry", info["nifti_geometry"])] if info.get("nifti_geometry") else []),
        *([("print resolution", "{} x {} dpi (how large to print it: not the patient's size, not used)".format(
            *info["print_resolution_dpi"]))] if info.get("print_resolution_dpi") else []),  # fmt: skip
        ("dtype", info["dtype"]),
        ("intensity range", rng),
        ("frames / series", f"{info['n_frames']} / {info['n_series']}" + (
            " (a cine loop: frames in time, z is not mm; --frame N takes one)" if info.get("frame_axis") == "time"
            else "")),  # fmt: skip
    ]
    if info.get("volumes", 1) > 1:
        rows.append(("volumes", f"{info['volumes']} (a 4D image: volume {info['volume']} shown; --frame N shows another, "
                                "and predict, explain, detect, quantify, preprocess and segment take one)"))
    if info.get("transfer_syntax"):
        rows.append(("transfer syntax", info["transfer_syntax"]))
    if info["skipped_files"]:
        rows.append(("skipped files", ", ".join(info["skipped_files"])))
    for key, value in rows:
        table.add_row(key, str(value))
    Console(soft_wrap=True).print(table)


def print_structure_set(info: dict[str, Any]) -> None:
    """An RT Structure Set: its ROIs by number (their names are free text a person typed: not shown), each with its
    contours, points and span along z."""
    typer.echo(f"file                  {info['path']}")
    typer.echo("modality              RTSTRUCT (contours, no pixels: quantify IMAGE --mask FILE measures them)")
    typer.echo(f"ROIs                  {len(info['rois'])} ({sum(1 for r in info['rois'] if r['contours'])} with "
               "closed contours)")  # fmt: skip
    for roi in info["rois"]:
        span = f", z {roi['z_mm'][0]:g} .. {roi['z_mm'][1]:g} mm" if roi["z_mm"] else ""
        typer.echo(f"  ROI {roi['number']:<16}{roi['contours']} contour(s), {roi['points']} point(s){span}")


class _StderrHandler(logging.Handler):
    """Writes ``warning: <message>`` to the *current* ``sys.stderr`` (so redirections apply), one line (a file
    name's control characters escaped)."""

    def emit(self, record: logging.LogRecord) -> None:
        from medanomaly.errors import printable

        sys.stderr.write(f"{record.levelname.lower()}: {printable(record.getMessage())}\n")


def log_warnings_to_stderr() -> None:
    """Show medanomaly's warnings (e.g. skipped corrupt files) on stderr, once per process."""
    logger = logging.getLogger("medanomaly")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler(level=logging.WARNING)
        logger.addHandler(handler)


def register(app: typer.Typer) -> None:
    @app.command()
    def info(
        path: Path = typer.Argument(..., help="DICOM folder or file, NIfTI, NRRD, MHA, PNG/JPEG or MedMNIST .npz."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
        series: str | None = typer.Option(None, "--series", help="SeriesInstanceUID to read from a multi-series folder."),
        frame: int | None = typer.Option(None, "--frame", min=0, help="A cine loop (frames in time) or a 4D image: "
                                         "show this frame or volume (0-based)."),
    ) -> None:
        """Show modality, shape, spacing, origin, direction, dtype and intensity range of an image.

        Example: medanomaly info study/CT_series/ --json
        """
        from medanomaly.errors import InputError
        from medanomaly.io.rtstruct import structure_set_summary

        log_warnings_to_stderr()
        contours = None
        try:
            summary = describe(path, series, frame)
        except InputError:  # not an image: an RT Structure Set is shown by its ROIs (looked for only then)
            contours = structure_set_summary(path) if path.is_file() and series is None and frame is None else None
            if contours is None:
                raise
            summary = contours
        if as_json:
            typer.echo(json.dumps(summary))
        elif contours:
            print_structure_set(contours)
        else:
            print_human(summary)
