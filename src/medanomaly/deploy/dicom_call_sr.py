"""Whole-image results as a DICOM SR (TID 1500): a classifier's or fusion model's call, or a detector's "no findings".

A classifier run on a PACS, an archive or a DICOM upload left nothing in DICOM: the SEG and the lesion SR are written
for findings only, so a breast lesion classifier's "malignant, 0.81" reached no viewer or PACS. The report holds one
Measurements and Qualitative Evaluations group (TID 1501, no region: the call is about the series) whose

* Finding (DCM 121071, the group's finding type) is the class called, or "abstained" when the call is not to be
  acted on (low confidence or a failed quality check), coded in medanomaly's private scheme ``99MEDANOMALY`` (class
  names are a run's own: no standard code says "uncertain" for every run), and
* measurements are Certainty of Finding (DCM 111012: the probability of the class called, unitless) and each
  class's probability (private codes ``P1``, ``P2``, ... named "Probability of CLASS", unitless).

A detector or an anomaly model that finds no lesion in a series reports that too (:func:`build_no_findings_sr`:
Lesion = Absent, standard codes): nothing was written, so a PACS could not tell a study read and clear from one never
read. The source series' images are the evidence; the observer is the medanomaly device; the report is complete and
unverified, as the lesion report is (:mod:`medanomaly.deploy.dicom_sr`, whose observer and algorithm it shares).

Example:
    >>> is_call(Prediction(scores=(0.2, 0.8), class_names=("benign", "malignant"), label="malignant"))
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from medanomaly.deploy.codes import PRIVATE_SCHEME, deterministic_uid, finding_site, finding_type, unit
from medanomaly.deploy.dicom_source import MANUFACTURER, SourceSeries
from medanomaly.types import Prediction

__all__ = ["FINDING_TASKS", "build_call_sr", "build_no_findings_sr", "is_call", "read_call_sr"]

#: Tasks whose results are findings: a series in which they find none gets a "no findings" report.
FINDING_TASKS = ("lung_nodule", "detection", "anomaly")


def is_call(prediction: Prediction) -> bool:
    """Whether a prediction is a whole-image call to report: class probabilities (two classes or more, finite) and
    no findings (findings have their own report)."""
    return (not prediction.findings and len(prediction.class_names) >= 2
            and all(math.isfinite(float(s)) for s in prediction.scores))  # fmt: skip


def _private(value: str, meaning: str) -> Any:
    from pydicom.sr.coding import Code

    return Code(value=value, scheme_designator=PRIVATE_SCHEME, meaning=meaning[:64])


def _class_code(prediction: Prediction) -> Any:
    if prediction.abstained:
        return _private("ABSTAIN", "abstained (not to be acted on)")
    index = prediction.class_names.index(prediction.label)
    return _private(f"C{index + 1}", prediction.label)


def build_call_sr(prediction: Prediction, source: SourceSeries, *, run_id: str = "", site: str | None = None,
                  algorithm: str = "medanomaly", evidence: Sequence[Any] = (), parameters: Sequence[str] = ()) -> Any:  # fmt: skip
    """A Comprehensive 3D SR of the call (see the module docstring), its UIDs deterministic in (run, series);
    ``evidence``: the headers of other series the call was made from too (a fusion model's other modalities), listed
    with the source series' in the SR's evidence.

    Raises:
        ValueError: the prediction is not a call (:func:`is_call`).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if not is_call(prediction):
        raise ValueError("not a whole-image call: no class probabilities, or findings")
    called = prediction.scores[prediction.class_names.index(prediction.label)]
    measurements = [hd.sr.Measurement(name=codes.DCM.CertaintyOfFinding, value=float(called), unit=unit("1"))]
    measurements += [hd.sr.Measurement(name=_private(f"P{k + 1}", f"Probability of {name}"), value=float(p),
                                       unit=unit("1")) for k, (name, p) in enumerate(zip(prediction.class_names,
                                                                                          prediction.scores,
                                                                                          strict=True))]  # fmt: skip
    group = _group(source, run_id, site, algorithm, "Image call", parameters, finding_type=_class_code(prediction),
                   measurements=measurements)  # fmt: skip
    return _report(group, source, run_id, algorithm, "classification", private_codes=True, evidence=evidence)


def build_no_findings_sr(source: SourceSeries, *, run_id: str = "", site: str | None = None,
                         algorithm: str = "medanomaly", parameters: Sequence[str] = ()) -> Any:  # fmt: skip
    """A Comprehensive 3D SR saying that a detector (or an anomaly model) found no lesion in the series: one TID 1501
    group "No findings" whose qualitative evaluation is Lesion (SCT 52988006) = Absent (SCT 272519000), standard codes
    only. A run that finds nothing wrote nothing, so a PACS could not tell a study read and clear from one never read."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    absent = hd.sr.QualitativeEvaluation(name=finding_type("lesion"), value=codes.SCT.Absent)
    group = _group(source, run_id, site, algorithm, "No findings", parameters, qualitative_evaluations=[absent])
    return _report(group, source, run_id, algorithm, "no findings", private_codes=False)


def _group(source: SourceSeries, run_id: str, site: str | None, algorithm: str, identifier: str,
           parameters: Sequence[str], **content: Any) -> Any:  # fmt: skip
    """The one TID 1501 group of a whole-image result (no region: about the series)."""
    import highdicom as hd

    from medanomaly.deploy.dicom_sr import algorithm_identification

    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=deterministic_uid(run_id, source.series_uid, "call"),
                                                     identifier=identifier),  # fmt: skip
        finding_sites=[hd.sr.FindingSite(finding_site(site))] if site else None,
        algorithm_id=algorithm_identification(algorithm, parameters), **content,
    )  # fmt: skip


def _report(group: Any, source: SourceSeries, run_id: str, algorithm: str, what: str, private_codes: bool,
            evidence: Sequence[Any] = ()) -> Any:  # fmt: skip
    """The SR of one group (its UIDs those a lesion report of the same run and series would have: one or the other)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from medanomaly.deploy.dicom_sr import SR_SERIES_NUMBER, declare_private_scheme, observation_context

    report = hd.sr.MeasurementReport(observation_context=observation_context(algorithm),
                                     procedure_reported=codes.cid100.ImagingProcedure, imaging_measurements=[group],
                                     title=codes.cid7021.ImagingMeasurementReport)  # fmt: skip
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*source.datasets, *evidence], content=report[0],
        series_instance_uid=deterministic_uid(run_id, source.series_uid, "sr-series"), series_number=SR_SERIES_NUMBER,
        sop_instance_uid=deterministic_uid(run_id, source.series_uid, "sr"), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
        series_description=f"{algorithm} {what}"[:64],
    )  # fmt: skip
    if private_codes:
        declare_private_scheme(sr)
    return sr


