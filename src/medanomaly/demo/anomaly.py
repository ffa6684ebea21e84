"""Demo step ``anomaly``: a normal-only model (the registered atlas, strict label-free validation:
``configs/anomaly_brain_atlas.yaml``) trained on the normal brain MRIs our data sources ship, tested on
the real tumours of pyradiomics brain1/brain2 (expert masks).

Writes ``anomaly_run/`` (a run folder like ``medanomaly train`` writes, with ``report.html``: score
histograms, ROC, tumour maps) into the demo folder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from medanomaly.demo import DemoContext


def run(ctx: DemoContext) -> dict[str, Any]:
    """Train and evaluate the atlas anomaly model; print its pixel and slice AUROC and per-case calls."""
    import json

    from medanomaly.anomaly.demo import run_anomaly_step

    report = run_anomaly_step(ctx.out_dir)
    metrics = json.loads((report.parent / "metrics.json").read_text())
    ctx.console.print(f"anomaly (normal-only training, tested on real tumours): {_summary(metrics)}")
    for case in metrics.get("cases", []):
        ctx.console.print(f"  {case['case']}: flagged {case['flagged_ml']:.1f} mL at the validation threshold "
                          f"(tumour {case['tumour_ml']:.1f} mL, Dice {case['dice']:.2f}), call {case['label']}")  # fmt: skip
    ctx.console.print(f"report: {report}")
    return metrics


def _summary(metrics: dict[str, Any]) -> str:
    """``pixel AUROC x, slice AUROC y [lo, hi]`` from whatever of them the metrics hold."""
    parts = []
    for key, name in (("pixel_auroc", "pixel AUROC"), ("slice_auroc", "slice AUROC")):
        value = metrics.get(key)
        if isinstance(value, dict) and value.get("value") is not None:
            ci95 = value.get("ci95")
            ci = f" [{ci95[0]:.3f}, {ci95[1]:.3f}]" if ci95 else ""
            parts.append(f"{name} {value['value']:.3f}{ci}")
        elif isinstance(value, (int, float)):
            parts.append(f"{name} {value:.3f}")
    return ", ".join(parts) or "see the report"
