"""Explain a model's call on one image file, or evaluate explanations over a dataset.

Detectors (an Explainable with a ``patch_size``): the detector runs on the image (or a
``findings.json`` gives the findings) and each finding is explained on a patch around it (one PNG
per finding, plus the stitched map as NIfTI on the image grid). Whole-image models (classifiers,
fusion): the whole image is explained (PNG + NIfTI). A reference lesion mask adds its contour, the
pointing game and the energy inside. ``evaluate`` adds deletion/insertion AUCs against random
maps; with a folder or a CSV manifest (columns ``image``, optional ``mask``) it evaluates a dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.io.staged import write_staged
from medanomaly.jsonio import write_json

__all__ = ["FOV_RANGE_MM", "MAX_EXPLAINED_FINDINGS", "check_options", "explain_file"]

IMAGE_SUFFIXES = (".nrrd", ".nii", ".nii.gz", ".mha", ".mhd", ".dcm", ".png", ".jpg", ".jpeg", ".npz")


def _dataset_items(path: Path) -> list[tuple[str, Path, Path | None]]:
    """(name, image, mask) from a CSV manifest or a folder (``X_image.*`` paired with ``X_label/_mask.*``)."""
    from medanomaly.errors import InputError
    from medanomaly.io.tables import read_csv

    if path.suffix.lower() == ".csv":
        with read_csv(path, "manifest") as reader:
            rows = list(reader)
        if not rows or "image" not in rows[0]:
            raise InputError("manifest needs an 'image' column", path)
        return [(Path(r["image"]).name, path.parent / r["image"], (path.parent / r["mask"]) if r.get("mask") else None)
                for r in rows]  # fmt: skip
    files = sorted(p for p in path.iterdir() if p.name.lower().endswith(IMAGE_SUFFIXES))
    masks = {p.name for p in files if "_label" in p.name or "_mask" in p.name}
    items = []
    for p in files:
        if p.name in masks:
            continue
        mask = next((p.with_name(p.name.replace("_image", tag)) for tag in ("_label", "_mask")
                     if "_image" in p.name and p.name.replace("_image", tag) in masks), None)  # fmt: skip
        items.append((p.name, p, mask))
    if not items:
        raise InputError("no images found", path)
    return items


def _evaluate_dataset(ex: Any, path: Path, method: str, layer: str | None, target: int | None) -> dict[str, Any]:
    from medanomaly.errors import InputError
    from medanomaly.explain.faithfulness import evaluate_dataset
    from medanomaly.io import read, read_mask

    skipped: list[tuple[str, str]] = []

    def items():
        for name, image, mask in _dataset_items(path):
            try:
                volume = read(image)
                yield name, volume, read_mask(mask, volume) if mask is not None else None
            except InputError as exc:
                skipped.append((name, str(exc)))

    if ex.patch_size is not None:
        raise InputError("--evaluate on a folder needs a whole-image model; give one CT with --mask for a lung run")
    result = evaluate_dataset(ex.model, items(), method, layer=layer, target=target if target is not None else ex.target,
                              preprocess=ex.preprocess, output_fn=ex.output_fn)  # fmt: skip
    out = result.to_json()
    out["skipped"] += [{"name": n, "reason": r} for n, r in skipped]
    out["summary"]["synthetic_model"] = ex.synthetic
    return out


def _stitch(ct: Any, results: list[Any]) -> Any:
    """Maximum of the finding maps, resampled onto the full CT grid (a Volume)."""
    import numpy as np

    from medanomaly.explain.maps import resample_to

    full = np.zeros(ct.shape, np.float32)
    for r in results:
        full = np.maximum(full, np.asarray(resample_to(r.map, ct).array))
    meta = {"description": results[0].map.meta.get("description", "attribution map")} if results else {}
    return ct.with_array(full, **meta)


#: Most findings a findings.json given to ``explain --findings`` may list (a detector lists at most its
#: ``max_findings``, 20 by default; a hand-made file could list a million, each a patch explanation and a PNG).
MAX_EXPLAINED_FINDINGS = 1000
#: Bounds of a finding overlay's field of view, mm (a NaN one was a traceback, a negative or huge one no picture).
FOV_RANGE_MM = (5.0, 1000.0)


def check_options(ex: Any, fov: float, target: int | None, method: str = "gradcam", layer: str | None = None) -> None:
    """Refuse, before anything is read or written, an option that is not about the image: an unknown ``--method``, a
    ``--layer`` the network does not have (both named the image, as if it were at fault), a field of view outside
    :data:`FOV_RANGE_MM` and a ``--target`` class the model does not have (a detector or anomaly map has no classes
    to pick: it was ignored silently)."""
    import math

    from medanomaly.errors import InputError
    from medanomaly.registry import EXPLAINERS

    EXPLAINERS.get(method)  # ConfigError listing the valid methods
    if layer is not None and ex.model is not None and hasattr(ex.model, "named_modules"):
        from medanomaly.explain.methods import resolve_layer

        resolve_layer(ex.model, layer)
    low, high = FOV_RANGE_MM
    if not (math.isfinite(fov) and low <= fov <= high):
        raise InputError(f"--fov must be {low:g}..{high:g} mm, got {fov:g}")
    if target is None:
        return
    names = ex.class_names or ()
    if ex.kind == "anomaly" or (ex.patch_size is not None and ex.runner is not None):
        raise InputError(f"--target picks a class of a classifier; a {ex.kind} run explains its map")
    if names and not 0 <= target < len(names):
        raise InputError(f"--target must be a class index 0..{len(names) - 1} ({', '.join(names)}), got {target}")


def reference_mask(path: Path, volume: Any, label: int = 0, frame: int | None = None) -> Any:
    """The reference lesion of ``path`` on ``volume``: every non-zero voxel, or label ``label`` alone (a structure set's
    ROI Number: its ROIs overlap, so one is read); ``frame``: the image's ``--frame`` (a 4D mask gives that volume).

    Raises:
        InputError: what :func:`medanomaly.io.read_mask` refuses, or no voxel of label ``label``.
    """
    import numpy as np

    from medanomaly.errors import InputError
    from medanomaly.io import read_mask

    lesion = read_mask(path, volume, label=label, frame=frame)
    if not label or lesion.meta.get("modality") == "RTSTRUCT":
        return lesion
    inside = np.asarray(lesion.array) == label
    if not inside.any():
        raise InputError(f"no voxel of label {label} in the mask", path)
    return lesion.with_array(inside.astype(np.uint8))


def explain_file(ex: Any, image: Path | Any, method: str, out: Path, layer: str | None = None, target: int | None = None,
                 mask: Path | None = None, evaluate: bool = False, dicom: bool = False, fov: float = 80.0,
                 findings_path: Path | None = None,
                 check_input: Callable[[Any, Any], None] | None = None, label: int = 0,
                 frame: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Explain a model's call on one image file (or, with ``evaluate``, a folder / CSV manifest).

    Args:
        ex: the model's :class:`~medanomaly.explain.adapters.Explainable` (``model.explainable()``).
        image: the image file (folder or CSV manifest with ``evaluate``), or an already read Volume
            (a fusion model's modalities stacked as components).
        method: a registered explainer (gradcam, occlusion, ...).
        out: output folder (PNG overlays, NIfTI map, ``explain.json``).
        mask: the reference lesion mask on the image grid (contour, pointing game, energy inside).
        label: the mask's label that is the lesion (an RT Structure Set's ROI Number); 0: every non-zero voxel.
        frame: the ``--frame`` the image was read with: a 4D ``mask`` gives that volume.
        fov: field of view (mm) of each finding's overlay (detectors).
        findings_path: a findings.json to explain instead of running the detector.
        check_input: the loaded model's ``check_input(volume, path)``: an image of another modality or
            dimensionality than the model's is refused in one line, as ``predict`` refuses it.

    Returns:
        What it writes to ``explain.json``.
    """
    from medanomaly.errors import InputError
    from medanomaly.io import read

    check_options(ex, fov, target, method, layer)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder ({exc.strerror})", out) from None
    if isinstance(image, Path) and (image.suffix.lower() == ".csv" or image.is_dir() and evaluate):
        if not evaluate:
            raise InputError("a manifest is evaluated: add --evaluate", image)
        report = _evaluate_dataset(ex, image, method, layer, target)
        write_json(out / "explain.json", report)
        return report
    try:
        volume = read(image) if isinstance(image, Path) else image  # a folder: a DICOM series, as predict reads it
    except InputError as exc:
        if not image.is_dir():
            raise
        raise InputError(f"{exc.reason} (a folder of images to evaluate takes --evaluate)", exc.path) from None
    if check_input is not None:
        check_input(volume, image if isinstance(image, Path) else None)
    coloured = False
    if ex.model_image is not None:  # a one-channel model runs a colour image as its luma, as its predict runs it
        volume, coloured = ex.model_image(volume)
    lesion = reference_mask(mask, volume, label, frame) if mask is not None else None
    if lesion is not None and not lesion.same_grid(volume, tol=1e-3):
        raise InputError("the mask is not on the image grid", mask)
    report: dict[str, Any] = {"method": method, "run_kind": ex.kind, "synthetic_model": ex.synthetic,
                              **({"colour_to_grey": True} if coloured else {})}

    def explain_into(staged_json: Path) -> None:  # every file into a hidden folder, moved into ``out`` when all are whole
        stage = staged_json.parent
        if ex.kind == "anomaly":  # the map is the explanation (issue 15): no gradients, no occlusion of it
            report.update(_explain_anomaly(ex, volume, lesion, stage, method, evaluate))
        elif ex.patch_size is not None and ex.runner is not None:  # a detector: explain each finding
            report.update(_explain_findings(ex, volume, lesion, stage, method, layer, fov, evaluate, findings_path))
        else:
            reference = _dicom_reference(image, volume) if dicom else None
            report.update(_explain_whole(ex, volume, lesion, stage, method, layer, target, evaluate, dicom, reference))
        report.update(_relocated(report, str(stage), str(out)))
        write_json(staged_json, report)

    write_staged(out / "explain.json", explain_into)
    return report


