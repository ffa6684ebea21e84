"""Nodule malignancy on the radiologists' REAL ratings (``lidc_malignancy``): 3D patches of the
real LIDC-IDRI nodule shapes, labelled by the median malignancy rating per nodule.

Labels: median rating 1-2 -> benign, 3 -> uncertain, 4-5 -> malignant (a median of 2.5 is
benign, 3.5 malignant: :func:`medanomaly.data.lidc_shapes.malignancy_class`). Giving
``class_names: [benign, malignant]`` keeps only those two classes (rating-3 nodules dropped).

Two inputs (``input``):

* ``"mask"``: the radiologists' 50 % consensus mask alone, resampled with partial volume onto a cube
  of ``patch_mm`` (fractional occupancy 0..1). Real outlines and real ratings: not synthetic.
  The network sees size, shape and margin, no density.
* ``"ct"``: the shape inserted into a real chest CT (pyradiomics lung1/lung2, alternating; the real
  lesion and a 10 mm margin left out) by :mod:`medanomaly.synth.insert` (HU from the texture and
  calcification ratings, partial volume, matched noise), and a cube of ``patch_mm`` around it
  mapped through the lung window. The images are SYNTHETIC insertions (``synthetic=True``); the
  labels are still the real ratings. Built once and cached (uint8 in the lung window, 5.5 HU steps,
  below the CT noise) under the synth cache; a nodule that fits in neither CT is reported and
  left out.

**Splits** come from the shape library: by LIDC patient, never mixed (``train``/``val``/``test``,
see :mod:`medanomaly.data.lidc_shapes`). ``patient_ids`` are the LIDC-IDRI patient ids.

Example:
    >>> data = load_lidc_malignancy(input="mask", max_per_split=20)     # doctest: +SKIP
    >>> data.images.shape, data.class_names                            # doctest: +SKIP
    ((60, 1, 32, 32, 32), ('benign', 'uncertain', 'malignant'))
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import Field

from medanomaly.data.bounds import Channels, Count, ImageSize, PatchMillimetres, Seed, SourceNames, checked
from medanomaly.data.arrays import LabelledImages, map_intensity
from medanomaly.data.lidc_shapes import MALIGNANCY_CLASSES, malignancy_class
from medanomaly.errors import InputError
from medanomaly.io.staged import write_staged
from medanomaly.registry import DATASETS

log = logging.getLogger(__name__)
INPUTS = ("mask", "ct")
EXCLUDE_MARGIN_MM = 10.0
CACHE_VERSION = 1

__all__ = ["INPUTS", "load_lidc_malignancy", "mask_patch", "select_nodules"]


def _centre_crop(arr: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Centre crop (or zero-pad) a (z, y, x) array whose centre voxel holds the point of interest."""
    out = np.zeros(tuple(size), arr.dtype)
    src, dst = [], []
    for n, s in zip(arr.shape, size, strict=True):
        start = (n - 1) // 2 - s // 2  # index in arr of out[0]
        a, b = max(start, 0), min(start + s, n)
        src.append(slice(a, b))
        dst.append(slice(a - start, b - start))
    out[tuple(dst)] = arr[tuple(src)]
    return out


def mask_patch(shape, patch_mm: float, size: Sequence[int]) -> np.ndarray:
    """Fractional occupancy (0..1) of a shape's consensus mask on a cube of ``patch_mm`` at ``size``
    voxels, centred on the shape's centroid (float32, (z, y, x))."""
    from medanomaly.synth.insert import InsertionSpec, render_shape

    size = tuple(int(s) for s in size)
    spacing = tuple(patch_mm / s for s in size[::-1])  # (x, y, z)
    sub = tuple(-0.5 if s % 2 == 0 else 0.0 for s in size[::-1])  # even sizes: centroid between voxels
    occ, _ = render_shape(shape, spacing, InsertionSpec((0, 0, 0), subvoxel=sub), psf_mm=0.0)
    return _centre_crop(occ, size).astype(np.float32)


