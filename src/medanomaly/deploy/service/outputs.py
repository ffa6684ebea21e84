"""What a finished job leaves in its study folder, and the result JSON the API and viewer read.

``result.json``: the :class:`~medanomaly.types.Prediction` JSON plus, per finding, its number, the
axial slice the viewer jumps to (the slice of largest lesion area, the one the overlay PNG shows),
that point in LPS and RAS mm, and which files exist. Beside it: ``image.nii.gz`` (the study on its
own grid, for the viewer; a fusion model's other modalities sent as ``modalities/N.nii.gz``), ``masks/N.nii.gz``
and ``contours/N.nii.gz`` (lesion N and its outline, slice by slice), ``overlays/N.png`` and ``heatmap.nii.gz`` when the model gives a voxel map. For an upload of DICOM
files with findings or a map: ``dicom/seg.dcm``, ``rtstruct.dcm``, ``sr.dcm`` (and ``map.dcm``) referencing the
uploaded series, as ``predict --dicom`` and the PACS bridge write them, for a DICOM viewer (OHIF) or a PACS.
Every file is written atomically; ``result.json`` last, so its presence means the job is complete.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.deploy.dicom_out import has_dicom_results
from medanomaly.jsonio import write_json
from medanomaly.types import Finding, Prediction, Volume, intensity_unit

__all__ = ["write_outputs", "finding_view", "DICOM_KINDS"]

#: The DICOM objects a study may have, by the name the API serves them under.
DICOM_KINDS = ("seg", "rtstruct", "sr", "reg", "parametric_map")


def finding_view(volume: Volume, finding: Finding) -> dict[str, Any]:
    """Where the viewer shows a finding: voxel (x, y, slice) and that point in LPS and RAS mm."""
    idx = volume.physical_to_index(finding.center_mm)
    z = int(np.clip(round(float(idx[2])), 0, volume.shape[0] - 1))
    if finding.mask is not None and finding.mask.same_grid(volume) and np.asarray(finding.mask.array).any():
        areas = (np.asarray(finding.mask.array) > 0).reshape(volume.shape[0], -1).sum(1)
        z = int(np.argmax(areas))
    voxel = [float(idx[0]), float(idx[1]), float(z)]
    lps = [float(v) for v in volume.index_to_physical(voxel)]
    return {"slice": z, "voxel": [round(v, 2) for v in voxel], "point_lps_mm": [round(v, 3) for v in lps],
            "point_ras_mm": [round(-lps[0], 3), round(-lps[1], 3), round(lps[2], 3)]}  # fmt: skip


def _contour(mask: np.ndarray) -> np.ndarray:
    """The outline of a (z, y, x) mask, slice by slice (mask minus its in-plane erosion)."""
    from scipy import ndimage

    inside = mask > 0
    eroded = ndimage.binary_erosion(inside, structure=np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], bool))
    return (inside & ~eroded).astype(np.uint8)


def _write_volume(volume: Volume, path: Path) -> str:
    from medanomaly.io import write

    write(volume, path)  # all-or-nothing (io.staged)
    return path.name


def write_outputs(study_dir: Path, volume: Volume, prediction: Prediction, model_name: str, task: str,
                  dicom_source: Path | None = None,
                  explanation: tuple[Volume | None, dict[str, Any]] | None = None,
                  modalities: Mapping[str, Volume | None] | None = None,
                  evidence: list[Any] | None = None, parameters: tuple[str, ...] = (),
                  registrations: list[Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """Write a job's files into ``study_dir`` and return the result document (also ``result.json``);
    ``dicom_source``: the uploaded DICOM folder, whose series the DICOM outputs reference; ``explanation``: the map of
    the call (``serve --explain``, written as the heatmap when the model gives no map) and what it is; ``modalities``:
    a fusion call's images by modality (``volume`` is the first one sent), each one viewable on its grid listed in
    ``doc["modalities"]`` (``{"n", "name", "unit"}``, n 0 = the image) and written as ``modalities/N.nii.gz``;
    ``evidence``: the headers of the other DICOM modalities sent, listed in the call SR's evidence; ``parameters``: the
    run's thresholds, the SR's Algorithm Parameters; ``registrations``: the DICOM modalities registered onto the first
    (headers, moving -> fixed matrix), written as ``dicom/reg.dcm`` (:mod:`medanomaly.deploy.dicom_reg`)."""
    doc: dict[str, Any] = {"model": model_name, "task": task, **prediction.to_json()}
    heatmap = prediction.anomaly_map
    if explanation is not None:
        heatmap = heatmap if heatmap is not None else explanation[0]
        doc["explanation"] = explanation[1]
    if dicom_source is not None and has_dicom_results(prediction, task):
        doc["dicom"] = _dicom_outputs(study_dir, dicom_source, volume, prediction, model_name, task, evidence or [],
                                      parameters, registrations or [])
    viewable = volume.n_components == 1  # a volume or one slice (X-ray, mammogram); not an RGB image
    doc["image"] = {"shape_zyx": list(volume.shape), "spacing_mm": list(volume.spacing), "viewable": viewable,
                    "unit": intensity_unit(volume)}  # fmt: skip
    if viewable:
        _write_volume(volume, study_dir / "image.nii.gz")
        if modalities:
            doc["modalities"] = _write_modalities(study_dir, volume, modalities)
    if heatmap is not None and viewable and heatmap.same_grid(volume):
        _write_volume(heatmap, study_dir / "heatmap.nii.gz")
        doc["heatmap"] = True
    rows = []
    for n, finding in enumerate(prediction.findings, start=1):
        row = {"n": n, **finding.to_json(), **(finding_view(volume, finding) if viewable else {})}
        if viewable and finding.mask is not None and finding.mask.same_grid(volume):
            mask = (np.asarray(finding.mask.array) > 0).astype(np.uint8)
            _write_volume(finding.mask.with_array(mask), study_dir / "masks" / f"{n}.nii.gz")
            _write_volume(finding.mask.with_array(_contour(mask)), study_dir / "contours" / f"{n}.nii.gz")
            row["mask"] = True
        if viewable:
            row["overlay"] = _overlay(volume, finding, study_dir / "overlays" / f"{n}.png")
        rows.append(row)
    doc["findings"] = rows
    write_json(study_dir / "result.json", doc)
    return doc


def _write_modalities(study_dir: Path, volume: Volume, modalities: Mapping[str, Volume | None]) -> list[dict[str, Any]]:
    """The modalities the viewer can switch between: ``volume`` (the image, n 0) and every other one sent that is one
    component on its grid, written as ``modalities/N.nii.gz``."""
    first = next(name for name, image in modalities.items() if image is volume)
    listed = [{"n": 0, "name": first, "unit": intensity_unit(volume)}]
    for name, image in modalities.items():
        if image is None or image is volume or image.n_components != 1 or not image.same_grid(volume):
            continue
        _write_volume(image, study_dir / "modalities" / f"{len(listed)}.nii.gz")
        listed.append({"n": len(listed), "name": name, "unit": intensity_unit(image)})
    return listed


def _dicom_outputs(study_dir: Path, source: Path, volume: Volume, prediction: Prediction, model_name: str,
                   task: str, evidence: list[Any], parameters: tuple[str, ...] = (),
                   registrations: list[Any] | None = None) -> dict[str, str]:  # fmt: skip
    """DICOM SEG / RT Structure Set / SR / Parametric Map of the findings and map, written into ``study_dir/dicom``
    (:func:`medanomaly.deploy.dicom_out.write_dicom_outputs_for_path`): ``{kind: file name}``, or ``{"error": reason}``
    when the upload's headers cannot be referenced (the job's other results stand)."""
    from medanomaly.deploy.batch_context import BatchOptions
    from medanomaly.deploy.dicom_out import source_series_for_path, write_dicom_outputs_for_path
    from medanomaly.deploy.dicom_reg import write_registration
    from medanomaly.errors import InputError

    try:
        series = source_series_for_path(source, volume)  # the upload's headers, read once for every object
        out = write_dicom_outputs_for_path(series, volume, prediction, study_dir / "dicom", run_id=f"service:{model_name}",
                                           site=BatchOptions().resolved_site(task), algorithm=task, task=task,
                                           evidence=evidence, parameters=parameters)  # fmt: skip
        reg = write_registration(study_dir / "dicom" / "reg.dcm", series, registrations or [],
                                 run_id=f"service:{model_name}", algorithm=task)  # fmt: skip
    except InputError as exc:
        return {"error": exc.reason}
    written = {"seg": out.seg, "rtstruct": out.rtstruct, "sr": out.sr, "reg": reg, "parametric_map": out.parametric_map}
    return {kind: path.name for kind, path in written.items() if path is not None}


def _overlay(volume: Volume, finding: Finding, path: Path) -> bool:
    from medanomaly.evaluate.lung_report import plot_finding

    plot_finding(volume, finding, path)  # all-or-nothing (io.staged.save_figure)
    return True
