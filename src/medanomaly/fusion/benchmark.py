"""Single modality vs early, feature, decision and hybrid fusion, on the same split, in one table.

Every variant is trained with the same data, settings and seed (:mod:`medanomaly.fusion.training`),
selected on validation, and scored on test: ROC AUC with a stratified bootstrap 95 % CI
(:func:`medanomaly.evaluate.metrics.classification_metrics`), AUC with each modality removed
(the missing-modality path), and, on simulated data, AUC on the lesions each contrast shows.
The table says SYNTHETIC when the data are simulated, and ends with a plain verdict: does the
best fusion variant beat the best single modality, and do their intervals overlap.

Example:
    >>> # from medanomaly.config import load_config
    >>> # result = run_benchmark(load_config("configs/fusion_brain_sim.yaml"))
    >>> # print(result.table())
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from medanomaly.config import ComponentConfig
from medanomaly.fusion.task import (
    FusionConfig,
    VariantConfig,
    build_model,
    build_splits,
    evaluate_model,
    settings_from,
)
from medanomaly.jsonio import write_text_atomic


def default_variants(modalities: tuple[str, ...], params: dict[str, Any] | None = None) -> tuple[VariantConfig, ...]:
    """Each single modality, then early, feature (concat, attention), decision (mean, stacker), hybrid."""
    params = dict(params or {})

    def comp(name: str, **extra: Any) -> ComponentConfig:
        return ComponentConfig(name=name, params={**params, **extra})

    singles = tuple(VariantConfig(label=f"single {m}", model=comp("fusion_early"), modalities=(m,)) for m in modalities)
    return singles + (
        VariantConfig(label="early (dual-channel CNN)", model=comp("fusion_early")),
        VariantConfig(label="feature (concat)", model=comp("fusion_feature", mode="concat")),
        VariantConfig(label="feature (attention)", model=comp("fusion_feature", mode="attention")),
        VariantConfig(label="decision (mean)", model=comp("fusion_decision", combine="mean")),
        VariantConfig(label="decision (stacker)", model=comp("fusion_decision", combine="stacker")),
        VariantConfig(label="hybrid", model=comp("fusion_hybrid")),
    )


@dataclass(frozen=True)
class BenchmarkResult:
    """Rows (one per variant, JSON-able), the modalities, and whether the data are synthetic."""

    rows: tuple[dict[str, Any], ...]
    modalities: tuple[str, ...]
    synthetic: bool

    def verdict(self) -> str:
        """Does the best fusion variant beat the best single modality? (point estimates and CIs)."""
        singles = [r for r in self.rows if len(r["modalities"]) == 1]
        fused = [r for r in self.rows if len(r["modalities"]) > 1]
        if not singles or not fused:
            return "verdict: needs both single-modality and fusion variants"
        best_s = max(singles, key=lambda r: r["test"]["auc"]["value"])
        best_f = max(fused, key=lambda r: r["test"]["auc"]["value"])
        s, f = best_s["test"]["auc"], best_f["test"]["auc"]
        beats = f["value"] > s["value"]
        separated = f["ci_low"] is not None and s["ci_high"] is not None and f["ci_low"] > s["ci_high"]
        word = "beats" if beats else "does NOT beat"
        ci = "95% CIs do not overlap" if separated else "95% CIs overlap"
        return (
            f"verdict: best fusion '{best_f['label']}' AUC {f['value']:.3f} {word} best single "
            f"'{best_s['label']}' AUC {s['value']:.3f} ({ci})"
        )

    def table(self) -> str:
        """A Markdown table (AUC [95% CI]) plus the verdict."""

        def fmt(est: dict[str, Any] | None) -> str:
            if not est or est.get("value") is None:
                return "-"
            if est.get("ci_low") is None:
                return f"{est['value']:.3f}"
            return f"{est['value']:.3f} [{est['ci_low']:.3f}, {est['ci_high']:.3f}]"

        extra = [f"without {m}" for m in self.modalities]
        lesion_cols = ["T1-visible lesions", "PD-visible lesions"] if self.synthetic else []
        header = ["variant", "inputs", "test AUC [95% CI]", *extra, *lesion_cols, "train s"]
        lines = [
            f"Fusion benchmark{' (SYNTHETIC DATA: lesions simulated on real MRI)' if self.synthetic else ''}",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "|".join("---" for _ in header) + "|",
        ]
        for r in self.rows:
            t = r["test"]
            cells = [r["label"], "+".join(r["modalities"]), fmt(t["auc"])]
            cells += [fmt(t.get(f"auc_without_{m}")) if len(r["modalities"]) > 1 else "-" for m in self.modalities]
            cells += [fmt(t.get(f"auc_{k}_visible_lesions")) for k in ("T1", "PD")] if self.synthetic else []
            cells.append(f"{r['seconds']:.1f}")
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", self.verdict()]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"synthetic": self.synthetic, "modalities": list(self.modalities), "rows": list(self.rows),
                "verdict": self.verdict()}


def run_benchmark(
    config: FusionConfig, out_dir: str | Path | None = None, log: Callable[[str], None] | None = None
) -> BenchmarkResult:
    """Train and test every variant of ``config.benchmark`` (default: :func:`default_variants`).

    Writes ``fusion_benchmark.md`` and ``fusion_benchmark.json`` into ``out_dir`` when given.
    """
    from medanomaly.fusion.training import fit_fusion
    from medanomaly.train.loop import seed_everything

    splits = build_splits(config)
    variants = config.benchmark.variants or default_variants(splits.modalities, config.model.params)
    settings = settings_from(config)
    spatial_dims = len(config.data.size)
    rows = []
    for variant in variants:
        mods = tuple(variant.modalities or splits.modalities)
        idx = [splits.modalities.index(m) for m in mods]
        arrays, visible = {}, {}
        for name, (x, y, p) in splits.arrays.items():
            keep = p[:, idx].any(axis=1)  # a sample whose only modality is missing cannot be scored
            arrays[name] = (x[keep][:, idx], y[keep], p[keep][:, idx])
            if name in splits.visible_in:
                visible[name] = splits.visible_in[name][keep]
        sub = replace(splits, modalities=mods, arrays=arrays, visible_in=visible)
        seed_everything(config.seed)  # same initialisation stream for every variant, run alone or together
        model = build_model(variant.model, mods, spatial_dims)
        if log:
            log(f"[{len(rows) + 1}/{len(variants)}] training {variant.label} ...")
        start = time.perf_counter()
        fit = fit_fusion(model, sub.arrays["train"], sub.arrays["val"], settings)
        seconds = time.perf_counter() - start
        test = evaluate_model(model, sub, "test", config.benchmark.n_bootstrap, config.seed)
        row = {"label": variant.label, "model": variant.model.name, "params": dict(variant.model.params),
               "modalities": list(mods), "best_epoch": fit.best_epoch, "val_auc": fit.best_val_auc,
               "seconds": seconds, "test": test}
        rows.append(row)
        result = BenchmarkResult(tuple(rows), splits.modalities, splits.synthetic)
        if out_dir is not None:  # after every variant: an interrupted run keeps what it measured
            _write(result, Path(out_dir), complete=len(rows) == len(variants))
        if log:
            left = (len(variants) - len(rows)) * sum(r["seconds"] for r in rows) / len(rows)
            log(f"{variant.label}: test AUC {test['auc']['value']:.3f} ({seconds:.1f}s; about {left:.0f}s left)")
    return BenchmarkResult(tuple(rows), splits.modalities, splits.synthetic)


def _write(result: BenchmarkResult, out: Path, complete: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    note = "" if complete else "\n(partial: the run has not finished every variant yet)"
    write_text_atomic(out / "fusion_benchmark.md", result.table() + note + "\n")
    write_text_atomic(
        out / "fusion_benchmark.json",
        json.dumps({**result.to_json(), "complete": complete}, indent=2, default=float)
    )