def _relocated(value: Any, stage: str, out: str) -> Any:
    """``value`` with every path string under the hidden ``stage`` folder made a path under ``out``."""
    if isinstance(value, dict):
        return {k: _relocated(v, stage, out) for k, v in value.items()}
    if isinstance(value, list):
        return [_relocated(v, stage, out) for v in value]
    if isinstance(value, str) and (value == stage or value.startswith(stage + "/")):
        return out + value[len(stage):]
    return value


def _explain_findings(ex: Any, volume: Any, lesion: Any, out: Path, method: str, layer: str | None, fov: float,
                      evaluate: bool, findings_path: Path | None) -> dict[str, Any]:  # fmt: skip
    """A detector: each finding (from the detector or a findings.json, plus the reference lesion)
    explained on a patch around it; the stitched map on the image grid; optional faithfulness."""
    from medanomaly.explain.findings import explain_findings_detailed
    from medanomaly.explain.overlay import write_map
    from medanomaly.errors import InputError
    from medanomaly.io.findings import read_findings
    from medanomaly.types import Finding

    report: dict[str, Any] = {"files": []}
    if ex.kind == "lung_nodule" and not volume.meta.get("modality"):  # NRRD carries no modality
        volume = volume.with_meta(modality="CT")
    findings = read_findings(findings_path) if findings_path is not None else list(ex.runner.detect(volume))
    if findings_path is not None and len(findings) > MAX_EXPLAINED_FINDINGS:  # each a patch explanation and a PNG
        raise InputError(f"{len(findings):,} findings to explain, more than {MAX_EXPLAINED_FINDINGS:,}: keep the ones "
                         "to explain in the findings file", findings_path)  # fmt: skip
    if lesion is not None:
        centre = volume.index_to_physical(np.argwhere(np.asarray(lesion.array) > 0).mean(0)[::-1])
        findings.append(Finding(center_mm=tuple(centre), bbox_mm=(tuple(centre), tuple(centre)), score=float("nan"),
                                label="reference lesion", mask=lesion))  # fmt: skip
    results = explain_findings_detailed(ex, volume, findings, out, method=method, layer=layer, fov_mm=fov)
    report["findings"] = [
        {"index": r.index, "label": f.label, "score": f.score, "flat_map": r.flat,
         "peak_mm": None if r.flat else [round(v, 2) for v in r.peak_mm], "peak_in_mask": r.peak_in_mask,
         "png": str(r.png)}
        for r, f in zip(results, findings, strict=False)
    ]  # fmt: skip
    report["files"] += [str(r.png) for r in results]
    if results:
        full = _stitch(volume, results)
        report["files"].append(str(write_map(full, out / "explanation.nii.gz")))
    if evaluate and results:
        report["faithfulness"] = _finding_faithfulness(ex, volume, results, findings, method, layer)
    return report


