"""Write the DICOM results of one series: SEG and RT Structure Set of the lesion masks, SR (TID 1500), Parametric Map.

The one call the batch runner, the PACS bridge and ``detect --dicom`` share:

>>> out = write_dicom_outputs(findings, files, volume, "out/series1", run_id="r1")  # doctest: +SKIP
>>> out.seg.name, out.rtstruct.name, out.sr.name                                     # doctest: +SKIP
('seg.dcm', 'rtstruct.dcm', 'sr.dcm')

Files are written all-or-nothing (temporary file, then rename). A SEG and an RT Structure Set
(:mod:`medanomaly.deploy.dicom_rtstruct`: what radiotherapy planning systems import) are written when at least
one finding has a mask, an SR when there is at least one finding (or, for a whole-image model's call, an SR of
the class and its probabilities: :mod:`medanomaly.deploy.dicom_call_sr`), a Parametric Map when a score
map is given. UIDs are deterministic in (run id, source series), so a rerun rewrites the same
instances. :func:`dciodvfy` runs the DICOM validator of dicom3tools on a written file.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medanomaly.deploy.atomic import atomic_save_dataset
from medanomaly.deploy.dicom_source import SourceSeries, load_source_series
from medanomaly.errors import InputError
from medanomaly.types import Finding, Volume

log = logging.getLogger(__name__)

__all__ = ["DicomOutputs", "ValidationResult", "dciodvfy", "has_dicom_results", "source_series_for_path",
           "write_dicom_outputs", "write_dicom_outputs_for_path"]


@dataclass(frozen=True)
class DicomOutputs:
    """Paths of the DICOM objects written for one series (None when not written)."""

    seg: Path | None = None
    sr: Path | None = None
    parametric_map: Path | None = None
    rtstruct: Path | None = None

    def paths(self) -> list[Path]:
        """The written files: SEG, RT Structure Set, SR, Parametric Map (those present)."""
        return [p for p in (self.seg, self.rtstruct, self.sr, self.parametric_map) if p is not None]


def write_dicom_outputs(
    findings: Sequence[Finding],
    source_files: Sequence[str | Path] | SourceSeries,
    volume: Volume,
    out_dir: str | Path,
    *,
    run_id: str = "",
    site: str | None = "lung",
    algorithm: str = "medanomaly",
    score_map: Volume | None = None,
    map_label: str = "anomaly score",
    call: Any = None,
    report_none: bool = False,
    evidence: Sequence[Any] = (),
    parameters: Sequence[str] = (),
) -> DicomOutputs:
    """Write ``seg.dcm``, ``rtstruct.dcm``, ``sr.dcm`` and ``map.dcm`` for one series into ``out_dir``.

    Args:
        findings: the findings made on ``volume`` (masks on its grid; measured in mL, mm, HU).
        source_files: the DICOM files of the source series (or an already loaded :class:`SourceSeries`).
        volume: the image read from those files.
        out_dir: output folder (created).
        run_id: identifies the model run (deterministic UIDs).
        site: anatomic site name of the findings ("lung", "breast", ...), or None.
        algorithm: algorithm name (e.g. the task name).
        score_map: a voxel-wise score map to write as a Parametric Map, or None.
        map_label: what the map's values are.
        call: the :class:`~medanomaly.types.Prediction` of a whole-image model (class probabilities, no findings:
            :func:`~medanomaly.deploy.dicom_call_sr.is_call`), written as the SR (``sr.dcm``) instead of a lesion
            report; None otherwise.
        report_none: with no findings (and no call), write an SR saying no lesion was found (a detector's or anomaly
            model's result: :data:`~medanomaly.deploy.dicom_call_sr.FINDING_TASKS`).
        evidence: headers of other series the call was made from (a fusion model's other modalities,
            :func:`~medanomaly.deploy.dicom_source.series_headers`), listed in the call SR's evidence.
        parameters: the algorithm's parameters in the SR (the run's thresholds,
            :func:`~medanomaly.deploy.dicom_sr.threshold_parameters`): the operating point of its findings or its
            "no findings".

    Returns:
        The written paths.

    Raises:
        InputError: the source files do not match the volume, or a mask misses the grid.
    """
    from medanomaly.io.dicom_reference import quiet_person_name

    with quiet_person_name():
        return _write(findings, source_files, volume, Path(out_dir), run_id, site, algorithm, score_map, map_label,
                      call, report_none, evidence, parameters)  # fmt: skip


def _write(findings: Sequence[Finding], source_files: Sequence[str | Path] | SourceSeries, volume: Volume,
           out_dir: Path, run_id: str, site: str | None, algorithm: str, score_map: Volume | None,
           map_label: str, call: Any, report_none: bool, evidence: Sequence[Any] = (),
           parameters: Sequence[str] = ()) -> DicomOutputs:  # fmt: skip
    from medanomaly.deploy.dicom_call_sr import build_call_sr, build_no_findings_sr, is_call
    from medanomaly.deploy.dicom_rtstruct import TooManyContourPoints, build_rtstruct
    from medanomaly.deploy.dicom_seg import build_seg
    from medanomaly.deploy.dicom_sr import build_sr
    from medanomaly.deploy.parametric_map import build_parametric_map

    source = source_files if isinstance(source_files, SourceSeries) else load_source_series(source_files, volume)
    seg_path = sr_path = pm_path = rt_path = None
    seg, infos = None, []
    if any(f.mask is not None for f in findings):
        seg, infos = build_seg(findings, source, volume, run_id=run_id, site=site, algorithm=algorithm)
        seg_path = atomic_save_dataset(out_dir / "seg.dcm", seg)
        try:
            rt_path = atomic_save_dataset(out_dir / "rtstruct.dcm", build_rtstruct(findings, source, volume,
                                                                                   run_id=run_id, algorithm=algorithm))
        except TooManyContourPoints as exc:  # a noise-like mask: the SEG holds it, contours would not be read
            log.warning("%s", exc.reason)
    if findings:
        sr = build_sr(findings, source, seg, infos, run_id=run_id, site=site, algorithm=algorithm, parameters=parameters)
        sr_path = atomic_save_dataset(out_dir / "sr.dcm", sr)
    elif call is not None and is_call(call):
        sr_path = atomic_save_dataset(out_dir / "sr.dcm", build_call_sr(call, source, run_id=run_id, site=site,
                                                                        algorithm=algorithm, evidence=evidence,
                                                                        parameters=parameters))  # fmt: skip
    elif report_none:
        sr_path = atomic_save_dataset(out_dir / "sr.dcm", build_no_findings_sr(source, run_id=run_id, site=site,
                                                                               algorithm=algorithm,
                                                                               parameters=parameters))  # fmt: skip
    if score_map is not None:
        pm = build_parametric_map(score_map, source, volume, run_id=run_id, label=map_label, site=site)
        pm_path = atomic_save_dataset(out_dir / "map.dcm", pm)
    return DicomOutputs(seg=seg_path, sr=sr_path, parametric_map=pm_path, rtstruct=rt_path)


def has_dicom_results(prediction: Any, task: str) -> bool:
    """Whether :func:`write_dicom_outputs` has anything to write for a ``task`` model's prediction on a DICOM series:
    findings, a map, a whole-image call, or (a detector's or an anomaly model's) none found. The batch and the
    service ask it before they write."""
    from medanomaly.deploy.dicom_call_sr import FINDING_TASKS, is_call

    return bool(prediction.findings) or prediction.anomaly_map is not None or is_call(prediction) or task in FINDING_TASKS


def source_series_for_path(image: str | Path, volume: Volume) -> SourceSeries:
    """The source headers of an image the user named (a DICOM folder or file), matched to ``volume``'s slices and
    checked for what our outputs reference: call it before the model runs, so a source our SEG / SR cannot reference
    is refused before the work, not after it.

    Raises:
        InputError: the image is not DICOM (a SEG/SR must reference DICOM source images), or its headers do not fit
            (:func:`~medanomaly.deploy.dicom_source.load_source_series`).
    """
    from medanomaly.io import detect_format

    image = Path(image)
    fmt = detect_format(image)
    if fmt not in ("dicom", "dicom-folder"):
        raise InputError(f"DICOM SEG/SR need a DICOM source series, not {fmt}", image)
    if fmt == "dicom":
        return load_source_series([image], volume)
    from medanomaly.deploy.archive import Problem, iter_files

    problems: list[Problem] = []
    return load_source_series(list(iter_files(image, problems)), volume)


def write_dicom_outputs_for_path(
    image: str | Path | SourceSeries,
    volume: Volume,
    prediction: Any,
    out_dir: str | Path,
    *,
    run_id: str = "",
    site: str | None = "lung",
    algorithm: str = "medanomaly",
    task: str = "",
    evidence: Sequence[Any] = (),
    parameters: Sequence[str] = (),
) -> DicomOutputs:
    """``write_dicom_outputs`` for an image the user named (``detect RUN IMAGE --dicom``).

    Args:
        image: the DICOM folder or file the volume was read from, or its :func:`source_series_for_path`.
        volume: the volume read from it.
        prediction: the model's :class:`~medanomaly.types.Prediction` (findings, anomaly map).
        out_dir, run_id, site, algorithm: as for :func:`write_dicom_outputs`.
        task: the model's task: a detector's or anomaly model's finding nothing is reported too.
        evidence, parameters: as for :func:`write_dicom_outputs`.

    Raises:
        InputError: the image is not DICOM, or its headers do not fit (:func:`source_series_for_path`).
    """
    from medanomaly.deploy.dicom_call_sr import FINDING_TASKS

    source = image if isinstance(image, SourceSeries) else source_series_for_path(image, volume)
    return write_dicom_outputs(prediction.findings, source, volume, out_dir, run_id=run_id, site=site,
                               algorithm=algorithm, score_map=prediction.anomaly_map, call=prediction,
                               report_none=task in FINDING_TASKS, evidence=evidence, parameters=parameters)  # fmt: skip


@dataclass(frozen=True)
class ValidationResult:
    """What ``dciodvfy`` said about one file: its Error and Warning lines."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def dciodvfy(path: str | Path, timeout_s: float = 120.0) -> ValidationResult:
    """Validate a DICOM file against its IOD with ``dciodvfy`` (Debian package dicom3tools).

    Raises:
        InputError: dciodvfy is not installed (``make setup`` installs dicom3tools).
    """
    exe = shutil.which("dciodvfy")
    if exe is None:
        raise InputError("dciodvfy not found (install the Debian package dicom3tools: make setup)", path)
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, errors="replace", timeout=timeout_s)
    lines = (proc.stdout + proc.stderr).splitlines()
    return ValidationResult(
        errors=[ln.strip() for ln in lines if ln.startswith("Error")],
        warnings=[ln.strip() for ln in lines if ln.startswith("Warning")],
    )
