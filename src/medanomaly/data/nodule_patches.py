"""SYNTHETIC 3D lung-nodule patches for malignancy classification (``lung_nodule_patches``).

Nodules from the lung simulation (:mod:`medanomaly.synth.nodules`) are inserted into the real
chest CTs of DATA.md (pyradiomics lung1, lung2; lungs found by the lung-nodule engineer's
:func:`medanomaly.detect.simulate.load_source`, the real tumour and a 20 mm margin excluded), and a
cube of ``patch_mm`` around each nodule is cut out. Each nodule is inserted into its own crop of the
scan, so nodules never overlap and simulation costs milliseconds per nodule.

**Labels follow a simplified Lung-RADS v1.1 rule on the simulated parameters** (a drawing rule,
not biology): category 2 -> benign, 3 -> uncertain, 4A/4B/4X -> malignant, where

* solid: < 6 mm -> 2; 6-8 mm -> 3; 8-15 mm -> 4A; >= 15 mm -> 4B;
* part-solid: < 6 mm -> 2; solid core < 6 mm -> 3; core 6-8 mm -> 4A; core >= 8 mm -> 4B;
* ground glass: < 30 mm -> 2; >= 30 mm -> 3;
* a spiculated margin raises category 3 or higher to 4X (malignant).

**Splits by lung**: nodules in the right lung give train/val (split by nodule), nodules in the
left lung are the test set, so test patches never share lung tissue with training patches. Each
nodule is its own pseudo-patient. Everything is cached under the synth cache and ``synthetic=True``.

Example:
    >>> lung_rads_class("solid", "sphere", 7.0), lung_rads_class("ground_glass", "sphere", 12.0)
    ('uncertain', 'benign')
    >>> lung_rads_class("solid", "spiculated", 7.0), lung_rads_class("part_solid", "sphere", 12.0, 0.6)
    ('malignant', 'malignant')
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medanomaly.data.bounds import Channels, DiameterRange, Fraction, ImageSize, PatchMillimetres, Seed, SimulatedCount, SourceNames, checked
from medanomaly.data.arrays import LabelledImages, label_index, to_model_array
from medanomaly.errors import InputError
from medanomaly.io.staged import write_staged
from medanomaly.registry import DATASETS

CLASSES = ("benign", "uncertain", "malignant")


def lung_rads_category(kind: str, shape: str, diameter_mm: float, core_fraction: float = 0.0) -> str:
    """Simplified Lung-RADS v1.1 category ("2", "3", "4A", "4B", "4X") of a simulated nodule."""
    if kind == "solid":
        cat = "2" if diameter_mm < 6 else "3" if diameter_mm < 8 else "4A" if diameter_mm < 15 else "4B"
    elif kind == "part_solid":
        core = diameter_mm * core_fraction
        cat = "2" if diameter_mm < 6 else "3" if core < 6 else "4A" if core < 8 else "4B"
    elif kind == "ground_glass":
        cat = "2" if diameter_mm < 30 else "3"
    else:
        raise ValueError(f"unknown nodule kind {kind!r}")
    if shape == "spiculated" and cat != "2":
        cat = "4X"
    return cat


def lung_rads_class(kind: str, shape: str, diameter_mm: float, core_fraction: float = 0.0) -> str:
    """benign (category 2), uncertain (3) or malignant (4A/4B/4X)."""
    cat = lung_rads_category(kind, shape, diameter_mm, core_fraction)
    return "benign" if cat == "2" else "uncertain" if cat == "3" else "malignant"


def _crop(volume, center_zyx: np.ndarray, half: np.ndarray):
    """Sub-volume (a Volume with correct origin) of +-``half`` voxels around ``center_zyx``."""
    from medanomaly.preprocess.resample import crop_zyx

    lo = np.maximum(center_zyx - half, 0).astype(int)
    hi = np.minimum(center_zyx + half + 1, np.array(volume.shape)).astype(int)
    return crop_zyx(volume, lo, hi)


#: Rejection sampling of a nodule's place gives up after this many draws per requested nodule.
MAX_TRIES_PER_NODULE = 500


def place_nodule(rng: np.random.Generator, candidates: np.ndarray, to_wall: np.ndarray, to_excl: np.ndarray | None,
                 diameter_range_mm: tuple[float, float], tries: int, wanted: int, where: str):  # fmt: skip
    """Draw a nodule and a lung voxel (z, y, x) for it: far enough from the lung wall (0.4 x its
    reach, mm) and from the excluded lesion (its reach + 2 mm).

    Rejection sampling with a bound: after ``MAX_TRIES_PER_NODULE * wanted`` draws in total for one
    lung it stops with an :class:`InputError` instead of looping for ever.

    Returns:
        ``(spec, zyx, tries)`` with ``tries`` the draws used so far (pass it back in).

    Raises:
        InputError: no place found within the bound (diameters too large for this lung).
    """
    from medanomaly.synth.nodules import nodule_reach_mm, sample_nodule_spec

    limit = MAX_TRIES_PER_NODULE * max(int(wanted), 1)
    while tries < limit:
        tries += 1
        spec = sample_nodule_spec(rng, (0.0, 0.0, 0.0), diameter_range_mm)
        reach = nodule_reach_mm(spec)
        zyx = candidates[rng.integers(len(candidates))]
        if to_wall[tuple(zyx)] < 0.4 * reach or (to_excl is not None and to_excl[tuple(zyx)] < reach + 2):
            continue
        return spec, zyx, tries
    lo, hi = diameter_range_mm
    raise InputError(f"{where}: no place for a {lo:g}-{hi:g} mm nodule away from the lung wall and the excluded "
                     f"lesion after {limit} tries; use a smaller diameter_range_mm or fewer nodules")


def _simulate(sources: Sequence[str], n_nodules: int, diameter_range_mm: tuple[float, float],
              patch_mm: float, image_size: Sequence[int], seed: int) -> dict[str, np.ndarray]:
    from scipy import ndimage

    from medanomaly.data.lidc import _patch
    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.synth.sources import load_source
    from medanomaly.synth.nodules import NoduleSpec, insert_nodule

    rng = np.random.default_rng(seed)
    images, labels, pids, splits, keys = [], [], [], [], []
    per_cell = int(np.ceil(n_nodules / (2 * len(sources))))
    for name in sources:
        image, mask = pyradiomics_case(name)
        src = load_source(name, image, mask)
        spacing_zyx = np.array(src.ct.spacing[::-1])
        to_excl = None
        if src.exclude is not None and np.asarray(src.exclude.array).any():
            to_excl = ndimage.distance_transform_edt(np.asarray(src.exclude.array) == 0, sampling=spacing_zyx)
        for side in (1, 2):
            inside = np.asarray(src.lung.array) == side
            to_wall = ndimage.distance_transform_edt(inside, sampling=spacing_zyx)
            candidates = np.argwhere(inside)
            if len(candidates) == 0:
                raise InputError(f"{name}: no {'right' if side == 1 else 'left'} lung found")
            made, tries = 0, 0
            where = f"{name}, {'right' if side == 1 else 'left'} lung"
            while made < per_cell:
                spec, zyx, tries = place_nodule(rng, candidates, to_wall, to_excl, diameter_range_mm, tries,
                                                per_cell, where)  # fmt: skip
                half = np.ceil((patch_mm / 2 + 4.0) / spacing_zyx)
                sub = _crop(src.ct, zyx, half)
                sub_lung = _crop(src.lung, zyx, half)
                centre = src.ct.index_to_physical(zyx[::-1].astype(float))
                spec = NoduleSpec(**{**spec.__dict__, "center_mm": tuple(float(c) for c in centre)})
                out, _, truth = insert_nodule(sub, spec, lung=sub_lung)
                if truth.n_voxels == 0:
                    continue
                images.append(_patch(out, np.asarray(truth.center_mm), patch_mm, image_size)[None])
                labels.append(lung_rads_class(spec.kind, spec.shape, spec.diameter_mm, spec.core_fraction))
                pids.append(f"{name}-{side}-{made}")
                splits.append("test" if side == 2 else "")
                keys.append(f"{name}-{'R' if side == 1 else 'L'}{made}:{spec.kind}/{spec.shape}/"
                            f"{spec.diameter_mm:.1f}mm")
                made += 1
    return {"patches_hu": np.stack(images).astype(np.float32), "labels": np.array(labels), "patient_ids": np.array(pids),
            "splits": np.array(splits), "keys": np.array(keys)}


@DATASETS.register("lung_nodule_patches")
@checked
def load_lung_nodule_patches(
    n_nodules: SimulatedCount = 240,
    sources: SourceNames = ("lung1", "lung2"),
    diameter_range_mm: DiameterRange = (4.0, 20.0),
    patch_mm: PatchMillimetres = 40.0,
    val_fraction: Fraction = 0.25,
    seed: Seed = 0,
    cache_dir: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    image_size: ImageSize = (32, 32, 32),
    channels: Channels = 1,
    intensity: str = "ct_lung",
) -> LabelledImages:
    """SYNTHETIC nodule patches with simplified Lung-RADS classes (see the module docstring).

    Args:
        n_nodules: nodules in total (half per lung, spread over ``sources``).
        sources: pyradiomics chest CTs used as backgrounds.
        diameter_range_mm: nodule diameters, log-uniform, mm.
        patch_mm: edge of the cube cut around each nodule, mm.
        val_fraction: fraction of right-lung nodules used for validation.
        seed: simulation seed.
        cache_dir: where the simulated set is cached (default: the synth cache).
        class_names, image_size, channels: class order and model input.
        intensity: HU mapping to [0, 1] (default the lung window; the cache keeps HU).
    """
    from medanomaly.data.phantom import synth_cache_dir
    from medanomaly.data.splits import patient_split

    if len(image_size) != 3 or channels != 1:
        raise InputError("lung nodule patches are 3D, one channel: image_size needs (z, y, x), channels 1")
    names = tuple(class_names or CLASSES)
    params = {"n": n_nodules, "src": list(sources), "d": list(diameter_range_mm), "mm": patch_mm,
              "size": list(image_size), "seed": seed, "v": 2}
    tag = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    path = (Path(cache_dir) if cache_dir is not None else synth_cache_dir()) / f"lung_nodule_patches_{tag}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    else:
        arrays = _simulate(sources, n_nodules, (float(diameter_range_mm[0]), float(diameter_range_mm[1])),
                           patch_mm, image_size, seed)
        write_staged(path, lambda staged: np.savez_compressed(staged, **arrays))
    labels = np.array([label_index(lab, names, key, path) for lab, key in zip(arrays["labels"], arrays["keys"],
                                                                             strict=True)])
    splits = arrays["splits"].astype("<U5")
    right = splits != "test"
    splits[right] = patient_split(arrays["patient_ids"][right], labels[right], val=val_fraction, test=0.0,
                                  seed=seed)
    images = np.stack([to_model_array(p[0], image_size, 1, intensity=intensity) for p in arrays["patches_hu"]])
    return LabelledImages(images, labels, arrays["patient_ids"], names, splits=splits,
                          keys=arrays["keys"].astype(object), synthetic=True, intensity=intensity)
