"""Explanations of what a report shows: one overlay per finding, or one for a whole-image call.

This is the function the lung and classification reports call to embed overlays:

    >>> from medanomaly.explain.findings import explain_findings  # doctest: +SKIP
    >>> pngs = explain_findings(run_dir_or_model, ct, findings, out_dir / "explain")  # doctest: +SKIP

For a patch-based detector each finding is explained on a patch of the model grid centred on the
finding (memory follows the patch, not the scan), the map is resampled back onto the scan and
drawn on a field of view around the finding with the finding's mask as the lesion contour. For a
whole-image classifier the image is explained once and one overview overlay is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.errors import InputError
from medanomaly.types import Finding, Volume


@dataclass(frozen=True, eq=False)
class FindingExplanation:
    """The map of one finding (on a field of view of the scan) and where its files are."""

    index: int
    map: Volume
    view: Volume
    png: Path | None
    peak_mm: tuple[float, float, float] | None
    peak_in_mask: bool | None

    @property
    def flat(self) -> bool:
        """The map shows nothing (empty or constant): it has no peak (``peak_mm`` is None)."""
        return self.peak_mm is None


def explain_patch(explainable: Any, grid: Volume, centre_mm: Sequence[float], method: str = "gradcam", *,
                  layer: str | None = None, target: int | None = None, **options: Any) -> Volume:  # fmt: skip
    """Map of a patch-based model around ``centre_mm``, on the patch (model grid, patient geometry).

    Args:
        grid: the image already preprocessed to the model grid (``explainable.preprocess(image)``).
    """
    from medanomaly.explain.adapters import as_explainable
    from medanomaly.explain.maps import crop_patch, map_on_grid, volume_to_tensor
    from medanomaly.explain.methods import attribute, spatial_dims_of

    ex = as_explainable(explainable)
    if ex.patch_size is None:
        raise InputError("this model explains whole images, not patches")
    patch = crop_patch(grid, centre_mm, ex.patch_size)
    x = volume_to_tensor(patch, spatial_dims_of(ex.model, 3))
    target = ex.target if target is None else target
    amap = attribute(ex.model, x, method, target=target, layer=layer, output_fn=ex.output_fn, **options)
    return map_on_grid(amap, patch, method)


def _view_size(volume: Volume, fov_mm: float) -> tuple[int, int, int]:
    sx, sy, sz = volume.spacing
    nz, ny, nx = volume.shape
    return (min(nz, int(np.ceil(fov_mm / sz)) | 1), min(ny, int(np.ceil(fov_mm / sy))), min(nx, int(np.ceil(fov_mm / sx))))


def explain_findings(source: Any, volume: Volume, findings: Sequence[Finding], out_dir: str | Path, *,
                     method: str = "gradcam", layer: str | None = None, target: int | None = None,
                     fov_mm: float = 80.0, stem: str = "finding", write_png: bool = True,
                     **options: Any) -> list[Path]:  # fmt: skip
    """Write one explanation overlay PNG per finding (or one for a whole-image model); return the paths.

    Args:
        source: a run directory, a NoduleDetector, a Classifier, an Explainable or a torch module.
        volume: the scan as read (HU for CT), the grid the findings refer to.
        findings: the report's findings (``Finding.center_mm``; ``Finding.mask`` drawn as contour).
        out_dir: where ``<stem>_<i>.png`` files go (created).
        method: explanation method name (``EXPLAINERS``).
        target: class index explained (default: the model's default, else the predicted class).
        fov_mm: field of view of each finding's overlay (mm).

    A finding that cannot be explained (e.g. centre outside the image) is skipped, the rest go on.
    """
    return [r.png for r in explain_findings_detailed(
        source, volume, findings, out_dir, method=method, layer=layer, target=target, fov_mm=fov_mm, stem=stem,
        write_png=write_png, **options) if r.png is not None]  # fmt: skip


def explain_findings_detailed(source: Any, volume: Volume, findings: Sequence[Finding], out_dir: str | Path | None,
                              *, method: str = "gradcam", layer: str | None = None, target: int | None = None,
                              fov_mm: float = 80.0, stem: str = "finding", write_png: bool = True,
                              **options: Any) -> list[FindingExplanation]:  # fmt: skip
    """:func:`explain_findings` returning the maps, peaks and "peak inside the finding's mask"."""
    from medanomaly.explain.adapters import as_explainable
    from medanomaly.explain.faithfulness import pointing_game
    from medanomaly.explain.maps import crop_patch, explain, peak_mm, resample_to
    from medanomaly.explain.overlay import overlay_png
    from medanomaly.preprocess.resample import mask_onto_grid
    from medanomaly.registry import EXPLAINERS

    EXPLAINERS.get(method)
    ex = as_explainable(source)
    target = ex.target if target is None else target
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    results: list[FindingExplanation] = []
    if ex.patch_size is None:  # whole-image model: one map, all findings' masks as contour
        heat = explain(ex.model, volume, method, target=target, layer=layer, preprocess=ex.preprocess,
                       output_fn=ex.output_fn, **options)  # fmt: skip
        mask = _union_mask(volume, findings)
        png = None
        if out is not None and write_png:
            png = overlay_png(volume, heat, out / f"{stem}_overview.png", mask=mask, method=method,
                              title=_title(ex, method, None), contour_label="findings' masks")  # fmt: skip
        hit = pointing_game(heat, mask) if mask is not None else None
        results.append(FindingExplanation(0, heat, volume, png, peak_mm(heat), hit))
        return results
    grid = ex.preprocess(volume) if ex.preprocess is not None else volume
    for i, finding in enumerate(findings):
        try:
            patch_map = explain_patch(ex, grid, finding.center_mm, method, layer=layer, target=target, **options)
            view = crop_patch(volume, finding.center_mm, _view_size(volume, fov_mm))
        except InputError:
            continue
        heat = resample_to(patch_map, view)
        mask = None
        if finding.mask is not None:
            mask = mask_onto_grid(finding.mask, view)
            mask = mask.with_array((np.asarray(mask.array) >= 0.5).astype(np.uint8))
            mask = mask if mask.array.any() else None
        png = None
        if out is not None and write_png:
            png = overlay_png(view, heat, out / f"{stem}_{i + 1}.png", mask=mask, method=method,
                              title=_title(ex, method, (i + 1, finding)), center_mm=finding.center_mm,
                              contour_label="finding's mask")  # fmt: skip
        hit = pointing_game(heat, mask) if mask is not None else None
        results.append(FindingExplanation(i + 1, heat, view, png, peak_mm(heat), hit))
    return results


def _union_mask(volume: Volume, findings: Sequence[Finding]) -> Volume | None:
    from medanomaly.preprocess.resample import mask_onto_grid

    masks = [f.mask for f in findings if f.mask is not None]
    if not masks:
        return None
    union = np.zeros(volume.shape, bool)
    for m in masks:
        on_grid = mask_onto_grid(m, volume)
        union |= np.asarray(on_grid.array) >= 0.5
    return volume.with_array(union.astype(np.uint8)) if union.any() else None


def _title(ex: Any, method: str, item: tuple[int, Finding] | None) -> str:
    head = f"{method}"
    if item is not None:
        i, f = item
        head += f" - finding {i}: {f.label}" + (f", score {f.score:.2f}" if np.isfinite(f.score) else "")
    if ex.synthetic:
        head += "  (model trained on synthetic lesions)"
    return head
