"""Normal-only brain MRI on one common grid, as 2D axial slices.

The common grid: the image is reoriented to LPS (no interpolation), a brain mask is found
(:func:`medanomaly.preprocess.tissue_masks.brain_mask`, or the non-zero voxels of an already
skull-stripped template), intensities are replaced by their rank among the brain's voxels (0..1,
removing contrast and scanner scale), and each axial slice's brain bounding box (x and y extent, mm) is resampled to ``size x
size`` pixels (a scaling-only alignment of every brain to the same box). Each slice also carries
its relative height in the brain (0 = lowest brain slice, 1 = highest), which the normative
model uses as its third coordinate. Thin training slices are averaged over ``slab_mm`` so they
look like the thick clinical slices (6.5 mm in brain1/brain2).

Images that come with a lesion mask (a ``*_label``/``*_mask``/``*_seg`` file beside them, or a
pyradiomics case) are refused as training data: training is on normal images only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.errors import InputError
from medanomaly.types import Volume

__all__ = ["CommonSlices", "to_common", "slices_on_grid", "load_normal", "maps_to_volume", "refuse_lesion_image", "NORMAL_BRAINS",
           "SKULL_STRIPPED", "BRAIN_LABELS", "load_brain_only"]

#: The normal brain MRI our data sources provide (``real_data`` keys). inia19 is a macaque
#: template: listed, but not in the default training set (another species). ``itk_t1`` is a third
#: person: ITK's whole-head T1 example (2 x 3 x 2 mm, coronal acquisition; no lesion known or seen).
NORMAL_BRAINS: dict[str, str] = {
    "mni152": "nilearn/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "ch2": "mricron/ch2.nii.gz",
    "ch2better": "mricron/ch2better.nii.gz",
    "inia19": "mricron/inia19-t1-brain.nii.gz",
    "itk_t1": "itk/KmeansTest_T1UCharRaw.nii.gz",
}
#: Whole-head normal brains whose brain alone is a skull-stripped twin file on the same grid.
SKULL_STRIPPED: dict[str, str] = {"ch2": "mricron/ch2bet.nii.gz"}
#: Whole-head normal brains whose brain is given by a label image on the same grid (non-zero = brain).
BRAIN_LABELS: dict[str, str] = {"itk_t1": "itk/KmeansTest_T1RawSkullStrip.nii.gz"}

_MASK_SUFFIXES = ("_label", "_mask", "_seg", "_lesion", "-label", "-mask", "-seg")
_LESION_CASES = ("brain1", "brain2", "lung1", "lung2", "breast1")


@dataclass(frozen=True, eq=False)
class CommonSlices:
    """Axial slices of one volume on the common grid.

    Attributes:
        images: (N, size, size) float32, brain scaled to ~0..1, 0 outside the brain.
        masks: (N, size, size) bool brain masks.
        rel_z: (N,) relative height of each slice in the brain (0..1).
        index: (N,) the slice index in the canonical (LPS) volume.
        boxes: (N, 4) the in-plane box (y0, y1, x0, x1) in canonical voxels that was resampled.
        canonical: the LPS-reoriented input (for mapping results back).
        brain: the canonical brain mask (uint8 Volume).
    """

    images: np.ndarray
    masks: np.ndarray
    rel_z: np.ndarray
    index: np.ndarray
    boxes: np.ndarray
    canonical: Volume
    brain: Volume


def refuse_lesion_image(path: str | Path) -> None:
    """Refuse a training image that carries a lesion mask (by name), in one line."""
    path = Path(path)
    stem = path.name.split(".")[0].lower()
    if any(stem.startswith(case) for case in _LESION_CASES):
        raise InputError("training image is a lesion case (has an expert lesion mask); train on normal images only", path)
    if any(stem.endswith(s) for s in _MASK_SUFFIXES):
        raise InputError("looks like a lesion mask, not a normal image", path)
    try:  # not glob: a mixed-case name must match its lower-case stem
        siblings = list(path.parent.iterdir())
    except OSError:  # an unlistable or missing folder: no sibling can be seen (reading the image says why)
        siblings = []
    for sibling in siblings:
        sib = sibling.name.split(".")[0].lower()
        if sib != stem and any(sib == stem + s or sib == stem.replace("_image", "") + s for s in _MASK_SUFFIXES):
            raise InputError(f"training image has a lesion mask beside it ({sibling.name}); normal images only", path)


def load_normal(key_or_path: str) -> Volume:
    """Read one normal training brain by ``NORMAL_BRAINS`` name, ``real_data`` key or path."""
    from medanomaly.data.sources import real_data
    from medanomaly.io import read

    key = NORMAL_BRAINS.get(key_or_path, key_or_path)
    try:
        path = Path(key) if Path(key).is_file() else real_data(key)
    except KeyError:  # neither a file nor a "source/path" data key
        raise InputError(f"no such file, and not a normal brain name {sorted(NORMAL_BRAINS)} or data key", key) from None
    refuse_lesion_image(path)
    volume = read(path)
    if volume.is_2d or volume.n_components != 1:
        raise InputError("normal training images must be scalar 3D volumes", path)
    return volume.with_meta(modality="MR")


def load_brain_only(name: str) -> Volume:
    """A normal brain with everything outside the brain set to 0: a whole head's skull-stripped twin
    (:data:`SKULL_STRIPPED`), the head masked by its brain labels (:data:`BRAIN_LABELS`), or the image
    as it is (a template that is already skull-stripped)."""
    from medanomaly.data.sources import real_data
    from medanomaly.io import read

    if name in SKULL_STRIPPED:
        return load_normal(SKULL_STRIPPED[name])
    volume = load_normal(name)
    if name not in BRAIN_LABELS:
        return volume
    path = real_data(BRAIN_LABELS[name])
    labels = read(path)
    if labels.shape != volume.shape or not np.allclose(labels.spacing, volume.spacing):
        raise InputError(f"brain labels are not on the grid of {name!r}", path)
    return volume.with_array(np.where(np.asarray(labels.array) > 0, np.asarray(volume.array, np.float32), 0.0))


def _brain(volume: Volume) -> np.ndarray:
    """Brain mask: a skull-stripped image (>= 30 % exact zeros) is its own mask, else brain_mask."""
    from scipy import ndimage

    from medanomaly.preprocess.tissue_masks import brain_mask

    arr = np.asarray(volume.array, np.float32)
    if np.mean(arr == 0) >= 0.3 and np.mean(arr > 0) > 0.02:
        fg = arr > np.percentile(arr[arr > 0], 5)
        return ndimage.binary_fill_holes(ndimage.binary_opening(fg, iterations=1))
    return np.asarray(brain_mask(volume).array) > 0


def _scale(arr: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Brain intensities to their rank in the brain (0..1): removes contrast and scanner scale."""
    values = np.sort(arr[brain])
    ranks = np.searchsorted(values, arr, side="right") / values.size
    return ranks.astype(np.float32) * brain


