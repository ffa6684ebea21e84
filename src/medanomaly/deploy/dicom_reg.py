"""A fusion call's registrations as a DICOM Spatial Registration object (REG, PS3.3 A.39): what a viewer applies to
show the moved modality where the call saw it.

A call made with ``--register-to-first`` (:mod:`medanomaly.engine.alignment`) moved each other modality onto the
first; its SR says so in words (Algorithm Parameters). The REG says it in numbers: filed in the first modality's study,
in that series' frame of reference, one Registration Sequence item for that frame (the identity) and one per moved
series' frame, whose rigid Frame of Reference Transformation Matrix takes a point of the moved series into the first's
coordinates (C.20.2.1.1), each item listing the images it registers; the Common Instance Reference module lists them
by series (another study's under Studies Containing Other Referenced Instances). UIDs derive from the run and the
first series, as the SEG's do; ``dciodvfy`` validates it. A series registered within the first's own frame (a patient
who moved between two series of one session) gets no REG: two items of one frame would contradict each other; the
SR's Algorithm Parameters say it.

Example:
    >>> ds = build_registration(source, [(pd_headers, matrix)], run_id="r1")   # doctest: +SKIP
    >>> ds.Modality, len(ds.RegistrationSequence)                              # doctest: +SKIP
    ('REG', 2)
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medanomaly.deploy.dicom_seg import SEG_SERIES_NUMBER
from medanomaly.deploy.dicom_source import SourceSeries, derived_instance, image_reference
from medanomaly.errors import InputError

__all__ = ["SPATIAL_REGISTRATION_STORAGE", "build_registration", "can_register_frames", "registered_series",
           "write_registration"]

SPATIAL_REGISTRATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.1"
_IDENTITY = (1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)


def can_register_frames(source: SourceSeries, moved: Sequence[tuple[Sequence[Any], Sequence[float]]]) -> bool:
    """Whether :func:`build_registration` can relate these series: every one records a frame of reference, and each
    moved one another than the first's."""
    frame = str(source.frame_of_reference_uid or "")
    frames = [str(headers[0].get("FrameOfReferenceUID") or "") if headers else "" for headers, _ in moved]
    return bool(frame and moved and all(frames) and frame not in frames)


def registered_series(headers: Mapping[str, Sequence[Any]],
                      volumes: Mapping[str, Any]) -> list[tuple[Sequence[Any], Sequence[float]]]:  # fmt: skip
    """``(headers, moving -> fixed matrix)`` of each modality whose DICOM headers are given (by modality) and whose
    Volume was registered onto the first (its ``meta["registration_matrix"]``, :mod:`medanomaly.engine.alignment`)."""
    from medanomaly.engine.alignment import MATRIX_META

    return [(series, volumes[name].meta[MATRIX_META]) for name, series in headers.items()
            if volumes.get(name) is not None and volumes[name].meta.get(MATRIX_META)]  # fmt: skip


def write_registration(path: Path, source: SourceSeries, moved: Sequence[tuple[Sequence[Any], Sequence[float]]], *,
                       run_id: str, algorithm: str) -> Path | None:  # fmt: skip
    """Write the Spatial Registration of ``moved`` onto ``source`` at ``path`` (:func:`build_registration`) and return
    it; None, nothing written, when no series was moved or a frame is not recorded (:func:`can_register_frames`). The
    archive batch and the service both write theirs so."""
    from medanomaly.deploy.atomic import atomic_save_dataset

    if not can_register_frames(source, moved):
        return None
    return atomic_save_dataset(path, build_registration(source, moved, run_id=run_id, algorithm=algorithm))