def _finding_faithfulness(ex: Any, volume: Any, results: list[Any], findings: list[Any], method: str,
                          layer: str | None) -> list[dict[str, Any]]:  # fmt: skip
    """Deletion/insertion AUCs of each finding's patch explanation against random maps."""
    from medanomaly.explain.faithfulness import evaluate_image
    from medanomaly.explain.maps import crop_patch
    from medanomaly.preprocess.resample import mask_onto_grid

    grid = ex.preprocess(volume)
    evals = []
    for r, f in zip(results, findings, strict=False):
        patch = crop_patch(grid, f.center_mm, ex.patch_size)
        pmask = None
        if f.mask is not None:
            pm = mask_onto_grid(f.mask, patch)
            pmask = pm.with_array((np.asarray(pm.array) >= 0.5).astype(np.uint8)) if pm.array.max() >= 0.5 else None
        res = evaluate_image(ex.model, patch, method, mask=pmask, target=ex.target, layer=layer,
                             output_fn=ex.output_fn)  # fmt: skip
        evals.append({"index": r.index, **res.to_json()})
    return evals


def _explain_anomaly(ex: Any, volume: Any, lesion: Any, out: Path, method: str, evaluate: bool) -> dict[str, Any]:
    """An anomaly model's explanation is its own voxel map (``Prediction.anomaly_map``), written as any map
    (PNG overlay + NIfTI) with the pointing game against the reference lesion. ``method`` is not applied:
    Grad-CAM of a reconstruction network or occlusion of a registered atlas would explain something else."""
    from medanomaly.errors import InputError

    if evaluate:
        raise InputError("--evaluate measures a classifier's faithfulness; an anomaly map is its own explanation")
    heat = ex.runner.predict(volume).anomaly_map
    if heat is None:
        raise InputError("the anomaly model gave no map for this image")
    return {"method": "anomaly_map", "requested_method": method, **_map_report(volume, heat, lesion, out, "anomaly map")}


