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
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.deploy.export import MATCH_LIMIT, GraphSpec
from medanomaly.deploy.onnx_detection import CLASSIFIER_GRAPH
from medanomaly.errors import InputError

__all__ = ["graphs", "package_info", "check"]


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


def validation_images(run_dir: Path, limit: int) -> tuple[list[Any], bool]:
    """Up to ``limit`` images of the run's validation split (never test) and whether they are synthetic."""
    from medanomaly.config import load_config
    from medanomaly.detect.detection_task import load_lesion_set

    lesions = load_lesion_set(load_config(Path(run_dir) / "config.yaml"))
    return [it.image for it in lesions.split("val")][:limit], bool(lesions.synthetic)


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

    images, synthetic = validation_images(model.run_dir, limit)
    if not images:
        raise InputError("the run's validation split holds no image to check the export on", model.run_dir)
    exported = onnx_detection_model(session(folder / "model.onnx"), info, folder)
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
