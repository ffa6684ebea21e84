"""Demo step ``breast``: lesion detection + benign / uncertain / malignant on mammography and ultrasound
phantoms (SYNTHETIC), through the ``detection`` task.

Trains ``configs/breast_mammo_detect.yaml`` and ``configs/breast_us_detect.yaml`` at a demo budget
(fewer patients and steps, :data:`DEMO_OVERRIDES`; a few minutes on 2 cores) into
``breast_mammo/`` and ``breast_us/`` run folders of the demo folder, each with ``metrics.json``
and ``report.html`` (FROC per image, per-lesion confusion matrix with CIs, overlays of boxes with
their classes), and prints the FROC and per-lesion numbers (synthetic).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from medanomaly.demo import DemoContext

ROOT = Path(__file__).resolve().parents[3]

#: The demo's budget on top of each config (the configs themselves are the full recipe).
DEMO_OVERRIDES: dict[str, dict[str, Any]] = {
    "breast_mammo_detect": {"data": {"n_patients": 36}, "train": {"steps": 150}, "classifier": {"epochs": 20},
                            "evaluation": {"n_bootstrap": 300}},
    "breast_us_detect": {"data": {"n_patients": 36, "size": 160}, "train": {"steps": 150},
                         "infer": {"roi_size": [1, 128, 128]}, "classifier": {"epochs": 20},
                         "evaluation": {"n_bootstrap": 300}},
}


def demo_config(name: str) -> Any:
    """The config ``configs/<name>.yaml`` with the demo budget applied (validated again)."""
    from medanomaly.config import load_config

    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    data = cfg.model_dump()
    for section, values in DEMO_OVERRIDES.get(name, {}).items():
        data[section] = {**data[section], **values}
    return type(cfg).model_validate({**data, "name": f"{name}_demo"})


def summary(metrics: dict[str, Any]) -> str:
    """One line: CPM and sensitivity at 1 FP/image with CIs, per-lesion accuracy and macro AUC (synthetic)."""
    fr = metrics["froc_per_image"]
    cpm, one = fr["cpm"], fr["sensitivity_at_fp_per_image"]["1"]
    text = (f"FROC per image: CPM {cpm['value']:.3f} [{cpm['ci_low']:.3f}, {cpm['ci_high']:.3f}], sensitivity at "
            f"1 FP/image {one['value']:.3f} [{one['ci_low']:.3f}, {one['ci_high']:.3f}] ({fr['n_images']} images, "
            f"{fr['n_lesions']} lesions)")  # fmt: skip
    lc = metrics["lesion_classification"]
    if lc.get("metrics"):
        acc, auc = lc["metrics"]["accuracy"], lc["metrics"]["macro"]["roc_auc"]
        text += (f"; per lesion (n={lc['n_lesions']}): accuracy {acc['value']:.3f} [{acc['ci_low']:.3f}, "
                 f"{acc['ci_high']:.3f}], macro AUC {auc['value']:.3f}, abstained {lc['n_abstained']}")  # fmt: skip
    return text + (" (synthetic)" if metrics["synthetic"] else "")


def run_breast_step(ctx: DemoContext) -> dict[str, Any]:
    """Train and evaluate the mammography and ultrasound detectors; print their numbers; return metrics."""
    import json

    from medanomaly.engine import train_run

    results = {}
    for name, folder in (("breast_mammo_detect", "breast_mammo"), ("breast_us_detect", "breast_us")):
        run = train_run(demo_config(name), ctx.out_dir / folder, overwrite=True)
        metrics = json.loads((run / "metrics.json").read_text())
        ctx.console.print(f"{folder}: {summary(metrics)}")
        ctx.console.print(f"report: {run / 'report.html'}")
        results[folder] = metrics
    return results
