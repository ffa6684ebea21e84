"""One frame of a cine loop or one volume of a 4D image, for the verbs that measure or call a single image
(``--frame N``: ``info``, ``predict``, ``explain``, ``detect``, ``quantify``, ``preprocess``, ``segment``; the
service's ``?frame=N``).

A cine (a multi-frame DICOM whose frames are time points: an ultrasound clip, a cardiac MRI cine; read with
``meta["frame_axis"] == "time"``) is a stack of one plane seen at several times, not slices in space: measuring it
as a volume summed its frames, so ``quantify`` and the 3D models refuse it. ``--frame N`` takes frame ``N``
(0-based, as the file stores them) as the one-slice image it is: the same plane, so the same origin, spacing and
direction for every frame.

A 4D NIfTI, MGH, NRRD or MetaImage (an fMRI or perfusion series; the Medical Segmentation Decathlon's multi-contrast brain
and prostate volumes, one contrast per volume) is refused whole, in one line saying how to take one volume;
``--frame N`` reads volume ``N`` alone (:func:`read_frame`; NIfTI and MGH through nibabel read only that volume's
bytes).

Example:
    >>> import numpy as np
    >>> from medanomaly.types import Volume
    >>> cine = Volume(np.arange(3 * 4 * 4).reshape(3, 4, 4), meta={"frame_axis": "time", "n_frames": 3})
    >>> frame = select_frame(cine, 2)
    >>> frame.shape, int(frame.array[0, 0, 0]), frame.meta.get("frame_axis")
    ((1, 4, 4), 32, None)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medanomaly.errors import InputError
from medanomaly.types import Volume

__all__ = ["CINE_ADVICE", "FOUR_D_ADVICE", "VOLUME_FORMATS", "check_volume", "frame_of_mask", "read_frame",
           "read_modality", "read_with_frame", "reword_frame_advice", "select_frame"]

#: How a CLI user is told to take one frame of a cine loop (the service and archive batches say it their way:
#: :func:`reword_frame_advice`).
CINE_ADVICE = "give --frame N to take frame N"

#: How a CLI user is told to take one volume of a 4D image: every command reads images, only these take ``--frame``.
FOUR_D_ADVICE = ("info, predict, explain, detect, quantify, preprocess and segment take one with --frame N, register "
                 "with --fixed-frame / --moving-frame")

#: Formats whose 4D files :func:`read_frame` reads one volume of (``detect_format``'s names).
VOLUME_FORMATS = frozenset({"nifti", "mgh", "minc", "parrec", "afni", "nrrd", "metaimage"})


def reword_frame_advice(reason: str, advice: str) -> str:
    """``reason`` with the CLI's advice on ``--frame`` (a cine's or a 4D image's) replaced by ``advice``: how the
    service (``?frame=N``) or an archive batch (which takes no frame) says it.

    Example:
        >>> reword_frame_advice("4D image (2 volumes, 0..1): " + FOUR_D_ADVICE, "upload it with ?frame=N")
        '4D image (2 volumes, 0..1): upload it with ?frame=N'
    """
    return reason.replace(CINE_ADVICE, advice).replace(FOUR_D_ADVICE, advice)


def _not_a_cine(frame: int, slices: int, path: Any) -> InputError:
    """``--frame`` given for an image whose slices lie in space (a slice of a volume would be taken without a word)."""
    return InputError(f"--frame {frame}: not a cine loop (its {slices} slice(s) lie in space, not in time); --frame "
                      "takes one frame of a multi-frame cine or one volume of a 4D image", path)  # fmt: skip


def check_volume(volumes: int, volume: int | None, path: Any = None, slices: int = 1) -> None:
    """Refuse a 4D image of several volumes read whole, ``--frame`` on an image of one volume (of ``slices``
    slices), and a volume past the last, before any voxel is read (the readers call it with the header's counts).

    Raises:
        InputError: naming ``path``.
    """
    if volume is None:
        if volumes > 1:
            raise InputError(f"4D image ({volumes} volumes, 0..{volumes - 1}): {FOUR_D_ADVICE}", path)
        return
    if volumes <= 1:
        raise _not_a_cine(volume, slices, path)
    if not 0 <= volume < volumes:
        raise InputError(f"--frame {volume}: the 4D image has {volumes} volumes (0..{volumes - 1})", path)


def read_frame(path: Any, frame: int | None, **options: Any) -> Volume:
    """The image at ``path`` (:func:`medanomaly.io.read`); with ``frame``, frame ``frame`` of a cine loop
    (:func:`select_frame`) or volume ``frame`` of a 4D NIfTI, MGH, MINC, PAR/REC, AFNI, NRRD or MetaImage (read
    alone; the voxel limit applies to that volume for NIfTI, MGH, MINC, PAR/REC and AFNI, to the whole file for NRRD
    and MetaImage, which ITK reads whole first).

    Raises:
        InputError: what :func:`medanomaly.io.read` and :func:`check_volume` refuse, naming ``path``.
    """
    return read_with_frame(path, frame, **options)[1]


def read_with_frame(path: Any, frame: int | None, **options: Any) -> tuple[Volume, Volume]:
    """``(what was read, the image --frame takes)``: a cine loop and its frame ``frame``; one volume of a 4D image,
    twice (only that volume is read); the image, twice, when ``frame`` is None. For a mask drawn on the whole cine
    (:func:`frame_of_mask`).

    Raises:
        InputError: as :func:`read_frame`.
    """
    from medanomaly.io import detect_format, read

    if frame is not None and detect_format(path) in VOLUME_FORMATS:
        volume = read(path, volume=frame, **options)
        return volume, volume
    whole = read(path, **options)
    return whole, select_frame(whole, frame, path)


def read_modality(path: Any, name: str, volumes: Mapping[str, int] | None = None) -> Volume:
    """A multimodal model's modality ``name`` (fusion): volume ``volumes[name]`` of a 4D file (the Medical Segmentation
    Decathlon keeps a case's contrasts as volumes of one file), else the whole file (a 4D one refused, saying to set
    ``data.volumes``).

    Raises:
        InputError: what :func:`medanomaly.io.frames.read_frame` refuses, naming the file.
    """
    try:
        return read_frame(path, (volumes or {}).get(name))
    except InputError as exc:  # a config or a recorded run, not a command line: say which setting takes one volume
        reason = reword_frame_advice(exc.reason, f"set data.volumes.{name} to one of them")
        raise InputError(reason.replace("--frame ", f"data.volumes.{name} "), path) from None


def select_frame(volume: Volume, frame: int | None, path: Any = None) -> Volume:
    """Frame ``frame`` of a cine loop as a one-slice Volume; ``volume`` itself when ``frame`` is None.

    Raises:
        InputError: the image is not a cine (its slices lie in space: ``--frame`` would take one slice of a volume
            without a word), or the cine has no such frame, naming ``path``.
    """
    if frame is None:
        return volume
    if volume.meta.get("frame_axis") != "time":
        raise _not_a_cine(frame, volume.shape[0], path)
    count = volume.shape[0]
    if not 0 <= frame < count:
        raise InputError(f"--frame {frame}: the cine has {count} frames (0..{count - 1})", path)
    meta = {k: v for k, v in volume.meta.items() if k not in ("frame_axis", "n_frames")}
    return Volume(volume.array[frame : frame + 1].copy(), spacing=volume.spacing, origin=volume.origin,
                  direction=volume.direction, meta={**meta, "n_frames": 1})  # fmt: skip


def frame_of_mask(mask: Volume, cine: Volume, frame: int | None) -> Volume:
    """The mask for frame ``frame`` of ``cine``: a mask drawn on the whole cine (as many frames) gives the same
    frame; a one-slice mask is taken as drawn on that frame (its grid is checked by the measurement). ``cine`` not a
    cine loop (``read_frame`` read one volume of a 4D image): ``mask`` as it is."""
    if frame is None or cine.meta.get("frame_axis") != "time" or mask.shape[0] != cine.shape[0] or mask.shape[0] == 1:
        return mask
    return Volume(mask.array[frame : frame + 1].copy(), spacing=mask.spacing, origin=mask.origin,
                  direction=mask.direction, meta={k: v for k, v in mask.meta.items() if k != "frame_axis"})  # fmt: skip
