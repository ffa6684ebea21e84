"""Lesion masks as a DICOM Segmentation (SEG) that references its source series (highdicom).

One segment per finding with a mask, numbered in finding order (1 = first finding). Each
segment carries the finding type (SNOMED CT, e.g. Nodule 27925004) in the category
"Morphologically Abnormal Structure", the anatomic site, the algorithm (automatic, artificial
intelligence family, medanomaly version) and a tracking identifier and UID that the SR
(:mod:`medanomaly.deploy.dicom_sr`) repeats, so a viewer can link a measurement to its segment.

Frames are matched to source images by position (:mod:`medanomaly.deploy.dicom_source`), empty
frames are omitted, and disjoint lesions are encoded as a label map (one frame per slice for all
segments), overlapping ones as stacked binary segments. UIDs are derived from the run id and
source series UID, so the same run on the same series writes the same SOP Instance UID.

Example:
    >>> seg = build_seg(findings, source, volume, run_id="r1")           # doctest: +SKIP
    >>> seg.SegmentSequence[0].TrackingID                                # doctest: +SKIP
    'Lesion 1'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from medanomaly.deploy.codes import deterministic_uid, finding_category, finding_site, finding_type
from medanomaly.deploy.dicom_source import MANUFACTURER, MODEL_NAME, SourceSeries, software_version
from medanomaly.errors import InputError
from medanomaly.types import Finding, Volume

if TYPE_CHECKING:  # pragma: no cover
    import highdicom as hd

__all__ = ["SegmentInfo", "build_seg", "finding_masks", "segment_infos", "segment_label"]

#: SeriesNumber of the SEG, SR and Parametric Map series we create (source series are usually < 100).
SEG_SERIES_NUMBER = 901


@dataclass(frozen=True)
class SegmentInfo:
    """What the SR needs to know about one segment.

    Attributes:
        finding_index: index of the finding in the findings list (0-based).
        segment_number: SEG segment number (1-based).
        tracking_id: human-readable tracking identifier ("Lesion 1").
        tracking_uid: tracking unique identifier, shared by the SEG segment and the SR group.
    """

    finding_index: int
    segment_number: int
    tracking_id: str
    tracking_uid: str


def segment_infos(findings: Sequence[Finding], series_uid: str, run_id: str) -> list[SegmentInfo]:
    """Tracking ids and UIDs of the findings that have a mask (those that become segments)."""
    out = []
    for i, f in enumerate(findings):
        if f.mask is None:
            continue
        n = len(out) + 1
        uid = deterministic_uid(run_id, series_uid, "lesion", str(i))
        out.append(SegmentInfo(finding_index=i, segment_number=n, tracking_id=f"Lesion {i + 1}", tracking_uid=uid))
    return out


def segment_label(info: SegmentInfo, finding: Finding) -> str:
    """What a segment (and the RT Structure Set's ROI of the same finding) is called: ``Lesion 1 (nodule)``, the
    algorithm's words, at most 64 characters (an LO)."""
    return f"{info.tracking_id} ({finding.label})"[:64]


def _on_grid(mask: Volume, volume: Volume) -> np.ndarray:
    """A finding mask as a boolean (z, y, x) array on ``volume``'s grid (nearest-neighbour if needed)."""
    if not mask.same_grid(volume, tol=1e-3):
        from medanomaly.preprocess.resample import resample_like

        mask = resample_like(mask.with_array(np.asarray(mask.array) > 0, label=True), volume, "nearest")
    array = np.asarray(mask.array)
    return (array[..., 0] if array.ndim == 4 else array) > 0


def finding_masks(findings: Sequence[Finding], infos: Sequence[SegmentInfo], volume: Volume) -> list[np.ndarray]:
    """The boolean masks of the segment findings on the volume grid, in segment order.

    Raises:
        InputError: a finding mask has no voxel on the volume grid.
    """
    masks = []
    for info in infos:
        mask = findings[info.finding_index].mask
        assert mask is not None  # segment_infos keeps findings with masks only
        binary = _on_grid(mask, volume)
        if not binary.any():
            raise InputError(f"{info.tracking_id}: mask has no voxel on the source grid")
        masks.append(binary)
    return masks


def _pixel_array(masks: Sequence[np.ndarray], source: SourceSeries) -> np.ndarray:
    """Label map (z, y, x) when the masks are disjoint, else stacked (z, y, x, segments), in file order."""
    total = np.zeros(masks[0].shape, np.uint16)
    for m in masks:
        total += m
    if int(total.max()) <= 1:
        dtype = np.uint8 if len(masks) < 256 else np.uint16
        labels = np.zeros(masks[0].shape, dtype)
        for n, m in enumerate(masks, start=1):
            labels[m] = n
        return source.frames(labels)
    return np.stack([source.frames(m.astype(np.uint8)) for m in masks], axis=-1)


def _description(info: SegmentInfo, finding: Finding, site: str | None, algorithm: str) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algo = hd.AlgorithmIdentificationSequence(
        name=algorithm[:64], family=codes.cid7162.ArtificialIntelligence, version=software_version()
    )
    return hd.seg.SegmentDescription(
        segment_number=info.segment_number,
        segment_label=segment_label(info, finding),
        segmented_property_category=finding_category(),
        segmented_property_type=finding_type(finding.label),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algo,
        tracking_uid=info.tracking_uid,
        tracking_id=info.tracking_id,
        anatomic_regions=[finding_site(site)] if site else None,
    )


def build_seg(
    findings: Sequence[Finding],
    source: SourceSeries,
    volume: Volume,
    *,
    run_id: str = "",
    site: str | None = "lung",
    algorithm: str = "medanomaly",
) -> tuple[hd.seg.Segmentation, list[SegmentInfo]]:
    """A DICOM SEG (BINARY) of the findings' masks on the source series, and its segment infos.

    Args:
        findings: the findings; those without a mask get no segment.
        source: the source series headers matched to ``volume`` (:func:`load_source_series`).
        volume: the image the findings were made on (its grid is the source grid).
        run_id: identifies the model run; enters the deterministic UIDs.
        site: anatomic site name of the findings (see :data:`medanomaly.deploy.codes.SITES`), or None.
        algorithm: algorithm name written into each segment (e.g. the task name).

    Raises:
        InputError: no finding has a mask, or a mask misses the grid.
    """
    import highdicom as hd

    infos = segment_infos(findings, source.series_uid, run_id)
    if not infos:
        raise InputError("no finding has a mask: nothing to put in a DICOM SEG")
    masks = finding_masks(findings, infos, volume)
    seg = hd.seg.Segmentation(
        source_images=list(source.datasets),
        pixel_array=_pixel_array(masks, source),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_description(i, findings[i.finding_index], site, algorithm) for i in infos],
        series_instance_uid=deterministic_uid(run_id, source.series_uid, "seg-series"),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=deterministic_uid(run_id, source.series_uid, "seg"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=software_version(),
        device_serial_number="0",
        content_description="lesion masks"[:64],
        content_label="LESIONS",
        series_description=f"{algorithm} lesion segmentation"[:64],
    )
    return seg, infos