def _slab(arr: np.ndarray, spacing_z: float, slab_mm: float) -> np.ndarray:
    """Average along z over ``slab_mm`` (thin slices made to look like thick ones)."""
    from scipy import ndimage

    width = int(round(slab_mm / spacing_z))
    return ndimage.uniform_filter1d(arr, size=width, axis=0) if width > 1 else arr


def to_common(volume: Volume, size: int = 96, slab_mm: float = 0.0, step_mm: float = 0.0,
              min_brain_fraction: float = 0.02) -> CommonSlices:  # fmt: skip
    """Bring a head MRI to the common grid (see the module docstring).

    Args:
        volume: scalar 3D MRI.
        size: pixels per side of the common in-plane grid.
        slab_mm: average thin slices over this thickness first (0 = no averaging), mm.
        step_mm: keep one slice every ``step_mm`` (0 = every slice), mm.
        min_brain_fraction: skip slices whose brain covers less than this fraction of the box.
    """
    from medanomaly.preprocess.resample import to_canonical

    if volume.is_2d or volume.n_components != 1:
        raise InputError("anomaly models of brain MRI take scalar 3D volumes")
    canonical = to_canonical(volume)
    if min(canonical.spacing) < 0.9:  # 0.5 mm templates: 1 mm is plenty for a 96-pixel grid
        from medanomaly.preprocess.resample import resample_to_spacing

        canonical = resample_to_spacing(canonical, tuple(max(s, 1.0) for s in canonical.spacing))
    arr = np.asarray(canonical.array, np.float32)
    brain = _brain(canonical)
    if brain.sum() < 100:
        raise InputError("no brain found in the image (fewer than 100 brain voxels)")
    scaled = _scale(_slab(arr, canonical.spacing[2], slab_mm), brain)
    stride = max(1, int(round(step_mm / canonical.spacing[2]))) if step_mm else 1
    return slices_on_grid(canonical, scaled, brain, size, stride, min_brain_fraction)