def build_registration(source: SourceSeries, moved: Sequence[tuple[Sequence[Any], Sequence[float]]], *,
                       run_id: str = "", algorithm: str = "medanomaly") -> Any:  # fmt: skip
    """A Spatial Registration of ``moved`` series onto ``source``'s frame (pydicom Dataset, ready to save).

    Args:
        source: the first modality's series (the call's, whose study and frame the REG is filed in).
        moved: per moved series, its image headers (:func:`medanomaly.deploy.dicom_source.series_headers`) and its
            4 x 4 moving -> fixed matrix, row by row (:func:`medanomaly.engine.alignment.moving_to_fixed`).
        run_id: identifies the model run; enters the deterministic UIDs.
        algorithm: the task, in the series description.

    Raises:
        InputError: the first series or a moved one records no frame of reference, or a moved one records the first's
            (a REG relates frames; a patient who moved within one frame is said by the SR's parameters only).
    """
    from pydicom.sequence import Sequence as DicomSequence

    if not can_register_frames(source, moved):  # an item of the first's frame would contradict its identity item
        raise InputError("a spatial registration relates frames of reference: every series must record one, each "
                         "moved series another than the first's")  # fmt: skip
    frame = str(source.frame_of_reference_uid)
    now = datetime.datetime.now()
    ds = derived_instance(source, run_id, "reg", SPATIAL_REGISTRATION_STORAGE, "REG", SEG_SERIES_NUMBER + 4,
                          f"{algorithm} registration of the fused modalities")  # fmt: skip
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.InstanceCreationDate, ds.InstanceCreationTime = ds.ContentDate, ds.ContentTime
    ds.ContentLabel = "REGISTRATION"
    ds.ContentDescription = "rigid registration by mutual information onto the first modality"
    ds.ContentCreatorName = ""
    body_part = source.datasets[0].get("BodyPartExamined")
    if body_part:  # tells validators whether General Series Laterality is needed (a paired part)
        ds.BodyPartExamined = str(body_part)
    else:  # Type 2C when the part may be paired: present and empty (unknown), as the Parametric Map does
        ds.Laterality = ""
    ds.RegistrationSequence = DicomSequence([_registration(frame, source.datasets, _IDENTITY)]
                                            + [_registration(str(h[0].FrameOfReferenceUID), h, m) for h, m in moved])
    _common_instance_reference(ds, [list(source.datasets), *[list(h) for h, _ in moved]])
    return ds


def _registration(frame: str, headers: Sequence[Any], matrix: Sequence[float]) -> Any:
    """One Registration Sequence item: a frame, its images, and the rigid matrix into the REG's frame."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    item = Dataset()
    item.FrameOfReferenceUID = frame
    item.ReferencedImageSequence = DicomSequence([image_reference(ds) for ds in headers])
    transformation = Dataset()
    transformation.FrameOfReferenceTransformationMatrixType = "RIGID"
    transformation.FrameOfReferenceTransformationMatrix = [f"{v:.10g}" for v in matrix]
    registration = Dataset()
    registration.MatrixSequence = DicomSequence([transformation])
    registration.RegistrationTypeCodeSequence = DicomSequence()
    item.MatrixRegistrationSequence = DicomSequence([registration])
    return item


def _common_instance_reference(ds: Any, series: Sequence[Sequence[Any]]) -> None:
    """Every referenced image by series: this study's in Referenced Series, another study's in Studies Containing Other
    Referenced Instances (PS3.3 C.12.2)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    by_study: dict[str, list[Any]] = {}
    for headers in series:
        item = Dataset()
        item.SeriesInstanceUID = headers[0].SeriesInstanceUID
        item.ReferencedInstanceSequence = DicomSequence([image_reference(h) for h in headers])
        by_study.setdefault(str(headers[0].StudyInstanceUID), []).append(item)
    ds.ReferencedSeriesSequence = DicomSequence(by_study.pop(str(ds.StudyInstanceUID), []))
    if by_study:
        others = []
        for study, items in by_study.items():
            other = Dataset()
            other.StudyInstanceUID = study
            other.ReferencedSeriesSequence = DicomSequence(items)
            others.append(other)
        ds.StudiesContainingOtherReferencedInstancesSequence = DicomSequence(others)
