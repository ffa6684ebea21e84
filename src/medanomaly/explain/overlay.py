"""Overlays a radiologist can read: PNG heatmaps on the scan, and the map as NIfTI.

3D images get three panels through the map's peak (axial, coronal, sagittal) in radiological
convention: images are first reoriented to LPS (``SimpleITK.DICOMOrient``), then axial slices
show the patient's right on the viewer's left and anterior at the top, coronal and sagittal
slices show superior at the top (sagittal: anterior on the left). Pixel aspect follows the
spacing (axes in mm; in pixels for model inputs without patient geometry), a colour bar gives the
map's unit, the lesion contour is drawn when a mask is given, and a cross marks the map's peak. A
flat map (empty or constant) is flagged "FLAT MAP" and has no peak. Images from simulated data say
"synthetic".

Example:
    >>> import numpy as np
    >>> from medanomaly.types import Volume
    >>> img = Volume(np.random.rand(1, 32, 32).astype(np.float32))
    >>> heat = img.with_array(np.random.rand(1, 32, 32).astype(np.float32))
    >>> overlay_png(img, heat, "/tmp/overlay_doctest.png").suffix
    '.png'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.errors import InputError
from medanomaly.preprocess.intensity import WINDOWS
from medanomaly.types import Volume

#: Colour-bar labels: what the map's numbers mean, per method.
UNITS = {
    "gradcam": "Grad-CAM (0-1, relative)",
    "gradcampp": "Grad-CAM++ (0-1, relative)",
    "occlusion": "drop in probability when occluded",
    "integrated_gradients": "integrated gradients (logit units)",
    "guided_backprop": "guided backprop |gradient|",
}
#: CT display window (HU) wide enough for lung nodules and soft-tissue masses (the ``lung_input`` preset).
CT_WINDOW = WINDOWS["lung_input"]


def _to_lps(volume: Volume) -> Volume:
    """Reorient so index axes point to L, P, S (no resampling, only flips and permutations)."""
    if np.allclose(volume.direction, np.eye(3)):
        return volume
    import SimpleITK as sitk

    if volume.n_components > 1:
        return volume
    oriented = sitk.DICOMOrient(volume.to_sitk(), "LPS")
    return Volume.from_sitk(oriented, **dict(volume.meta))


def _window(image: Volume, window: tuple[float, float] | None) -> tuple[float, float]:
    if window is not None:
        return float(window[0]), float(window[1])
    if image.modality == "CT":
        return CT_WINDOW
    lo, hi = np.percentile(np.asarray(image.array, dtype=np.float64), [1, 99])
    return float(lo), float(hi if hi > lo else lo + 1)


def _panels(shape: tuple[int, int, int], peak: tuple[int, int, int], spacing: tuple[float, float, float],
            is_2d: bool) -> list[dict[str, Any]]:  # fmt: skip
    """Slicing, extent (mm), origin and orientation letters for each panel. Arrays are (z, y, x) LPS."""
    nz, ny, nx = shape
    sx, sy, sz = spacing
    z, y, x = peak
    if is_2d:
        return [dict(name="image", index=(0, slice(None), slice(None)), origin="upper",
                     extent=(0, nx * sx, ny * sy, 0), letters=None)]  # fmt: skip
    return [
        dict(name=f"axial (slice {z})", index=(z, slice(None), slice(None)), origin="upper",
             extent=(0, nx * sx, ny * sy, 0), letters=("R", "L", "A", "P")),
        dict(name=f"coronal (row {y})", index=(slice(None), y, slice(None)), origin="lower",
             extent=(0, nx * sx, 0, nz * sz), letters=("R", "L", "S", "I")),
        dict(name=f"sagittal (column {x})", index=(slice(None), slice(None), x), origin="lower",
             extent=(0, ny * sy, 0, nz * sz), letters=("A", "P", "S", "I")),
    ]  # fmt: skip


def _draw_panel(ax: Any, panel: dict[str, Any], img: Volume, harr: np.ndarray, lesion: Volume | None,
                peak: tuple[int, ...] | None, focus: tuple[int, ...], display: dict[str, Any]) -> Any:  # fmt: skip
    """One panel: the grey (or RGB) image, the map above ``threshold`` (none for a flat map), the
    lesion contour, the peak cross (when this slice holds it) and the orientation letters."""
    idx = panel["index"]
    kw = dict(origin=panel["origin"], extent=panel["extent"], interpolation="nearest")
    base = np.asarray(img.array)[idx]
    if base.ndim == 3 and base.shape[-1] not in (3, 4):  # several modalities: show the first
        base = base[..., 0]
    if base.ndim == 3:  # RGB
        rgb = base.astype(np.float32)
        ax.imshow((rgb - rgb.min()) / max(float(np.ptp(rgb)), 1e-6), **kw)
    else:
        ax.imshow(base, cmap="gray", vmin=display["lo"], vmax=display["hi"], **kw)
    shown = None
    if peak is not None:  # a flat map is not drawn: a uniform colour wash would read as "everywhere"
        vmax = display["vmax"]
        shown = ax.imshow(np.ma.masked_less(harr[idx], display["threshold"] * vmax), cmap="inferno", alpha=0.55,
                          vmin=0.0, vmax=vmax, **kw)  # fmt: skip
    if lesion is not None:
        mslice = (np.asarray(lesion.array)[idx] > 0).astype(np.float32)
        if mslice.any() and mslice.min() == 0:
            ax.contour(mslice, levels=[0.5], colors="cyan", linewidths=1.2, origin=panel["origin"],
                       extent=panel["extent"])  # fmt: skip
    sx, sy, sz = img.spacing
    kind = panel["name"].split()[0]
    axis = {"image": 0, "axial": 0, "coronal": 1, "sagittal": 2}[kind]
    inplane = {"image": (2, 1), "axial": (2, 1), "coronal": (2, 0), "sagittal": (1, 0)}[kind]
    sp = (sz, sy, sx)
    if peak is not None and peak[axis] == focus[axis]:
        ax.plot((peak[inplane[0]] + 0.5) * sp[inplane[0]], (peak[inplane[1]] + 0.5) * sp[inplane[1]],
                marker="+", color="lime", ms=12, mew=1.5)  # fmt: skip
    fov_mm = display["fov_mm"]
    if fov_mm:  # zoom around the slice centre
        cx, cy = (focus[inplane[0]] + 0.5) * sp[inplane[0]], (focus[inplane[1]] + 0.5) * sp[inplane[1]]
        half = fov_mm / 2
        x0, x1, y0, y1 = panel["extent"]
        ax.set_xlim(max(cx - half, x0), min(cx + half, x1))
        lims = (max(cy - half, min(y0, y1)), min(cy + half, max(y0, y1)))
        ax.set_ylim(lims[::-1] if panel["origin"] == "upper" else lims)
    ax.set_title(panel["name"], fontsize=10)
    ax.set_xlabel(display["unit"], fontsize=8)
    ax.tick_params(labelsize=7)
    letters = panel["letters"]
    if letters:
        style = dict(color="yellow", fontsize=11, fontweight="bold", transform=ax.transAxes)
        ax.text(0.01, 0.5, letters[0], ha="left", va="center", **style)
        ax.text(0.99, 0.5, letters[1], ha="right", va="center", **style)
        ax.text(0.5, 0.99, letters[2], ha="center", va="top", **style)
        ax.text(0.5, 0.01, letters[3], ha="center", va="bottom", **style)
    return shown


#: Volume meta key: the image is a model input without patient geometry (axes in pixels, not mm).
MODEL_PIXELS = "model_pixels"
#: What a flat (empty or constant) map's overlay says instead of drawing a peak.
FLAT_NOTE = "FLAT MAP: the explanation is empty or constant; no region stands out, no peak"


def overlay_png(image: Volume, map_volume: Volume, path: str | Path, *, mask: Volume | None = None,
                method: str = "", window: tuple[float, float] | None = None,
                threshold: float = 0.15, title: str | None = None, fov_mm: float | None = None,
                center_mm: tuple[float, float, float] | None = None, dpi: int = 110,
                contour_label: str = "lesion contour") -> Path:  # fmt: skip
    """Write a PNG of ``map_volume`` over ``image`` (3 orthogonal panels through the peak for 3D).

    A flat map (empty or constant, :func:`medanomaly.explain.maps.is_flat`) is not drawn and has no
    peak cross: the figure says "FLAT MAP" instead. Axes are in mm, or in pixels when the image is a
    model input without patient geometry (``image.meta["model_pixels"]``).

    Args:
        image: the scan (grey, or RGB for one-slice colour images).
        map_volume: the explanation on ``image``'s grid (resample first if it is not).
        mask: lesion mask on the same grid: its contour is drawn in cyan.
        contour_label: what the cyan contour is, in the title (a reference lesion, a detector's finding).
        method: method name, for the title and the colour-bar unit.
        window: display window (HU for CT; default CT -1000..400 HU, else 1st-99th percentile).
        threshold: map values under this fraction of the maximum are transparent.
        fov_mm: zoom each panel to this field of view (mm) around the slice centre (small lesions).
        center_mm: LPS point the three slices go through (e.g. a finding's centre); default the
            map's peak. The peak is marked with a green cross on the panels that contain it.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from medanomaly.explain.maps import is_flat, peak_index

    if not map_volume.same_grid(image):
        raise InputError("the map is not on the image grid; resample it with explain.maps.resample_to")
    if mask is not None and not mask.same_grid(image):
        raise InputError("the lesion mask is not on the image grid")
    img = _to_lps(image)
    heat = _to_lps(map_volume)
    lesion = _to_lps(mask) if mask is not None else None
    harr = np.asarray(heat.array, dtype=np.float32)
    flat = is_flat(harr)
    peak = None if flat else peak_index(harr)
    focus = peak if peak is not None else tuple(n // 2 for n in img.shape)
    if center_mm is not None:
        idx = np.rint(img.physical_to_index(center_mm)).astype(int)[::-1]
        focus = tuple(int(np.clip(i, 0, n - 1)) for i, n in zip(idx, img.shape, strict=True))
    vmax = 0.0 if flat else float(np.nanmax(harr))
    lo, hi = _window(img, window)
    pixels = bool(image.meta.get(MODEL_PIXELS, False))
    display = dict(lo=lo, hi=hi, vmax=vmax if vmax > 0 else 1.0, threshold=threshold, fov_mm=fov_mm,
                   unit="model pixels" if pixels else "mm")  # fmt: skip
    panels = _panels(img.shape, focus, img.spacing, img.is_2d)

    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 1.0, 4.8), squeeze=False)
    shown = [_draw_panel(ax, panel, img, harr, lesion, peak, focus, display)
             for ax, panel in zip(axes[0], panels, strict=True)]  # fmt: skip
    if shown[0] is not None:
        cbar = fig.colorbar(shown[0], ax=list(axes[0]), fraction=0.025, pad=0.02)
        cbar.solids.set_alpha(1.0)
        cbar.set_label(UNITS.get(method, method or "attribution"), fontsize=9)
    else:
        fig.text(0.5, 0.02, FLAT_NOTE, ha="center", va="bottom", fontsize=10, color="red", fontweight="bold")
    heading = title or (f"{method} explanation" if method else "explanation")
    if flat:
        heading += "  [FLAT MAP: no peak]"
    if bool(image.meta.get("synthetic", False)):
        heading += "  [synthetic]"
    if lesion is not None:
        heading += f"  (cyan: {contour_label})"
    if pixels:
        heading += "  (axes in model pixels, not mm)"
    fig.suptitle(heading, fontsize=11)
    from medanomaly.io.staged import save_figure

    return save_figure(fig, path, dpi=dpi, bbox_inches="tight")  # a failed write leaves an earlier picture whole


def write_map(map_volume: Volume, path: str | Path) -> Path:
    """Write the map (float32, on the image grid, LPS geometry kept) as NIfTI/NRRD by extension."""
    from medanomaly.io import write

    return write(map_volume.with_array(np.asarray(map_volume.array, dtype=np.float32)), path)


def save_explanation(image: Volume, map_volume: Volume, out_dir: str | Path, *, stem: str = "explanation",
                     mask: Volume | None = None, method: str = "", **overlay_options: Any) -> dict[str, Path]:  # fmt: skip
    """Write ``<stem>.png`` (overlay) and ``<stem>.nii.gz`` (the map) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {
        "png": overlay_png(image, map_volume, out / f"{stem}.png", mask=mask, method=method, **overlay_options),
        "nifti": write_map(map_volume, out / f"{stem}.nii.gz"),
    }
