"""DICOM Segmentation objects read back as label maps (``medanomaly detect --dicom`` writes them; so do OHIF, 3D
Slicer and MONAI Label).

A SEG holds one frame per segment and slice, so its frames repeat positions: read as an image it was refused as
"frames are not equally spaced", and ``quantify --mask seg.dcm`` could not measure our own output. highdicom turns
the frames into one volume of segment numbers (0 = background; a voxel in two segments is refused) on the grid the
frames span, in LPS millimetres.

Example:
    >>> from medanomaly.io import read                     # doctest: +SKIP
    >>> read("findings/seg.dcm").meta["modality"]          # doctest: +SKIP
    'SEG'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.errors import InputError
from medanomaly.io.limits import check_voxel_bytes
from medanomaly.types import Volume

__all__ = ["SEGMENTATION_STORAGE", "is_segmentation", "read_segmentation"]

#: SOP Class UID of Segmentation Storage.
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def is_segmentation(ds: Any) -> bool:
    """True for a DICOM Segmentation object."""
    return str(getattr(ds, "SOPClassUID", "")) == SEGMENTATION_STORAGE


def read_segmentation(ds: Any, path: Path, meta: dict[str, Any], max_voxel_bytes: int | None = None) -> Volume:
    """The label map (z, y, x, uint16 segment numbers) of a parsed binary SEG, on the grid its frames span.

    Args:
        ds: the parsed dataset (pixel data not yet decoded).
        path: the file, named in errors.
        meta: the Volume's technical metadata (``safe_meta`` of the dataset).
        max_voxel_bytes: limit on the decoded frames (see :mod:`medanomaly.io.limits`).

    Raises:
        InputError: more frames than the limit, a fractional SEG, overlapping segments, or frames that do not form one
            regular grid.
    """
    import highdicom as hd

    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    check_voxel_bytes((frames, int(ds.Rows), int(ds.Columns)), 1, path, limit=max_voxel_bytes)
    if str(getattr(ds, "SegmentationType", "")) != "BINARY":
        raise InputError(f"DICOM SEG of type {getattr(ds, 'SegmentationType', '?')}: medanomaly reads binary ones", path)
    try:
        labels = hd.seg.Segmentation.from_dataset(ds, copy=False).get_volume(combine_segments=True, relabel=False)
    except Exception as exc:  # noqa: BLE001 - highdicom raises ValueError / RuntimeError / KeyError on odd SEGs
        raise InputError(f"DICOM SEG not readable as one label map ({type(exc).__name__}: "
                         f"{(str(exc).splitlines() or [''])[0]})", path) from None  # fmt: skip
    spacing, origin, direction = _grid(np.asarray(labels.affine, np.float64))
    meta = {**meta, "n_frames": frames}
    return Volume(np.ascontiguousarray(labels.array, np.uint16), spacing=spacing, origin=origin, direction=direction,
                  meta=meta)  # fmt: skip


def _grid(affine: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], np.ndarray]:
    """(spacing (x, y, z) mm, origin, direction) of a highdicom affine, which maps (slice, row, column) to LPS mm:
    our x is its column axis, y its row axis, z its slice axis."""
    columns = affine[:3, [2, 1, 0]]
    spacing = np.linalg.norm(columns, axis=0)
    return tuple(float(s) for s in spacing), tuple(float(o) for o in affine[:3, 3]), columns / spacing
