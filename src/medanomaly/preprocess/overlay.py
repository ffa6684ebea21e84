"""PNG overlays of ROI masks on axial slices, for looking at a mask (matplotlib, Agg).

Run ``python -m medanomaly.preprocess.overlay [OUT_DIR]`` to write the lung-mask overlays of
the real pyradiomics lung1 and lung2 CTs (lung window; cyan = right lung, yellow = left lung,
red = the expert lesion mask) to ``OUT_DIR`` (default ``runs/preprocess``).

Example:
    >>> import numpy as np
    >>> from medanomaly.types import Volume
    >>> ct = Volume(np.zeros((3, 16, 16), np.int16))
    >>> mask = ct.with_array(np.ones((3, 16, 16), np.uint8))
    >>> pick_slices(mask, 2)
    [0, 2]
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from medanomaly.io.staged import save_figure
from medanomaly.types import Volume

__all__ = ["pick_slices", "write_mask_overlay", "write_lung_overlays"]

_COLOURS = {1: "cyan", 2: "yellow"}


def pick_slices(mask: Volume, n: int = 6, must_include: Volume | None = None) -> list[int]:
    """``n`` evenly spaced axial slices spanning the mask, plus the largest slice of ``must_include``."""
    zs = np.nonzero(np.asarray(mask.array).reshape(mask.shape[0], -1).any(axis=1))[0]
    if zs.size == 0:
        zs = np.arange(mask.shape[0])
    picked = set(np.linspace(zs.min(), zs.max(), num=min(n, zs.size)).round().astype(int).tolist())
    if must_include is not None and np.any(must_include.array):
        per_slice = np.asarray(must_include.array).reshape(must_include.shape[0], -1).sum(axis=1)
        picked.add(int(np.argmax(per_slice)))
    return sorted(picked)


def write_mask_overlay(
    image: Volume,
    mask: Volume,
    path: str | Path,
    lesion: Volume | None = None,
    window_hu: tuple[float, float] = (-1350.0, 150.0),
    n_slices: int = 6,
    title: str = "",
) -> Path:
    """Write a grid of axial slices with the mask's label contours (and the lesion in red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slices = pick_slices(mask, n_slices, lesion)
    cols = min(4, len(slices))
    rows = int(np.ceil(len(slices) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4 * rows), squeeze=False)
    img = np.asarray(image.array, dtype=np.float32)
    labels = np.asarray(mask.array)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, z in zip(axes.ravel(), slices, strict=False):
        ax.imshow(np.clip(img[z], *window_hu), cmap="gray", vmin=window_hu[0], vmax=window_hu[1])
        for value in np.unique(labels[z]):
            if value == 0:
                continue
            ax.contour(labels[z] == value, levels=[0.5], colors=_COLOURS.get(int(value), "lime"), linewidths=0.8)
        if lesion is not None and np.any(lesion.array[z]):
            ax.contour(np.asarray(lesion.array[z]) > 0, levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(f"slice {z}", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=60)


def write_lung_overlays(out_dir: str | Path, cases: Mapping[str, tuple[str | Path, str | Path]]) -> list[Path]:
    """Lung-mask overlays of chest CTs: ``cases`` maps a name to (CT path, lesion mask path)."""
    from medanomaly.io import read
    from medanomaly.preprocess.segment import lung_mask, lung_stats

    written = []
    for case, (image_path, lesion_path) in cases.items():
        ct, lesion = read(image_path), read(lesion_path)
        mask = lung_mask(ct)
        stats = lung_stats(mask)
        title = f"{case}: right {stats.right_ml:.0f} mL (cyan), left {stats.left_ml:.0f} mL (yellow), lesion red"
        written.append(write_mask_overlay(ct, mask, Path(out_dir) / f"{case}_lung_overlay.png", lesion, title=title))
    return written
