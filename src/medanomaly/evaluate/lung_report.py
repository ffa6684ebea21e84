"""Plots and the HTML report of the lung-nodule case study (matplotlib PNGs + a jinja2 page).

Everything measured on simulated scans is labelled "synthetic" in titles and tables. The report
links PNGs by relative path, so the run folder can be moved or zipped as a whole.

Example:
    >>> from medanomaly.evaluate.froc import ScanMarks, froc
    >>> res = froc([ScanMarks([0.9, 0.2], [0, -1], 1)])
    >>> import tempfile, pathlib
    >>> p = plot_froc(res, pathlib.Path(tempfile.mkdtemp()) / "froc.png")
    >>> p.suffix
    '.png'
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.evaluate.agreement import BlandAltman
from medanomaly.evaluate.froc import FP_RATES, FrocResult
from medanomaly.jsonio import write_text_atomic
from medanomaly.preprocess.intensity import WINDOWS
from medanomaly.types import Finding, Volume, intensity_unit

__all__ = ["plot_bland_altman", "plot_finding", "plot_froc", "plot_learning_curve", "running_mean", "write_lung_report"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def froc_axes(ax: Any, title: str) -> None:
    """The FROC axes every FROC plot here shares: log FP/scan axis at 1/8..8, sensitivity 0..1, title, legend."""
    ax.set_xscale("log")
    ax.set_xlim(FP_RATES[0] / 2, FP_RATES[-1] * 2)
    ax.set_ylim(0, 1.02)
    ax.set_xticks(FP_RATES)
    ax.set_xticklabels(["1/8", "1/4", "1/2", "1", "2", "4", "8"])
    ax.set_xlabel("false positives per scan")
    ax.set_ylabel("sensitivity")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")


def finish_figure(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Lay out, write (PNG, parents created, all-or-nothing) and close ``fig``; the path."""
    from medanomaly.io.staged import save_figure

    fig.tight_layout()
    return save_figure(fig, path, dpi=dpi)