def slices_on_grid(canonical: Volume, scaled: np.ndarray, region: np.ndarray, size: int, stride: int = 1,
                   min_fraction: float = 0.02) -> CommonSlices:  # fmt: skip
    """Each axial slice's ``region`` box (in-plane extent, mm) resampled to ``size x size`` pixels.

    Args:
        canonical: the LPS volume the slices come from.
        scaled: its intensities already scaled to ~0..1 (0 outside ``region``).
        region: bool (z, y, x) region mask (brain, or lungs for chest CT).
        size: pixels per side of the common grid.
        stride: keep one region slice in ``stride``.
        min_fraction: skip slices whose region box covers less than this fraction of the slice.
    """
    from skimage.transform import resize

    zs = np.flatnonzero(region.any(axis=(1, 2)))
    images, masks, rel, index, boxes = [], [], [], [], []
    for z in zs[::stride]:
        ys, xs = np.nonzero(region[z])
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        if (y1 - y0) * (x1 - x0) < min_fraction * region.shape[1] * region.shape[2]:
            continue
        images.append(resize(scaled[z, y0:y1, x0:x1], (size, size), order=1, anti_aliasing=True))
        masks.append(resize(region[z, y0:y1, x0:x1].astype(np.float32), (size, size), order=1) > 0.5)
        rel.append((z - zs[0]) / max(zs[-1] - zs[0], 1))
        index.append(z)
        boxes.append((y0, y1, x0, x1))
    if not images:
        raise InputError("no axial slice with enough of the region (brain or lungs)")
    return CommonSlices(np.stack(images).astype(np.float32), np.stack(masks), np.asarray(rel, np.float32),
                        np.asarray(index), np.asarray(boxes), canonical,
                        canonical.with_array(region.astype(np.uint8)))  # fmt: skip


def maps_to_volume(common: CommonSlices, maps: np.ndarray, reference: Volume) -> Volume:
    """Put per-slice common-grid maps back on the input's grid (float32; 0 outside the brain)."""
    from skimage.transform import resize

    from medanomaly.preprocess.resample import resample_like

    out = np.zeros(common.canonical.shape, np.float32)
    for k, z in enumerate(common.index):
        y0, y1, x0, x1 = common.boxes[k]
        out[z, y0:y1, x0:x1] = resize(maps[k], (y1 - y0, x1 - x0), order=1)
    out *= np.asarray(common.brain.array) > 0
    back = resample_like(common.canonical.with_array(out), reference, interpolator="nearest")
    return back.with_array(np.asarray(back.array, np.float32), units="anomaly score")


def augment(images: np.ndarray, masks: np.ndarray, rng: np.random.Generator, copies: int,
            settings: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Augmented copies of normal slices: intensity (gamma, scale), bias field, small affine
    deformations (MONAI random transforms); the masks follow the deformation."""
    from monai.transforms import RandAffined, RandBiasFieldd, RandAdjustContrastd, RandScaleIntensityd

    seed = int(rng.integers(0, 2**31 - 1))
    deform = RandAffined(keys=("img", "msk"), prob=1.0, rotate_range=np.deg2rad(settings.get("rotate_deg", 6.0)),
                         scale_range=settings.get("scale", 0.06), translate_range=settings.get("shift_px", 2.0),
                         mode=("bilinear", "nearest"), padding_mode="zeros")  # fmt: skip
    bias = RandBiasFieldd(keys="img", prob=0.8, coeff_range=(0.0, settings.get("bias", 0.3)))
    gamma = RandAdjustContrastd(keys="img", prob=0.8, gamma=(0.8, 1.25))
    scale = RandScaleIntensityd(keys="img", prob=0.5, factors=0.1)
    transforms = [deform, bias, gamma, scale]
    for i, t in enumerate(transforms):
        t.set_random_state(seed + i)
    out_i, out_m = [], []
    for _ in range(copies):
        for img, msk in zip(images, masks):
            item = {"img": img[None].copy(), "msk": msk[None].astype(np.float32)}
            item = deform(item)
            item["img"] = np.clip(np.asarray(item["img"]), 0, None)
            for t in (bias, gamma, scale):
                item = t(item)
            m = np.asarray(item["msk"])[0] > 0.5
            out_i.append(np.asarray(item["img"], np.float32)[0] * m)
            out_m.append(m)
    return np.stack(out_i), np.stack(out_m)