def _map_report(volume: Any, heat: Any, lesion: Any, out: Path, method: str) -> dict[str, Any]:
    """Write one map over the image (PNG overlay + NIfTI) and report its files, its peak (LPS mm; none for
    an empty or constant map) and, with a reference lesion, the pointing game and the energy inside it."""
    from medanomaly.explain.maps import peak_mm
    from medanomaly.explain.overlay import save_explanation

    files = save_explanation(volume, heat, out, mask=lesion, method=method)
    peak = peak_mm(heat)
    report: dict[str, Any] = {"files": [str(p) for p in files.values()], "flat_map": peak is None,
                              "peak_mm": None if peak is None else [round(v, 2) for v in peak]}  # fmt: skip
    if lesion is not None:
        from medanomaly.explain.faithfulness import energy_inside, pointing_game

        report["pointing_hit"] = pointing_game(heat, lesion)
        report["energy_inside"] = energy_inside(heat, lesion)
    return report


def _dicom_reference(image: Any, volume: Any) -> Any:
    """The source header a DICOM input's secondary capture joins (its patient and study), or None: not a DICOM file
    or folder, or a header without a StudyInstanceUID (the capture then starts a new, anonymous study)."""
    from medanomaly.io.dicom_reference import series_reference

    if not isinstance(image, Path):
        return None
    reference = series_reference(image, volume.meta.get("series_uid"))
    return reference if reference is not None and str(reference.get("StudyInstanceUID", "")).strip() else None


def _explain_whole(ex: Any, volume: Any, lesion: Any, out: Path, method: str, layer: str | None,
                   target: int | None, evaluate: bool, dicom: bool, reference: Any = None) -> dict[str, Any]:  # fmt: skip
    """A whole-image model: one map over the image (PNG overlays + NIfTI), pointing game against the
    reference lesion, optional DICOM secondary capture (in the source's study when ``reference`` is its header) and
    faithfulness."""
    from medanomaly.explain.maps import explain

    heat = explain(ex.model, volume, method, target=target if target is not None else ex.target, layer=layer,
                   preprocess=ex.preprocess, output_fn=ex.output_fn)  # fmt: skip
    report = _map_report(volume, heat, lesion, out, method)
    if dicom:
        from medanomaly.explain.dicom_out import write_secondary_capture

        report["files"] += [str(p) for p in write_secondary_capture(volume, heat, out / "dicom", mask=lesion,
                                                                    reference=reference)]
    if evaluate:
        from medanomaly.explain.faithfulness import evaluate_image

        res = evaluate_image(ex.model, volume, method, mask=lesion, target=target if target is not None else ex.target,
                             layer=layer, preprocess=ex.preprocess, output_fn=ex.output_fn)  # fmt: skip
        report["faithfulness"] = res.to_json()
    return report