def select_nodules(library, class_names: Sequence[str], max_per_split: int | None = None,
                   min_diameter_mm: float = 0.0, seed: int = 0) -> np.ndarray:
    """Library indices of the nodules used: classes in ``class_names``, diameter >= ``min_diameter_mm``,
    and at most ``max_per_split`` per split (a seeded random subset; None = all)."""
    labels = np.array([malignancy_class(r) for r in library.rating("malignancy")])
    keep = np.isin(labels, list(class_names)) & (library.diameters_mm >= min_diameter_mm)
    chosen = []
    rng = np.random.default_rng(seed)
    for split in ("train", "val", "test"):
        idx = np.flatnonzero(keep & (library.splits == split))
        if max_per_split is not None and len(idx) > max_per_split:
            idx = np.sort(rng.choice(idx, max_per_split, replace=False))
        chosen.append(idx)
    return np.concatenate(chosen)


# ----------------------------------------------------------------------------------------- CT input
def _backgrounds(sources: Sequence[str]) -> dict:
    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.io import read
    from medanomaly.synth.insert import prepare_background

    out = {}
    for name in sources:
        image, lesion = pyradiomics_case(name)
        ct = read(image).with_meta(modality="CT")
        out[name] = prepare_background(ct, exclude=read(lesion), exclude_margin_mm=EXCLUDE_MARGIN_MM, name=name)
    return out


def _ct_patch(background, shape, rng: np.random.Generator, patch_mm: float, size: Sequence[int]) -> np.ndarray:
    """Insert ``shape`` into ``background`` and cut the HU cube around it (InputError if it cannot fit)."""
    from dataclasses import replace

    from medanomaly.preprocess.resample import resample_like
    from medanomaly.synth.insert import apply_insertion, crop_background, sample_insertion
    from medanomaly.types import Volume

    spec = sample_insertion(shape, background, rng)
    reach = max(shape.extent_mm) if hasattr(shape, "extent_mm") else patch_mm
    sub, lo = crop_background(background, spec.center_index, max(patch_mm / 2, reach) + 10.0)
    local = replace(spec, center_index=tuple(c - o for c, o in zip(spec.center_index, lo, strict=True)))
    out, _, rec = apply_insertion(sub, shape, local)
    size = tuple(int(s) for s in size)
    spacing = np.array([patch_mm / s for s in size[::-1]])
    origin = np.asarray(rec.center_mm) - out.direction @ (spacing * (np.array(size[::-1]) - 1) / 2)
    ref = Volume(np.zeros(size, np.float32), spacing=tuple(spacing), origin=tuple(origin), direction=out.direction)
    hu = out.with_array(np.asarray(out.array, np.float32))
    return np.asarray(resample_like(hu, ref, interpolator="linear", default=-1000.0).array, np.float32)


