"""One frame of a cine loop, for the verbs that measure or call a single image (``--frame N``).

A cine (a multi-frame DICOM whose frames are time points: an ultrasound clip, a cardiac MRI cine; read with
``meta["frame_axis"] == "time"``) is a stack of one plane seen at several times, not slices in space: measuring it
as a volume summed its frames, so ``quantify`` and the 3D models refuse it. ``--frame N`` takes frame ``N``
(0-based, as the file stores them) as the one-slice image it is: the same plane, so the same origin, spacing and
direction for every frame.

Example:
    >>> import numpy as np
    >>> from medanomaly.types import Volume
    >>> cine = Volume(np.arange(3 * 4 * 4).reshape(3, 4, 4), meta={"frame_axis": "time", "n_frames": 3})
    >>> frame = select_frame(cine, 2)
    >>> frame.shape, int(frame.array[0, 0, 0]), frame.meta.get("frame_axis")
    ((1, 4, 4), 32, None)
"""

from __future__ import annotations

from typing import Any

from medanomaly.errors import InputError
from medanomaly.types import Volume

__all__ = ["select_frame", "frame_of_mask"]


def select_frame(volume: Volume, frame: int | None, path: Any = None) -> Volume:
    """Frame ``frame`` of a cine loop as a one-slice Volume; ``volume`` itself when ``frame`` is None.

    Raises:
        InputError: the image is not a cine (its slices lie in space: ``--frame`` would take one slice of a volume
            without a word), or the cine has no such frame, naming ``path``.
    """
    if frame is None:
        return volume
    if volume.meta.get("frame_axis") != "time":
        raise InputError(f"--frame {frame}: not a cine loop (its {volume.shape[0]} slice(s) lie in space, not in "
                         "time); --frame takes one frame of a multi-frame cine", path)  # fmt: skip
    count = volume.shape[0]
    if not 0 <= frame < count:
        raise InputError(f"--frame {frame}: the cine has {count} frames (0..{count - 1})", path)
    meta = {k: v for k, v in volume.meta.items() if k not in ("frame_axis", "n_frames")}
    return Volume(volume.array[frame : frame + 1].copy(), spacing=volume.spacing, origin=volume.origin,
                  direction=volume.direction, meta={**meta, "n_frames": 1})  # fmt: skip


def frame_of_mask(mask: Volume, cine: Volume, frame: int | None) -> Volume:
    """The mask for frame ``frame`` of ``cine``: a mask drawn on the whole cine (as many frames) gives the same
    frame; a one-slice mask is taken as drawn on that frame (its grid is checked by the measurement)."""
    if frame is None or mask.shape[0] != cine.shape[0] or mask.shape[0] == 1:
        return mask
    return Volume(mask.array[frame : frame + 1].copy(), spacing=mask.spacing, origin=mask.origin,
                  direction=mask.direction, meta={k: v for k, v in mask.meta.items() if k != "frame_axis"})  # fmt: skip