def read_call_sr(path_or_dataset: Any) -> dict[str, Any]:
    """The whole-image result of an SR written here: ``{"class": meaning, "certainty": p, "probabilities": {class:
    p}}`` for a call (:func:`build_call_sr`), ``{"absent": "Lesion"}`` for no findings (:func:`build_no_findings_sr`); in
    Explicit VR Big Endian too."""
    import highdicom as hd
    import pydicom

    from medanomaly.io.dicom import as_little_endian

    ds = path_or_dataset if isinstance(path_or_dataset, pydicom.Dataset) else pydicom.dcmread(path_or_dataset)
    (group,) = hd.sr.Comprehensive3DSR.from_dataset(as_little_endian(ds)).content.get_image_measurement_groups()
    absent = [e.name.meaning for e in group.get_qualitative_evaluations() if e.value.value == "272519000"]
    if absent:
        return {"absent": absent[0]}
    out: dict[str, Any] = {"class": group.finding_type.meaning, "probabilities": {}}
    for m in group.get_measurements():
        if m.name.scheme_designator == "DCM" and m.name.value == "111012":
            out["certainty"] = float(m.value)
        elif m.name.scheme_designator == PRIVATE_SCHEME:
            out["probabilities"][m.name.meaning.removeprefix("Probability of ")] = float(m.value)
    return out
