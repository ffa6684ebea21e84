"""Findings as a DICOM SR Measurement Report (TID 1500), one measurement group per lesion (highdicom).

Per lesion with a mask, a Volumetric ROI group (TID 1411) holds:

* tracking identifier ("Lesion 1") and tracking UID, the same as the SEG segment's;
* the finding type (SNOMED CT, e.g. Nodule) and category, the finding site (e.g. Lung);
* the referenced SEG segment (SEG SOP instance + segment number + source series);
* measurements (TID 300): Volume (mL) with method Sum of segmented voxel method (DCM 126030), and for a
  lung finding a second Volume with method Partial-volume analysis (private code ``99MEDANOMALY`` ``PVA``:
  :mod:`medanomaly.quantify.partial_volume`), Diameter with derivation Maximum (the 3D longest
  diameter, mm), Long axis and Short axis on the axial slice (mm), Attenuation Coefficient
  with derivation Mean (HU, CT only), and the detector score as Certainty of Finding (DCM
  111012, unitless, higher = more likely a lesion; not a calibrated probability).

A lesion without a mask gets a TID 1501 group (same content, no region reference). The observer
is the medanomaly device; the report is marked complete and unverified (an algorithm's output).

Example:
    >>> seg, infos = build_seg(findings, source, volume, run_id="r1")     # doctest: +SKIP
    >>> sr = build_sr(findings, source, seg, infos, run_id="r1")          # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from medanomaly.deploy.codes import (
    PRIVATE_SCHEME,
    deterministic_uid,
    finding_category,
    finding_site,
    finding_type,
    unit,
    volume_method,
)
from medanomaly.deploy.dicom_seg import SegmentInfo
from medanomaly.deploy.dicom_source import MANUFACTURER, MODEL_NAME, SourceSeries, software_version
from medanomaly.types import Finding

if TYPE_CHECKING:  # pragma: no cover
    import highdicom as hd

__all__ = ["SR_SERIES_NUMBER", "algorithm_identification", "build_sr", "declare_private_scheme", "lesion_measurements",
           "observation_context"]

SR_SERIES_NUMBER = 902


def _measurement(name: Any, value: float, unit_name: str, derivation: Any = None, method: Any = None) -> Any:
    import highdicom as hd

    return hd.sr.Measurement(name=name, value=float(value), unit=unit(unit_name), derivation=derivation, method=method)


def lesion_measurements(finding: Finding, modality: str) -> list[Any]:
    """The TID 300 measurements of one finding (only finite values; mean HU for CT only)."""
    from pydicom.sr.codedict import codes

    out = []
    m = finding.measurements
    if m is not None:
        items: list[tuple[Any, float, str, Any, Any]] = [
            (codes.SCT.Volume, m.volume_ml, "ml", None, volume_method("voxels")),
            (codes.SCT.Volume, m.partial_volume_ml, "ml", None, volume_method("partial_volume")),
            (codes.SCT.Diameter, m.max_diameter_mm, "mm", codes.SCT.Maximum, None),
            (codes.SCT.LongAxis, m.long_axis_mm, "mm", None, None),
            (codes.SCT.ShortAxis, m.short_axis_mm, "mm", None, None),
        ]
        if modality == "CT":
            items.append((codes.DCM.AttenuationCoefficient, m.mean, "hu", codes.SCT.Mean, None))
        out += [_measurement(*item) for item in items if item[1] is not None and math.isfinite(item[1])]
    if math.isfinite(finding.score):
        out.append(_measurement(codes.DCM.CertaintyOfFinding, finding.score, "1"))
    return out


def algorithm_identification(algorithm: str, parameters: Sequence[str] = ()) -> Any:
    """TID 4019 Algorithm Identification: the algorithm (task) name, our version, and its ``parameters`` (the run's
    operating thresholds, :func:`threshold_parameters`) as Algorithm Parameters."""
    import highdicom as hd

    return hd.sr.AlgorithmIdentification(name=algorithm[:64], version=software_version(),
                                         parameters=list(parameters) or None)  # fmt: skip


def threshold_parameters(info: Any) -> tuple[str, ...]:
    """A run's recorded thresholds (``model.json`` ``thresholds``) as ``name=value`` texts, sorted: the operating
    point a report's reader needs to weigh a finding, or a "no findings" (a detector that found nothing at 0.5 is not
    one that found nothing at 0.05). Values that are not finite numbers are left out.

    >>> threshold_parameters(type("Info", (), {"thresholds": {"finding": 0.5, "candidate": 0.15, "bad": "x"}})())
    ('candidate=0.15', 'finding=0.5')
    """
    import math

    thresholds = getattr(info, "thresholds", None) or {}
    return tuple(f"{name}={float(value):g}" for name, value in sorted(thresholds.items())
                 if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))  # fmt: skip


def alignment_parameters(prediction: Any) -> tuple[str, ...]:
    """A fusion call's registrations (its ``registered:`` flags, :func:`medanomaly.engine.alignment.registration_flags`)
    as algorithm parameters: a reader of the SR learns the call was made on a modality moved onto another.

    >>> alignment_parameters(type("P", (), {"flags": ("missing_modality:CT", "registered:PD rigid onto T1: ...")})())
    ('registered:PD rigid onto T1: ...',)
    """
    return tuple(flag for flag in getattr(prediction, "flags", ()) if flag.startswith("registered:"))


def _group(
    index: int,
    finding: Finding,
    info: SegmentInfo | None,
    seg: Any,
    source: SourceSeries,
    site: str | None,
    algorithm: str,
    run_id: str,
    parameters: Sequence[str] = (),
) -> Any:
    """One TID 1411 (with segment) or TID 1501 (without) measurement group."""
    import highdicom as hd

    tracking_uid = info.tracking_uid if info else deterministic_uid(run_id, source.series_uid, "lesion", str(index))
    common: dict[str, Any] = dict(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uid, identifier=f"Lesion {index + 1}"),
        finding_type=finding_type(finding.label),
        finding_category=finding_category(),
        finding_sites=[hd.sr.FindingSite(finding_site(site))] if site else None,
        algorithm_id=algorithm_identification(algorithm, parameters),
        measurements=lesion_measurements(finding, source.modality) or None,
    )
    if info is None:
        return hd.sr.MeasurementsAndQualitativeEvaluations(**common)
    segment = hd.sr.ReferencedSegment(
        sop_class_uid=seg.SOPClassUID,
        sop_instance_uid=seg.SOPInstanceUID,
        segment_number=info.segment_number,
        source_series=hd.sr.SourceSeriesForSegmentation(source.series_uid),
    )
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(referenced_segment=segment, **common)


def observation_context(algorithm: str) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=deterministic_uid("device", MODEL_NAME, software_version()),
        name=algorithm[:64],
        manufacturer_name=MANUFACTURER,
        model_name=MODEL_NAME,
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(observer_type=codes.cid270.Device,
                                                      observer_identifying_attributes=device)  # fmt: skip
    )


def build_sr(
    findings: Sequence[Finding],
    source: SourceSeries,
    seg: Any | None,
    infos: Sequence[SegmentInfo],
    *,
    run_id: str = "",
    site: str | None = "lung",
    algorithm: str = "medanomaly",
    parameters: Sequence[str] = (),
) -> hd.sr.Comprehensive3DSR:
    """A Comprehensive 3D SR holding a TID 1500 Measurement Report of the findings.

    Args:
        findings: the findings, in report order ("Lesion 1" = ``findings[0]``).
        source: the source series headers (the evidence, and the series segments refer to).
        seg: the SEG written from the same findings (:func:`medanomaly.deploy.dicom_seg.build_seg`),
            or None when no finding has a mask.
        infos: the SEG's segment infos (tracking UIDs and segment numbers).
        run_id: identifies the model run; enters the deterministic UIDs.
        site: anatomic site name of the findings, or None.
        algorithm: algorithm name (e.g. the task name) for the observer and each group.
        parameters: the algorithm's parameters (:func:`threshold_parameters`), in each group's identification.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    by_index = {i.finding_index: i for i in infos}
    groups = [_group(k, f, by_index.get(k), seg, source, site, algorithm, run_id, parameters)
              for k, f in enumerate(findings)]  # fmt: skip
    report = hd.sr.MeasurementReport(
        observation_context=observation_context(algorithm),
        procedure_reported=codes.cid100.ImagingProcedure,
        imaging_measurements=groups,
        title=codes.cid7021.ImagingMeasurementReport,
    )
    evidence = [*source.datasets, *([seg] if seg is not None else [])]
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=deterministic_uid(run_id, source.series_uid, "sr-series"),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=deterministic_uid(run_id, source.series_uid, "sr"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=f"{algorithm} measurement report"[:64],
    )
    if any(f.measurements is not None and math.isfinite(f.measurements.partial_volume_ml) for f in findings):
        declare_private_scheme(sr)  # only a report holding a partial-volume method code uses the scheme
    return sr