def _build_ct(library, indices: np.ndarray, sources: Sequence[str], patch_mm: float, size: Sequence[int],
              seed: int, intensity: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 model inputs (intensity-mapped x 255) of the nodules that fit, and the mask of those."""
    backgrounds = _backgrounds(sources)
    names = list(sources)
    patches = np.zeros((len(indices), *size), np.uint8)
    ok = np.zeros(len(indices), bool)
    for k, i in enumerate(indices):
        shape = library[int(i)]
        rng = np.random.default_rng([seed, int(i)])
        order = names[int(i) % len(names):] + names[:int(i) % len(names)]
        for name in order:
            try:
                hu = _ct_patch(backgrounds[name], shape, rng, patch_mm, size)
            except InputError:
                continue
            patches[k] = np.rint(map_intensity(hu, intensity) * 255).astype(np.uint8)
            ok[k] = True
            break
        else:
            log.warning("lidc_malignancy: nodule %s (%.1f mm) fits in none of %s; left out",
                        shape.nodule_id, shape.diameter_mm, ", ".join(names))
    return patches, ok


def _cached_ct(library, indices: np.ndarray, sources: Sequence[str], patch_mm: float, size: Sequence[int],
               seed: int, intensity: str, cache_dir: str | Path | None) -> tuple[np.ndarray, np.ndarray]:
    from medanomaly.data.lidc_shapes import LIBRARY_VERSION
    from medanomaly.data.phantom import synth_cache_dir

    params = {"v": CACHE_VERSION, "lib": LIBRARY_VERSION, "src": list(sources), "mm": patch_mm, "size": list(size),
              "seed": seed, "int": intensity, "idx": hashlib.sha1(np.asarray(indices, np.int64).tobytes()).hexdigest()}
    tag = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    path = (Path(cache_dir) if cache_dir is not None else synth_cache_dir()) / f"lidc_malignancy_ct_{tag}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as f:
            return f["patches"], f["ok"]
    patches, ok = _build_ct(library, indices, sources, patch_mm, size, seed, intensity)
    write_staged(path, lambda staged: np.savez_compressed(staged, patches=patches, ok=ok))
    return patches, ok


# ----------------------------------------------------------------------------------------- dataset
@DATASETS.register("lidc_malignancy")
@checked
def load_lidc_malignancy(
    input: str = "mask",  # noqa: A002 - the config's word
    patch_mm: PatchMillimetres = 40.0,
    sources: SourceNames = ("lung1", "lung2"),
    max_per_split: Count | None = None,
    min_diameter_mm: Annotated[float, Field(ge=0.0, le=100.0)] = 0.0,
    seed: Seed = 0,
    library: str | Path | None = None,
    cache_dir: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    image_size: ImageSize = (32, 32, 32),
    channels: Channels = 1,
    intensity: str = "ct_lung",
) -> LabelledImages:
    """3D patches of the real LIDC nodules with their median-malignancy class (module docstring).

    Args:
        input: "mask" (consensus mask alone) or "ct" (inserted into a real CT; synthetic images).
        patch_mm: edge of the cube around each nodule, mm.
        sources: pyradiomics chest CTs used as backgrounds for ``input="ct"``.
        max_per_split: at most this many nodules per split (seeded subset; None = all).
        min_diameter_mm: leave out nodules smaller than this (equivalent diameter, mm).
        seed: seed of the subset and of the insertions.
        library: the shape library file (default: the one ``make setup`` built).
        cache_dir: where ``input="ct"`` patches are cached (default: the synth cache).
        class_names: class order; a subset of benign/uncertain/malignant keeps only those nodules.
        image_size, channels: model input (3D, one channel).
        intensity: HU window for ``input="ct"`` (the mask input is occupancy already in 0..1).

    Raises:
        InputError: an unknown input or class, a 2D size, more than one channel, or no nodule left.
    """
    from medanomaly.data.lidc_shapes import load_library

    if input not in INPUTS:
        raise InputError(f"unknown input {input!r}; expected one of {', '.join(INPUTS)}")
    if len(image_size) != 3 or channels != 1:
        raise InputError("LIDC malignancy patches are 3D, one channel: image_size needs (z, y, x), channels 1")
    names = tuple(class_names or MALIGNANCY_CLASSES)
    unknown = [c for c in names if c not in MALIGNANCY_CLASSES]
    if unknown:
        raise InputError(f"unknown class(es) {unknown}; LIDC classes are {', '.join(MALIGNANCY_CLASSES)}")
    size = tuple(int(s) for s in image_size)
    lib = load_library(library)
    idx = select_nodules(lib, names, max_per_split, min_diameter_mm, seed)
    if input == "mask":
        images = np.stack([mask_patch(lib[int(i)], patch_mm, size) for i in idx]) if len(idx) else np.zeros((0, *size))
        mode = "percentile"  # occupancy is already 0..1; percentile scaling leaves a mask patch as it is
    else:
        patches, ok = _cached_ct(lib, idx, sources, patch_mm, size, seed, intensity, cache_dir)
        idx, images = idx[ok], patches[ok].astype(np.float32) / 255.0
        mode = intensity
    if not len(idx):
        raise InputError("no LIDC nodule left after the class, size and split selection")
    labels = np.array([names.index(malignancy_class(r)) for r in lib.rating("malignancy")[idx]])
    return LabelledImages(images[:, None].astype(np.float32), labels, lib.patient_ids[idx], names,
                          splits=lib.splits[idx], keys=lib.nodule_ids[idx].astype(object),
                          synthetic=input == "ct", intensity=mode)
