"""Demo step ``lung``: simulate -> train -> detect on the real lung1/lung2 -> measure -> report.

Writes into the demo folder (``runs/demo/`` by default): ``lung_model/`` (a run folder like
``medanomaly train`` writes: config, model.json, status.json, safetensors weights, training history), ``<case>/findings.json`` and overlay PNGs for each real lung CT,
``froc.png`` and ``bland_altman_*.png`` (held-out simulated scans, synthetic), ``metrics.json``
and ``report.html``. The configuration is :class:`medanomaly.detect.config.LungNoduleConfig`'s
defaults (the same as ``configs/lung_nodule.yaml``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from medanomaly.demo import DemoContext


def run(ctx: DemoContext, config: Any = None) -> dict[str, Any]:
    """Run the lung case study into ``ctx.out_dir``; print the real-lesion summary; return metrics."""
    import json

    from rich.table import Table

    from medanomaly.detect.config import LungNoduleConfig
    from medanomaly.engine import train_run

    cfg = config if config is not None else LungNoduleConfig(name="lung_nodule_demo")
    train_run(cfg, ctx.out_dir / "lung_model", overwrite=True, out_dir=ctx.out_dir)
    metrics = json.loads((ctx.out_dir / "metrics.json").read_text())
    table = Table(title="Real lesions (never seen in training)")
    for col in ("case", "rank of lesion", "score", "FP in scan at that score", "findings", "ref mL", "measured mL"):
        table.add_column(col, justify="right")
    for name, r in metrics["real_lesions"].items():
        table.add_row(
            name,
            str(r["rank"]) if r["rank"] else "missed",
            f"{r['score']:.3f}" if r["score"] is not None else "-",
            str(r["fp_at_threshold"]) if r["rank"] else "-",
            str(r["n_findings"]),
            f"{r['reference_ml']:.2f}" if r["reference_ml"] is not None else "-",
            f"{r['measured_ml']:.2f}" if r["measured_ml"] is not None else "-",
        )
    ctx.console.print(table)
    held = metrics["heldout_synthetic"]
    points = ", ".join(f"{k}: {v:.2f}" for k, v in held["sensitivity_at_fp_per_scan"].items())
    ctx.console.print(
        f"held-out simulated scans (synthetic): CPM {held['cpm']:.3f} on {held['n_scans']} scans / "
        f"{held['n_lesions']} lesions; sensitivity at FP/scan {points}"
    )
    ctx.console.print(f"report: {ctx.out_dir / 'report.html'}")
    return metrics