def declare_private_scheme(sr: Any) -> None:
    """Name medanomaly's private coding scheme in the Coding Scheme Identification Sequence (PS3.3 C.12.1), which a
    report using one of its codes (the partial-volume method) should carry."""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = "medanomaly private codes"
    item.CodingSchemeResponsibleOrganization = MANUFACTURER
    sr.CodingSchemeIdentificationSequence = [item]


#: Measurement names read back by :func:`read_sr_lesions`: key -> (scheme, code value).
_READ_BACK = {
    "volume_ml": ("SCT", "118565006"),
    "max_diameter_mm": ("SCT", "81827009"),
    "long_axis_mm": ("SCT", "103339001"),
    "short_axis_mm": ("SCT", "103340004"),
    "mean_hu": ("DCM", "112031"),
    "score": ("DCM", "111012"),
}


def read_sr_lesions(path_or_dataset: Any) -> list[dict[str, Any]]:
    """The lesion groups of a TID 1500 SR written by :func:`build_sr`, as plain dicts.

    Each dict holds ``tracking_id``, ``tracking_uid``, ``finding_type`` (code meaning),
    ``finding_site`` (meaning or None), ``segment_number`` and ``seg_sop_instance_uid`` (None
    for a group without a segment) and the measurements (``volume_ml``, ``partial_volume_ml``, ``max_diameter_mm``,
    ``long_axis_mm``, ``short_axis_mm``, ``mean_hu``, ``score``) present in the group. An SR in Explicit VR Big Endian
    (an archive's rewrite) reads as well (:func:`~medanomaly.io.dicom.as_little_endian`).
    """
    import highdicom as hd
    import pydicom

    from medanomaly.io.dicom import as_little_endian

    ds = path_or_dataset if isinstance(path_or_dataset, pydicom.Dataset) else pydicom.dcmread(path_or_dataset)
    sr = hd.sr.Comprehensive3DSR.from_dataset(as_little_endian(ds))
    content = sr.content
    groups = [*content.get_volumetric_roi_measurement_groups(), *content.get_image_measurement_groups()]
    rows = []
    for g in groups:
        row: dict[str, Any] = {
            "tracking_id": g.tracking_identifier,
            "tracking_uid": str(g.tracking_uid),
            "finding_type": g.finding_type.meaning if g.finding_type else None,
            "finding_site": g.finding_sites[0].value.meaning if g.finding_sites else None,
            "segment_number": None,
            "seg_sop_instance_uid": None,
        }
        ref = getattr(g, "referenced_segment", None)
        if ref is not None:
            row["segment_number"] = int((ref.referenced_segment_numbers or [0])[0])
            row["seg_sop_instance_uid"] = str(ref.referenced_sop_instance_uid)
        for m in g.get_measurements():
            for key, (scheme, value) in _READ_BACK.items():
                if m.name.scheme_designator == scheme and m.name.value == value:
                    row[_by_method(key, m)] = float(m.value)
        rows.append(row)
    rows.sort(key=lambda r: _lesion_number(r["tracking_id"]))
    return rows


def _by_method(key: str, measurement: Any) -> str:
    """``partial_volume_ml`` for a volume measured by partial-volume analysis, else ``key``."""
    method = measurement.method
    if key == "volume_ml" and method is not None and method.scheme_designator == PRIVATE_SCHEME:
        return "partial_volume_ml"
    return key


def _lesion_number(tracking_id: Any) -> int:
    """3 for "Lesion 3"; 0 for anything else."""
    last = str(tracking_id).split()[-1] if str(tracking_id).split() else ""
    return int(last) if last.isdigit() else 0
