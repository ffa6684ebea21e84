"""A fusion model's modalities brought onto one grid before they are predicted together: the first present modality's.

Three ways, named by :data:`ALIGNMENTS` (the CLI's ``--resample-to-first`` / ``--register-to-first``, the service's
``?resample_to_first=true`` / ``?register_to_first=true``, an archive batch's options):

* ``none``: the images must already share a grid (the model refuses others: "grids differ") and, where they record
  one, a DICOM frame of reference (:func:`check_one_frame`); nothing is resampled unasked;
* ``resample``: each other modality resampled onto the first's grid by patient coordinates (linear), which only one
  DICOM frame of reference makes right (:func:`onto_first_grid`): the series of one scanner session;
* ``register``: each other modality registered onto the first by image content (rigid, Mattes mutual information:
  :func:`medanomaly.preprocess.registration.register`, as ``medanomaly register``) and resampled through the result
  (:func:`onto_first_by_registration`): a CT and an MR of two visits, or a patient who moved between two series. The
  transform found is said in the prediction's flags (``registered:PD rigid onto T1: rotation 0.0 deg, translation
  (6.0, 6.0) mm, mutual information 0.35 -> 1.00``, measured on ITK's brain slices, the PD moved 6 mm; also an
  Algorithm Parameter of the call's DICOM SR); a registration that leaves the images less alike than it found them
  (mutual information lower) is refused in one line, not predicted on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medanomaly.errors import InputError

__all__ = ["ALIGNMENTS", "align_to_first", "alignment_for", "alignment_of", "check_one_frame", "moving_to_fixed",
           "onto_first_by_registration", "onto_first_grid", "registration_flags"]

#: How a fusion input's modalities are brought onto one grid (the module docstring).
ALIGNMENTS = ("none", "resample", "register")

#: The meta keys of a registered Volume: the transform found, as its flag says it, and as a matrix (moving -> fixed).
REGISTRATION_META, MATRIX_META = "registration", "registration_matrix"

#: Most voxels an image is registered at (128^3): a larger one is registered on a coarser copy (antialiased), the
#: transform found then applied to it at full resolution. A 10.5 M-voxel pair took 50 s and 0.9 GB at full resolution;
#: a rigid fit by mutual information needs the anatomy, not every voxel (``bench/bench_fusion_alignment.py``).
MAX_REGISTRATION_VOXELS = 1 << 21


def alignment_of(resample_to_first: bool, register_to_first: bool) -> str:
    """The alignment two yes/no options ask for (``--resample-to-first``, ``--register-to-first``); both is one line.

    Example:
        >>> alignment_of(False, True), alignment_of(False, False)
        ('register', 'none')
    """
    if resample_to_first and register_to_first:
        raise InputError("--resample-to-first and --register-to-first: give one (registration resamples too)")
    return "register" if register_to_first else "resample" if resample_to_first else "none"


def alignment_for(model: Any, asked: str) -> str:
    """The alignment a call of ``model`` uses: the one asked for, else the one its training used (a fusion run trained
    with ``data.alignment: register`` records it in ``model.json`` ``extra.alignment``: its inputs are registered as
    its training images were, unless another alignment is asked for).

    Example:
        >>> run = type("Model", (), {"info": type("Info", (), {"extra": {"alignment": "register"}})()})()
        >>> alignment_for(run, "none"), alignment_for(run, "resample"), alignment_for(object(), "none")
        ('register', 'resample', 'none')
    """
    if asked != "none":
        return asked
    recorded = (getattr(getattr(model, "info", None), "extra", None) or {}).get("alignment", "none")
    return recorded if recorded in ALIGNMENTS else "none"


def align_to_first(volumes: Mapping[str, Any], alignment: str, remedy: str = "--register-to-first") -> dict[str, Any]:
    """The modalities' Volumes (None: missing) aligned as ``alignment`` says (:data:`ALIGNMENTS`); ``remedy``: how the
    caller asks for registration, said where ``none`` meets two frames of reference (:func:`check_one_frame`)."""
    if alignment not in ALIGNMENTS:
        raise InputError(f"alignment must be one of {', '.join(ALIGNMENTS)}, got {alignment!r}")
    if alignment == "register":
        return onto_first_by_registration(volumes)
    if alignment == "resample":
        return onto_first_grid(volumes)
    check_one_frame(volumes, remedy)
    return dict(volumes)


def check_one_frame(volumes: Mapping[str, Any], remedy: str = "--register-to-first") -> None:
    """Refuse modalities that record two different DICOM frames of reference: taken as they are (no alignment asked),
    their voxels would be fused by index although the same numbers name two places (a PD of another visit on a grid
    of the T1's size was fused voxel by voxel). Images that record none (NIfTI, PNG) cannot be checked. ``remedy``:
    how the caller asks for registration (a fusion config's ``data.alignment: register``).

    Raises:
        InputError: naming the two modalities and how to align them.
    """
    frames = [(name, str(v.meta.get("frame_of_reference_uid") or "")) for name, v in volumes.items() if v is not None]
    recorded = [(name, frame) for name, frame in frames if frame]
    for name, frame in recorded[1:]:
        if frame != recorded[0][1]:
            raise InputError(f"{name} is in another frame of reference than {recorded[0][0]}: its voxels are not "
                             f"{recorded[0][0]}'s places; {remedy} registers it onto {recorded[0][0]}")


def onto_first_grid(volumes: Mapping[str, Any]) -> dict[str, Any]:
    """The modalities' Volumes (None: missing), each on the first present one's grid by patient coordinates, which
    only one DICOM frame of reference makes right (:func:`medanomaly.preprocess.resample.resample_in_frame`: else an
    InputError naming the two).

    The same scanner session's series (a T1 and a PD of one study) share their coordinates but often not their
    grid (another field of view, matrix or slice count); fusion takes them on one grid and never resamples unasked."""
    from medanomaly.preprocess.resample import resample_in_frame

    present = [name for name, v in volumes.items() if v is not None]
    if not present:
        return dict(volumes)
    first = present[0]
    return {name: (v if v is None or name == first else resample_in_frame(v, volumes[first], name, first))
            for name, v in volumes.items()}  # fmt: skip


def onto_first_by_registration(volumes: Mapping[str, Any]) -> dict[str, Any]:
    """The modalities' Volumes (None: missing), each other present one registered rigidly onto the first present one
    (Mattes mutual information, centred on the images' geometric centres, so two frames of reference are fine) and
    resampled on its grid (linear); each such Volume's ``meta["registration"]`` says the transform found.

    Raises:
        InputError: an image registration cannot use (too small, constant, 2D against 3D), the optimiser failing,
            or a result less alike than the start (mutual information lower): naming the modality and the first.
    """
    from medanomaly.preprocess.registration import register, resample_to

    present = [name for name, v in volumes.items() if v is not None]
    out = dict(volumes)
    if len(present) < 2:
        return out
    first, coarse_first = present[0], None
    for name in present[1:]:
        try:
            if coarse_first is None:  # once for every other modality
                coarse_first = _coarse(volumes[first])
            fixed, fixed_mm = coarse_first
            moving, _ = _coarse(volumes[name])
            result = register(fixed, moving, stages=("rigid",), metric="mattes")
        except InputError as exc:
            raise InputError(f"{name} registered onto {first}: {exc.reason}") from None
        before, after = result.mutual_information_before, result.mutual_information
        if not after >= before:  # NaN too
            raise InputError(f"{name} registered onto {first}: the result is less alike than the start (mutual "
                             f"information {before:.3f} -> {after:.3f}); not predicted on: register them yourself "
                             "(medanomaly register) and check the result")  # fmt: skip
        rigid = result.rigid
        note = (f"rigid onto {first}: rotation {_tenths(rigid.angles_deg)} deg, translation "
                f"({_tenths(rigid.translation_mm)}) mm, mutual information {before:.2f} -> {after:.2f}"
                + (f" (registered at {fixed_mm:.1f} mm)" if fixed_mm else ""))  # fmt: skip
        resampled = result.resampled if fixed is volumes[first] and moving is volumes[name] else \
            resample_to(volumes[first], volumes[name], result.transform)  # fmt: skip
        out[name] = resampled.with_meta(**{REGISTRATION_META: note, MATRIX_META: moving_to_fixed(result.transform)})
    return out


def moving_to_fixed(transform: Any) -> tuple[float, ...]:
    """A rigid or affine SimpleITK transform (fixed -> moving point, LPS mm, 2D or 3D) as the 4 x 4 homogeneous matrix
    of the other direction, row by row: moving -> fixed, what a DICOM Spatial Registration's Frame of Reference
    Transformation Matrix says (PS3.3 C.20.2.1.1: a point of the registered frame into the registration's frame). A 2D
    transform leaves z as it is.

    Example:
        >>> import SimpleITK as sitk
        >>> [round(v, 6) for v in moving_to_fixed(sitk.TranslationTransform(3, (6.0, -2.0, 1.0)))][3::4]
        [-6.0, 2.0, -1.0, 1.0]
    """
    import numpy as np

    dim = int(transform.GetDimension())
    origin = np.asarray(transform.TransformPoint((0.0,) * dim))
    columns = [np.asarray(transform.TransformPoint(tuple(np.eye(dim)[i]))) - origin for i in range(dim)]
    forward = np.eye(4)
    forward[:dim, :dim] = np.stack(columns, axis=1)
    forward[:dim, 3] = origin
    return tuple(float(v) for v in np.linalg.inv(forward).ravel())


def _coarse(volume: Any) -> tuple[Any, float | None]:
    """``volume``, or a coarser copy of it of at most :data:`MAX_REGISTRATION_VOXELS` voxels (linear, antialiased, the
    same box) and its largest voxel size (mm) when it has more."""
    from medanomaly.preprocess.resample import resample_to_spacing

    voxels = int(volume.array.shape[0] * volume.array.shape[1] * volume.array.shape[2])
    if voxels <= MAX_REGISTRATION_VOXELS:
        return volume, None
    factor = (voxels / MAX_REGISTRATION_VOXELS) ** (1 / (2 if volume.is_2d else 3))
    spacing = [s * factor for s in volume.spacing]
    coarse = resample_to_spacing(volume, spacing, "linear", antialias=True, dtype="float32")
    return coarse, max(coarse.spacing[:2] if volume.is_2d else coarse.spacing)


def _tenths(values: Any) -> str:
    """Numbers to a tenth, comma-separated, without a negative zero (``-0.0`` for a rotation of -0.01 degrees)."""
    return ", ".join(f"{(round(float(v), 1) or 0.0):.1f}" for v in values)


def registration_flags(volumes: Mapping[str, Any]) -> tuple[str, ...]:
    """A prediction's flags for the modalities :func:`onto_first_by_registration` registered: ``registered:NAME
    <the transform found>``."""
    return tuple(f"registered:{name} {v.meta[REGISTRATION_META]}" for name, v in volumes.items()
                 if v is not None and v.meta.get(REGISTRATION_META))  # fmt: skip
