"""Export of a generic 2D ``detection`` run (heatmap detector + lesion classifier) to ONNX.

Two graphs go into the package (see :mod:`medanomaly.deploy.onnx_detection` for how they run):

* ``model.onnx``: the heatmap network, input ``input`` (B, 1, z, y, x) (z = 1 for a 2D run),
  output ``logits``, dynamic batch and in-plane axes (and z for a 3D run); the sliding window,
  the search region and the findings post-processing stay outside, in NumPy;
* ``lesion_classifier.onnx`` (when the run has a classifier): crops (B, 1, y, x) -> ``logits``.

The check (:func:`check_detection`) runs the torch run and the package on the run's
**validation** images: the heatmaps must agree within :data:`~medanomaly.deploy.export.MATCH_LIMIT`
(max abs probability), the classifier probabilities too, and the findings must be the same
(count, boxes to 1e-3 mm, labels); otherwise export refuses in one line.

``--int8`` (:func:`quantise`) quantises the heatmap network (the graph that runs over every
window: the cost of detection) as :mod:`medanomaly.deploy.quantise` does, calibrated on
windows of the **validation** images; the lesion classifier (a few crops per image) stays fp32.
The guard runs the fp32 and the int8 package on the validation images and refuses when the
validation CPM drops by more than :data:`~medanomaly.deploy.quantise.MAX_CPM_DROP`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.deploy.export import MATCH_LIMIT, GraphSpec
from medanomaly.deploy.onnx_detection import CLASSIFIER_GRAPH
from medanomaly.errors import InputError

__all__ = ["graphs", "package_info", "check", "quantise"]


def graphs(model: Any) -> list[tuple[str, GraphSpec]]:
    """(file name, what to trace) of each network of a loaded detection run."""
    import torch

    det = model.detector
    roi = tuple(int(r) for r in det.roi_size)
    axes = {0: "batch", 3: "y", 4: "x"} if det.spatial_dims == 2 else {0: "batch", 2: "z", 3: "y", 4: "x"}
    out = [("model.onnx", GraphSpec(det.model_.eval(), (torch.zeros((1, 1, *roi)),), ["input"], ["logits"],
                                    {"input": axes, "logits": axes}))]  # fmt: skip
    clf = model.classifier
    if clf is not None:
        batch = {0: "batch"}
        out.append((CLASSIFIER_GRAPH, GraphSpec(clf.model_.eval(), (torch.zeros((1, 1, *clf.crop_size)),), ["input"],
                                                ["logits"], {"input": batch, "logits": batch})))  # fmt: skip
    return out


def package_info(model: Any) -> Any:
    """The run's RunInfo plus what the package needs to rebuild the detector and classifier
    without the run folder (JSON: parameters and the learned decision rule)."""
    extra = {**model.info.extra, "heatmap_detector": model.detector.get_params()}
    clf = model.classifier
    if clf is not None:
        params = {"class_names": list(clf.class_names), "model_name": clf.model_name, "model_params": clf.model_params,
                  "crop_size": list(clf.crop_size), "epochs": clf.epochs, "batch_size": clf.batch_size, "lr": clf.lr,
                  "seed": clf.seed, "abstain_coverage": clf.abstain_coverage}  # fmt: skip
        extra["lesion_classifier"] = {"params": params, "rule": clf.rule_.to_json(),
                                      "rule_fitted_on": getattr(clf, "rule_fitted_on_", "val")}  # fmt: skip
    return model.info.model_copy(update={"extra": extra})


def validation_items(run_dir: Path, limit: int) -> tuple[list[Any], bool]:
    """Up to ``limit`` items (image + annotated lesions) of the run's validation split (never test)
    and whether they are synthetic."""
    from medanomaly.config import load_config
    from medanomaly.detect.detection_task import load_lesion_set

    lesions = load_lesion_set(load_config(Path(run_dir) / "config.yaml"))
    return list(lesions.split("val"))[:limit], bool(lesions.synthetic)


def _same_findings(a: Any, b: Any) -> bool:
    if len(a.findings) != len(b.findings) or a.label != b.label:
        return False
    for fa, fb in zip(a.findings, b.findings, strict=True):
        if fa.label != fb.label or np.abs(np.subtract(fa.bbox_mm, fb.bbox_mm)).max() > 1e-3:
            return False
    return True


def compare(torch_model: Any, onnx_model: Any, image: Any) -> tuple[float, float, bool]:
    """(max |heatmap diff|, max |classifier probability diff|, same findings) of one image."""
    from medanomaly.detect.regions import search_region

    det = torch_model.detector
    region, _ = search_region(det.region, image, det.spacing_mm, det.region_margin_mm)
    ref, got = det.heatmap(image, region), onnx_model.detector.heatmap(image, region)
    heat = np.abs(np.asarray(ref.array) - np.asarray(got.array))
    a, b = torch_model.predict(image), onnx_model.predict(image)
    prob = 0.0
    if torch_model.classifier is not None and a.findings:
        crops = torch_model.classifier.crops_for(image, a.findings)
        prob = float(np.abs(torch_model.classifier.raw_proba(crops) - onnx_model.classifier.raw_proba(crops)).max())
    return float(heat.max(initial=0.0)), prob, _same_findings(a, b)


def check(model: Any, folder: Path, info: Any, limit: int) -> dict[str, Any]:
    """Run torch and the exported graphs on validation images (see the module docstring).

    Returns:
        The manifest record: ``fp32_max_abs_diff`` (heatmap), ``classifier_max_abs_diff``,
        ``validation_items`` and ``findings_match``.

    Raises:
        InputError: a difference above the limit, or different findings, on one validation image.
    """
    from medanomaly.deploy.onnx_detection import onnx_detection_model
    from medanomaly.deploy.onnx_model import session

    items, synthetic = validation_items(model.run_dir, limit)
    images = [it.image for it in items]
    if not images:
        raise InputError("the run's validation split holds no image to check the export on", model.run_dir)
    exported = onnx_detection_model(session(folder / "model.onnx"), info, folder)
    model.detector.precision = "fp32"  # the graphs are float32: compared with the torch network in float32
    heat, prob = 0.0, 0.0
    for i, image in enumerate(images):
        h, p, same = compare(model, exported, image)
        heat, prob = max(heat, h), max(prob, p)
        if not (max(heat, prob) <= MATCH_LIMIT):
            raise InputError(f"the ONNX graphs differ from torch by {max(heat, prob):.2e} on validation image {i} "
                             f"(limit {MATCH_LIMIT:g})", model.run_dir)  # fmt: skip
        if not same:
            raise InputError(f"the exported detector's findings differ from torch on validation image {i}", model.run_dir)
    return {"fp32_max_abs_diff": heat, "classifier_max_abs_diff": prob, "validation_items": len(images),
            "findings_match": True, "validation_synthetic": synthetic}  # fmt: skip


def _calibration_windows(detector: Any, items: list[Any]) -> list[dict[str, np.ndarray]]:
    """Network inputs (1, 1, z, y, x) of the validation images: the prepared image tiled by the
    window size (an image smaller than the window padded with its minimum, as a border)."""
    roi = tuple(int(r) for r in detector.roi_size)
    feeds = []
    for it in items:
        arr = np.asarray(detector.prepare(it.image).array, np.float32)
        pad = [(0, max(0, r - n)) for r, n in zip(roi, arr.shape, strict=True)]
        arr = np.pad(arr, pad, constant_values=float(arr.min()))
        starts = [range(0, n - r + 1, r) for r, n in zip(roi, arr.shape, strict=True)]
        for z in starts[0]:
            for y in starts[1]:
                for x in starts[2]:
                    window = arr[z : z + roi[0], y : y + roi[1], x : x + roi[2]]
                    feeds.append({"input": np.ascontiguousarray(window[None, None])})
    return feeds


def _validation_cpm(model: Any, items: list[Any], min_radius_mm: float) -> float:
    """CPM of a (package) detection model on annotated validation items."""
    from medanomaly.detect.breast_eval import image_marks
    from medanomaly.evaluate.froc import froc

    return float(froc([image_marks(it, model.predict(it.image).findings, min_radius_mm) for it in items]).cpm)


def quantise(model: Any, folder: Path, info: Any, limit: int, force: bool) -> dict[str, Any]:
    """``model.int8.onnx`` from ``folder/model.onnx`` behind the CPM guard (see the module docstring).

    Returns:
        The manifest's ``int8`` record (validation CPM of both graphs, the drop, ``passed``).

    Raises:
        InputError: no annotated validation image, or the guard refuses without ``force``.
    """
    from medanomaly.config import load_config
    from medanomaly.deploy.onnx_detection import onnx_detection_model
    from medanomaly.deploy.onnx_model import session
    from medanomaly.deploy.quantise import QDQ_RECORD, cpm_problem, guard_verdict, quantise_graph

    items, synthetic = validation_items(model.run_dir, limit)
    items = [it for it in items if it.lesions]
    if not items:
        raise InputError("the run's validation split holds no annotated image to calibrate and guard int8 on",
                         model.run_dir)  # fmt: skip
    feeds = _calibration_windows(model.detector, items)
    quantise_graph(folder / "model.onnx", folder / "model.int8.onnx", feeds)
    radius = load_config(Path(model.run_dir) / "config.yaml").evaluation.hit_min_radius_mm
    cpm = {name: _validation_cpm(onnx_detection_model(session(folder / graph), info, folder), items, radius)
           for name, graph in (("fp32", "model.onnx"), ("int8", "model.int8.onnx"))}  # fmt: skip
    result = {"metric": "cpm", "fp32": {"cpm": cpm["fp32"]}, "int8": {"cpm": cpm["int8"]},
              "cpm_drop": round(cpm["fp32"] - cpm["int8"], 6), "validation_images": len(items),
              "validation_synthetic": synthetic, "quantised": "heatmap network (the lesion classifier stays fp32)",
              **QDQ_RECORD, "calibration_items": len(feeds)}  # fmt: skip
    return guard_verdict(result, cpm_problem(cpm["fp32"], cpm["int8"]), force, model.run_dir)