def plot_froc(result: FrocResult, path: Path, title: str = "FROC on held-out simulated scans (synthetic)") -> Path:
    """FROC curve (log FP axis) with the 7 operating points and the CPM in the legend."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    fps = np.clip(result.fps_per_scan, 1e-3, None)
    ax.step(fps, result.sensitivity, where="post", color="C0", label=f"CPM = {result.cpm:.3f}")
    ax.plot(list(result.operating_points), list(result.operating_points.values()), "o", color="C3",
            label="sensitivity at 1/8..8 FP/scan")  # fmt: skip
    froc_axes(ax, f"{title}\n{result.n_scans} scans, {result.n_lesions} lesions")
    return finish_figure(fig, path)


def plot_learning_curve(curve: list[dict[str, float]], path: Path, best_step: int | None = None,
                        metric: str = "cpm", shapes: str = "LIDC val", loss: list[float] | None = None) -> Path:
    """Validation ``metric`` (CPM on simulated validation scans, synthetic) against training steps, the
    kept step marked; with ``loss`` (the training loss of every step, 1 ... n) also its running mean on a right
    axis, so that a run validated once (the demo: one CPM at the end of its budget) still shows how it learned."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [r["step"] for r in curve]
    handles = ax.plot(steps, [r[metric] for r in curve], "o-", color="C0", label=f"validation {metric.upper()}")
    if best_step is not None:
        best = [r[metric] for r in curve if r["step"] == best_step]
        if best:
            handles += ax.plot([best_step], best[:1], "*", color="C3", markersize=14, label=f"kept: step {best_step}")
    smooth = running_mean(loss or [])
    has_loss = bool(np.isfinite(smooth).any())
    if has_loss:
        right = ax.twinx()
        handles += right.plot(np.arange(1, smooth.size + 1), smooth, color="0.45", linewidth=1,
                              label="training loss (running mean)")  # fmt: skip
        right.set_ylabel("training loss")
        shown = smooth[np.isfinite(smooth)]
        right.set_ylim(min(0.0, float(shown.min())), max(1.05 * float(shown.max()), 1e-6))
    ax.set_xlabel("training steps")
    ax.set_ylabel(metric.upper())
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0, 1.05 * max([*steps, smooth.size], default=1))  # from step 0: one validation is a point
    also = " and training loss" if has_loss else ""
    ax.set_title(f"Learning curve: validation scans (synthetic, {shapes} shapes){also}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(handles=handles, loc="lower right")
    return finish_figure(fig, path)


def running_mean(values: list[float], points: int = 50) -> np.ndarray:
    """``values`` (one per training step) averaged over a trailing window of ``len / points`` steps (at least 1),
    non-finite values left out of each window's mean (NaN where a window holds none); empty for no values."""
    v = np.asarray(values, float)
    if not v.size:
        return v
    kernel = np.ones(max(1, v.size // points))
    finite = np.isfinite(v)
    sums = np.convolve(np.where(finite, v, 0.0), kernel)[: v.size]
    counts = np.convolve(finite.astype(float), kernel)[: v.size]
    return np.divide(sums, counts, out=np.full(v.size, np.nan), where=counts > 0)


#: The spread of pair means (largest over smallest) from which a Bland-Altman plot's x axis is logarithmic: nodule
#: volumes run from 0.01 to 10 mL, and on a linear axis three quarters of the points sat in one column at 0.
LOG_AXIS_SPREAD = 30.0


def wants_log_axis(means: Sequence[float]) -> bool:
    """Whether positive ``means`` span :data:`LOG_AXIS_SPREAD` or more (largest over smallest).

    Example:
        >>> wants_log_axis([0.01, 0.2, 8.6]), wants_log_axis([3.0, 12.0, 30.0]), wants_log_axis([-1.0, 50.0])
        (True, False, False)
    """
    values = np.asarray(means, float)
    return values.size > 1 and bool(np.all(values > 0)) and float(values.max() / values.min()) >= LOG_AXIS_SPREAD


def plot_bland_altman(ba: BlandAltman, path: Path, what: str, unit: str) -> Path:
    """Bland-Altman plot: difference vs mean, bias and 95 % limits of agreement; the mean on a log axis when the
    means are positive and span :data:`LOG_AXIS_SPREAD` or more (volumes of 3 to 30 mm nodules)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter(ba.means, ba.diffs, s=14, alpha=0.8)
    log_axis = wants_log_axis(ba.means)
    if log_axis:
        ax.set_xscale("log")
    for y, style, name in ((ba.bias, "-", "bias"), (ba.loa_low, "--", "-1.96 SD"), (ba.loa_high, "--", "+1.96 SD")):
        ax.axhline(y, color="C3", linestyle=style, linewidth=1)
        ax.text(ax.get_xlim()[1], y, f" {name} {y:.2f}", va="center", fontsize=8, color="C3")
    diff_unit = "%" if ba.relative else unit
    ax.set_xlabel(f"mean of measured and simulated {what} ({unit}" + (", log scale)" if log_axis else ")"))
    ax.set_ylabel(f"measured - simulated ({diff_unit})")
    ax.set_title(f"{what}: agreement with simulation truth (synthetic), n = {ba.n}", fontsize=10)
    ax.grid(True, alpha=0.3)
    return finish_figure(fig, path)


def _robust_range(pixels: np.ndarray) -> tuple[float, float]:
    """The 1st and 99th percentiles of the finite pixels (a grey scale for an image without HU)."""
    finite = pixels[np.isfinite(pixels)]
    if not finite.size:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(finite, [1, 99]))
    return low, max(high, low + 1e-6)


def plot_finding(
    ct: Volume,
    finding: Finding,
    path: Path,
    reference: Volume | None = None,
    title: str = "",
    half_width_mm: float = 40.0,
) -> Path:
    """Axial overlay of one finding: finding mask (red), reference lesion (green); a CT in the lung window, another
    image (MR, mammogram) from its 1st to 99th percentile in the crop (the lung window made it one flat grey)."""
    plt = _plt()
    idx = ct.physical_to_index(finding.center_mm)
    z = int(np.clip(round(idx[2]), 0, ct.shape[0] - 1))
    if finding.mask is not None and np.asarray(finding.mask.array).any():
        areas = (np.asarray(finding.mask.array) > 0).reshape(ct.shape[0], -1).sum(1)
        z = int(np.argmax(areas))
    sx, sy, _ = ct.spacing
    hy, hx = int(half_width_mm / sy), int(half_width_mm / sx)
    cy, cx = int(round(idx[1])), int(round(idx[0]))
    ys = slice(max(cy - hy, 0), min(cy + hy, ct.shape[1]))
    xs = slice(max(cx - hx, 0), min(cx + hx, ct.shape[2]))
    fig, ax = plt.subplots(figsize=(4, 4))
    crop = np.asarray(ct.array)[z, ys, xs]
    low, high = WINDOWS["lung_input"] if intensity_unit(ct) == "HU" else _robust_range(crop)
    ax.imshow(crop, cmap="gray", vmin=low, vmax=high, extent=(0, (xs.stop - xs.start) * sx, (ys.stop - ys.start) * sy, 0))
    extent = (0, (xs.stop - xs.start) * sx, 0, (ys.stop - ys.start) * sy)
    key = []
    for vol, colour, name in ((reference, "lime", "reference"), (finding.mask, "red", "finding")):
        if vol is not None:
            sl = (np.asarray(vol.array)[z, ys, xs] > 0).astype(float)
            if sl.any():
                ax.contour(sl, levels=[0.5], colors=colour, linewidths=1.0, extent=extent, origin="upper")
                key.append(f"{'green' if colour == 'lime' else colour}: {name}")
    ax.set_title(title or f"score {finding.score:.2f}, slice {z}", fontsize=9)
    ax.set_xlabel("; ".join(["mm", *key]), fontsize=8)  # the key in the picture: the PNG is also opened alone
    return finish_figure(fig, path, dpi=90)


#: The per-size sensitivity table of a report (``by_size``: ``metrics.json``'s ``sensitivity_by_size`` rows).
SIZE_TABLE = """{% if by_size %}<table><tr><th>nodule diameter (mm)</th><th>nodules</th><th>found at any score</th>
<th>sensitivity at 1 FP/scan</th></tr>{% for b in by_size %}<tr><td>{% if b.band_mm[1] is none %}{{
"%g"|format(b.band_mm[0]) }} or more{% elif b.band_mm[0] == 0 %}under {{ "%g"|format(b.band_mm[1]) }}{% else %}{{
"%g"|format(b.band_mm[0]) }} to under {{ "%g"|format(b.band_mm[1]) }}{% endif %}</td><td>{{ b.n }}</td>
<td>{{ b.found }}</td><td>{{ "%.3f"|format(b.sensitivity) }}</td></tr>{% endfor %}</table>{% endif %}"""

_TEMPLATE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: sans-serif; margin: 2em; max-width: 1200px; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #eee; } .hit { background: #dfd; } .synthetic { color: #a40; font-weight: bold; }
.gallery { display: flex; flex-wrap: wrap; align-items: flex-start; }
.gallery figure { margin: 4px; } .gallery figcaption { font-size: 0.8em; color: #444; }
.gallery img { width: 260px; border: 1px solid #ccc; } .gallery img.cam { width: 520px; }
</style></head><body>
<h1>{{ title }}</h1>
<p>{{ intro }}</p>
{% if froc %}
<h2>Detection on held-out simulated scans <span class="synthetic">(synthetic)</span></h2>
<p>{{ split }}</p>
<p>CPM = <b>{{ "%.3f"|format(froc.cpm) }}</b>{% if froc.cpm_ci %} (95 % interval {{ "%.3f"|format(froc.cpm_ci[0]) }} ..
{{ "%.3f"|format(froc.cpm_ci[1]) }}, bootstrap over scans){% endif %} on {{ froc.n_scans }} scans with {{ froc.n_lesions }} simulated lesions.</p>
<table><tr><th>FP / scan</th>{% for k in froc.points %}<th>{{ k }}</th>{% endfor %}</tr>
<tr><td>sensitivity</td>{% for v in froc.points.values() %}<td>{{ "%.3f"|format(v) }}</td>{% endfor %}</tr>
{% if froc.large %}<tr><td>sensitivity, the {{ froc.large.n_lesions }} nodules of {{ froc.large.min_mm }} mm or more
(CPM {{ "%.3f"|format(froc.large.cpm) }})</td>{% for v in froc.large.points.values() %}<td>{{ "%.3f"|format(v) }}</td>{% endfor %}</tr>{% endif %}</table>
{% if froc.by_size is defined %}{% set by_size = froc.by_size %}""" + SIZE_TABLE + """{% endif %}
{% if froc.recurring and froc.recurring.false_positives %}<p>Of the {{ froc.recurring.false_positives }} false positives,
<b>{{ froc.recurring.recurring }}</b> lie at {{ froc.recurring.n_positions }} position(s) that recur in at least
{{ "%.0f"|format(100 * froc.recurring.min_fraction) }} % of their source's scans (the scans of one source share its
anatomy, so one structure mistaken for a nodule is counted in each of them){% if froc.recurring.recurring %}: the
curve's false positives are fewer independent mistakes than their count{% endif %}.</p>{% endif %}
<img src="{{ froc.plot }}" alt="FROC curve">
{% for ba in agreement %}<img src="{{ ba.plot }}" alt="Bland-Altman {{ ba.what }}">{% endfor %}
<table><tr><th>measure (synthetic)</th><th>n</th><th>bias</th><th>95% limits of agreement</th></tr>
{% for ba in agreement %}<tr><td>{{ ba.what }}</td><td>{{ ba.n }}</td><td>{{ "%.2f"|format(ba.bias) }} {{ ba.unit }}</td>
<td>{{ "%.2f"|format(ba.loa_low) }} .. {{ "%.2f"|format(ba.loa_high) }} {{ ba.unit }}</td></tr>{% endfor %}</table>
{% endif %}
{% if training %}
<h2>Training and learning curve <span class="synthetic">(synthetic)</span></h2>
<p>{{ training.steps_done }} steps in {{ "%.0f"|format(training.wall_seconds) }} s wall clock
({{ "%.0f"|format(training.cpu_seconds) }} s process CPU){% if training.budget_minutes %}, budget
{{ "%g"|format(training.budget_minutes) }} min{% endif %}; stopped by {{ training.stop_reason }};
{% if training.best_step %}weights kept from step {{ training.best_step }} (best validation CPM).{% else %}last weights kept.{% endif %}</p>
{% if training.hard_negative_mining %}<p>Hard negatives mined from the network's own false positives on its training
scans: {% for m in training.hard_negative_mining %}step {{ m.step }}: {{ m.false_positives|int }} peaks{% if m.missed_nodules is defined %}, {{ m.missed_nodules|int }} training nodules missed{% endif %} ({{ "%.0f"|format(m.seconds) }} s){{ "; " if not loop.last else "." }}{% endfor %}</p>{% endif %}
{% if training.learning_curve %}
<table><tr><th>step</th><th>wall s</th><th>CPU s</th><th>validation CPM</th></tr>
{% for r in training.learning_curve %}<tr class="{{ 'hit' if r.step == training.best_step else '' }}"><td>{{ r.step }}</td>
<td>{{ "%.0f"|format(r.seconds) }}</td><td>{{ "%.0f"|format(r.cpu_seconds) }}</td><td>{{ "%.3f"|format(r.cpm) }}</td></tr>{% endfor %}</table>
<img src="{{ training.plot }}" alt="learning curve">
{% endif %}{% endif %}
<h2>Real lesions (never seen in training)</h2>
<table><tr><th>case</th><th>rank of first finding on the lesion</th><th>its score</th><th>FP in that scan at that threshold</th>
<th>findings</th><th>reference volume (mL)</th><th>measured volume (mL, partial volume)</th><th>its mask's voxels (mL)</th></tr>
{% for c in cases %}<tr><td>{{ c.name }}</td><td>{{ c.rank if c.rank else "missed" }}</td>
<td>{{ "%.3f"|format(c.score) if c.rank else "-" }}</td><td>{{ c.fp_at_threshold if c.rank else "-" }}</td><td>{{ c.n_findings }}</td>
<td>{{ "%.2f"|format(c.reference_ml) if c.reference_ml is not none else "-" }}</td>
<td>{{ "%.2f"|format(c.measured_ml) if c.measured_ml is not none else "-" }}</td>
<td>{{ "%.2f"|format(c.measured_mask_ml) if c.measured_mask_ml is not none else "-" }}</td></tr>{% endfor %}</table>
{% for c in cases %}
<h3>{{ c.name }}: findings</h3>
<table><tr><th>#</th><th>score</th><th>centre (LPS mm)</th><th>volume (mL): partial volume / mask</th><th>max diameter (mm)</th>
<th>long / short axis (mm)</th><th>mean HU</th><th>solid fraction</th><th>on real lesion</th></tr>
{% for f in c.findings %}<tr class="{{ 'hit' if f.hit else '' }}"><td>{{ loop.index }}</td><td>{{ "%.3f"|format(f.score) }}</td>
<td>{{ f.center_mm|join(", ") }}</td><td>{% if f.partial_volume_ml is defined %}{{ "%.3f"|format(f.partial_volume_ml) }} / {% endif %}{{ "%.3f"|format(f.volume_ml) }}</td><td>{{ "%.1f"|format(f.max_diameter_mm) }}</td>
<td>{{ "%.1f"|format(f.long_axis_mm) }} / {{ "%.1f"|format(f.short_axis_mm) }}</td><td>{{ "%.0f"|format(f.mean_hu) }}</td>
<td>{{ "%.2f"|format(f.solid_fraction) }}</td><td>{{ "yes" if f.hit else "" }}</td></tr>{% endfor %}</table>
<div class="gallery">{% for f in c.findings %}{% if f.overlay %}<figure><img src="{{ f.overlay }}" alt="finding {{ loop.index }}">
<figcaption>#{{ loop.index }}: axial overlay</figcaption></figure>{% endif %}{% if f.get("explain") %}<figure>
<img class="cam" src="{{ f.explain }}" alt="finding {{ loop.index }} Grad-CAM"><figcaption>#{{ loop.index }}: Grad-CAM
(why the detector scored it)</figcaption></figure>{% endif %}{% endfor %}</div>
{% endfor %}
<p><small>Red: detector mask; green: reference lesion mask. Grad-CAM (top findings of each case): the detector's
evidence for the finding on axial, coronal and sagittal slices through the finding's centre (80 mm field of view; green
cross: the map's peak), finding mask in cyan; relative scale, so a saturated score (1.00)
can give a diffuse map. The detector was trained on synthetic lesions. Generated by medanomaly.</small></p>
</body></html>
"""


def write_lung_report(path: Path, context: dict[str, Any]) -> Path:
    """Render the lung report. ``context`` keys: title, intro, split, froc, agreement, cases, and
    optionally training (steps_done, wall_seconds, cpu_seconds, budget_minutes, stop_reason, best_step,
    learning_curve rows, plot)."""
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.from_string(_TEMPLATE).render(**{"training": None, **context})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, html)
    return path
