"""Which axes of an image have a spacing its file does not state (1 mm taken), and how to say so.

A picture states no pixel spacing; a DICOM may lack PixelSpacing or a slice spacing; an NRRD may give ``nan`` and a
NIfTI a pixel size of 0 along one axis. The reader takes 1 mm there and marks ``meta["spacing_assumed"]``; this module
also records **which** axes, as their patient directions (``meta["spacing_assumed_directions"]``, unit LPS vectors),
so the record stays right when the image is reoriented (``to_canonical`` permutes the grid axes) or resampled onto
another grid (every axis with a part along an unstated direction is then one). Messages then name the axes: an NRRD
with ``spacings: nan 0.7 0.7`` said "lengths are pixels" though two of its three spacings are stated.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from medanomaly.types import Volume

__all__ = ["AXES", "assumed_axes", "assumed_spacing_json", "spacing_assumed_meta", "spacing_note",
           "unstated_throughout"]

#: Grid axis names in index order (spacing and direction columns are x, y, z).
AXES = ("x", "y", "z")


def spacing_assumed_meta(direction: Any, axes: Iterable[int]) -> dict[str, Any]:
    """Meta marking grid ``axes`` (0 = x, 1 = y, 2 = z, as read) as of unstated spacing; ``{}`` for none.

    Example:
        >>> spacing_assumed_meta(np.eye(3), [2])
        {'spacing_assumed': True, 'spacing_assumed_directions': ((0.0, 0.0, 1.0),)}
    """
    columns = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    chosen = sorted(set(axes))
    if not chosen:
        return {}
    unit = [columns[:, a] / (np.linalg.norm(columns[:, a]) or 1.0) for a in chosen]
    return {"spacing_assumed": True,
            "spacing_assumed_directions": tuple(tuple(round(float(v), 6) + 0.0 for v in u) for u in unit)}


def assumed_axes(volume: Volume) -> tuple[str, ...]:
    """The grid axes (``"x"``, ``"y"``, ``"z"``) of ``volume`` along which a length is not in mm: those not orthogonal
    to a direction whose spacing the file did not state (after a reorientation, the axis now along it; after a
    resampling onto a turned grid, every axis with a part along it); x and y when only ``spacing_assumed`` is
    recorded (a picture, a DICOM without PixelSpacing); ``()`` when every spacing was stated."""
    if not volume.meta.get("spacing_assumed"):
        return ()
    recorded = volume.meta.get("spacing_assumed_directions")
    if not recorded:
        return ("x", "y")
    columns = np.asarray(volume.direction, dtype=np.float64)
    columns = columns / np.where(np.linalg.norm(columns, axis=0) > 0, np.linalg.norm(columns, axis=0), 1.0)
    return tuple(name for i, name in enumerate(AXES)  # a length along it has a part along an unstated direction
                 if any(abs(float(np.dot(columns[:, i], d))) > 0.01 for d in recorded))  # fmt: skip


def assumed_spacing_json(volume: Volume | None) -> dict[str, Any]:
    """``{"spacing_assumed": true, "spacing_assumed_axes": [...]}`` for a result's JSON (findings, ``quantify
    --json`` rows) when ``volume``'s file states no spacing along some axes; ``{}`` otherwise."""
    axes = assumed_axes(volume) if volume is not None else ()
    return {"spacing_assumed": True, "spacing_assumed_axes": list(axes)} if axes else {}


def unstated_throughout(axes: Iterable[str], size_xyz: Iterable[int]) -> bool:
    """Whether ``axes`` include every axis of more than one sample (of a one-pixel image, x and y): all its lengths
    are then pixels, not only those along some axes.

    Example:
        >>> unstated_throughout(("x", "y"), (640, 480, 1)), unstated_throughout(("z",), (64, 64, 20))
        (True, False)
    """
    sizes = dict(zip(AXES, size_xyz, strict=True))
    return set([a for a in AXES if sizes[a] > 1] or ["x", "y"]) <= set(axes)


def spacing_note(volume: Volume) -> str | None:
    """One line on what the unstated spacing means for lengths, areas and volumes; ``None`` when all are stated.

    Every axis of more than one sample unstated (a picture: the slice axis of one slice does not count): lengths are
    pixels. Some: the axes are named.
    """
    axes = assumed_axes(volume)
    if not axes:
        return None
    if unstated_throughout(axes, volume.size_xyz):
        return "the image states no pixel spacing: lengths and areas are in pixels (1 pixel counted as 1 mm)"
    named = " and ".join(axes)
    return (f"the image states no spacing along {named} (1 voxel counted as 1 mm there): volumes and lengths along "
            f"{named} are not in mm")
