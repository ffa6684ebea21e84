"""Chest CT on the common grid: the lung parenchyma of a real CT, away from its lesion, as normal
training material (``data.domain: chest_ct``).

Only two chest CTs exist in our sources (pyradiomics lung1 and lung2), each with one expert lesion
mask. Training uses one CT's lungs (:func:`medanomaly.preprocess.segment.lung_mask`) with the
lesion mask grown by ``exclude_margin_mm`` (3D Euclidean distance, mm) **removed from the training
masks and images**; the test is the *other* CT's real lesion (leave-one-patient-out). Intensities
are a lung HU window (:data:`medanomaly.preprocess.intensity.WINDOWS`) scaled to 0..1 inside the
lungs; each axial slice's lung box (both lungs, mm extent) is resampled to ``size x size`` pixels
(:func:`medanomaly.anomaly.data.slices_on_grid`). When the same CT is both the training and the
validation case, every ``holdout_every``-th lung slice is held out for validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from medanomaly.anomaly.data import CommonSlices, slices_on_grid
from medanomaly.errors import InputError
from medanomaly.types import Volume

__all__ = ["CHEST_CASES", "ChestCase", "chest_case", "chest_to_common", "chest_split_slices", "exclusion_record",
           "exclusion_zone", "simulated_test_case"]  # fmt: skip

#: The real chest CTs with an expert lesion mask (pyradiomics cases).
CHEST_CASES = ("lung1", "lung2")


@dataclass(frozen=True, eq=False)
class ChestCase:
    """One chest CT in LPS: image (HU), lung region and expert lesion mask (bool arrays)."""

    name: str
    canonical: Volume
    lungs: np.ndarray
    lesion: np.ndarray


@lru_cache(maxsize=4)
def chest_case(name: str) -> ChestCase:
    """Read a pyradiomics chest CT (``lung1``/``lung2``) with its lung mask and lesion mask (cached)."""
    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.io import read
    from medanomaly.preprocess.checks import require_ct
    from medanomaly.preprocess.resample import to_canonical
    from medanomaly.preprocess.segment import lung_mask

    if name not in CHEST_CASES:
        raise InputError(f"unknown chest CT case {name!r}; valid: {', '.join(CHEST_CASES)}")
    image_path, mask_path = pyradiomics_case(name)
    image = require_ct(read(image_path).with_meta(modality="CT"), "chest CT anomaly data")
    canonical = to_canonical(image)
    lesion = np.asarray(to_canonical(read(mask_path)).array) > 0
    lungs = np.asarray(lung_mask(canonical).array) > 0
    return ChestCase(name, canonical, lungs, lesion)


def exclusion_zone(lesion: np.ndarray, spacing: tuple[float, ...], margin_mm: float) -> np.ndarray:
    """The lesion mask grown by ``margin_mm`` (3D Euclidean distance in mm; spacing is x, y, z)."""
    from scipy import ndimage

    if not lesion.any():
        return lesion.copy()
    dist = ndimage.distance_transform_edt(~lesion, sampling=(spacing[2], spacing[1], spacing[0]))
    return dist <= margin_mm


def chest_to_common(volume: Volume, size: int, window: str, step_mm: float = 0.0, lungs: np.ndarray | None = None,
                    exclude: np.ndarray | None = None, min_fraction: float = 0.0) -> CommonSlices:  # fmt: skip
    """A chest CT (HU) on the common grid: lung window inside the lung mask.

    Args:
        volume: scalar 3D CT in HU (LPS or not; it is reoriented).
        size: pixels per side of the common grid.
        window: a :data:`~medanomaly.preprocess.intensity.WINDOWS` name (HU window scaled to 0..1).
        step_mm: keep one slice every ``step_mm`` (0 = every slice), mm.
        lungs: the lung mask on the canonical grid (computed with ``lung_mask`` when ``None``).
        exclude: bool canonical-grid voxels removed from the masks and images (the grown lesion).
        min_fraction: skip slices whose lung box covers less than this fraction of the slice.
    """
    from skimage.transform import resize

    from medanomaly.preprocess.checks import require_ct
    from medanomaly.preprocess.intensity import WINDOWS, window_array
    from medanomaly.preprocess.resample import to_canonical
    from medanomaly.preprocess.segment import lung_mask

    require_ct(volume, "the chest CT anomaly model")
    canonical = to_canonical(volume)
    if lungs is None:
        lungs = np.asarray(lung_mask(canonical).array) > 0
    if lungs.sum() < 100:
        raise InputError("no lungs found in the CT (fewer than 100 lung voxels)")
    scaled = window_array(np.asarray(canonical.array), *WINDOWS[window]) * lungs
    stride = max(1, int(round(step_mm / canonical.spacing[2]))) if step_mm else 1
    common = slices_on_grid(canonical, scaled.astype(np.float32), lungs, size, stride, min_fraction)
    if exclude is None or not exclude.any():
        return common
    gone = np.stack([resize(exclude[z, y0:y1, x0:x1].astype(np.float32), (size, size), order=1) > 0.01
                     for z, (y0, y1, x0, x1) in zip(common.index, common.boxes)])  # fmt: skip
    masks = common.masks & ~gone
    return CommonSlices((common.images * masks).astype(np.float32), masks, common.rel_z, common.index, common.boxes,
                        common.canonical, common.brain)  # fmt: skip


def exclusion_record(name: str, margin_mm: float) -> dict[str, Any]:
    """What was removed from one training CT: lesion and grown-lesion volumes inside the lungs, mL."""
    case = chest_case(name)
    zone = exclusion_zone(case.lesion, case.canonical.spacing, margin_mm)
    ml = case.canonical.voxel_volume_mm3 / 1000
    return {"case": name, "lesion_ml": round(float(case.lesion.sum() * ml), 2), "margin_mm": margin_mm,
            "excluded_lung_ml": round(float((zone & case.lungs).sum() * ml), 1),
            "lung_ml": round(float(case.lungs.sum() * ml), 1),
            "rule": f"expert lesion mask grown by {margin_mm:g} mm (3D) removed from training masks and images"}  # fmt: skip


def chest_split_slices(name: str, data: Any, part: str) -> CommonSlices:
    """Training or validation slices of one chest CT with its grown lesion excluded.

    ``part`` is ``train`` or ``val``; when ``name`` is both a training and a validation case, every
    ``data.holdout_every``-th lung slice goes to ``val`` and the others to ``train``.
    """
    case = chest_case(name)
    zone = exclusion_zone(case.lesion, case.canonical.spacing, data.exclude_margin_mm)
    common = chest_to_common(case.canonical, data.size, data.window, data.step_mm, case.lungs, zone, 0.02)
    if name not in data.train or name not in data.val:
        return common
    held = np.arange(len(common.index)) % data.holdout_every == data.holdout_every // 2
    keep = held if part == "val" else ~held
    return CommonSlices(common.images[keep], common.masks[keep], common.rel_z[keep], common.index[keep],
                        common.boxes[keep], common.canonical, common.brain)  # fmt: skip


def simulated_test_case(name: str, n: int, seed: int, margin_mm: float, diameter_mm: tuple[float, float] = (6.0, 20.0)
                        ) -> tuple[Volume, np.ndarray, list[dict[str, Any]]]:  # fmt: skip
    """The test CT with ``n`` held-out simulated nodules (SYNTHETIC) in its lungs, away from its real lesion.

    The shapes are real LIDC-IDRI consensus outlines of the library's **test** split (patients never
    used for anything else here) with an equivalent diameter in ``diameter_mm`` (mm), inserted with
    :func:`medanomaly.synth.insert.insert_shapes` (HU from the readers' texture rating, partial
    volume, background-matched noise) inside the lung mask eroded by 2 mm, off large vessels, never
    within ``margin_mm`` of the real lesion and at least 5 mm apart.

    Returns:
        (CT with the nodules on the canonical LPS grid, uint8 (z, y, x) labels 1..n, one JSON record
        per nodule with ``synthetic: true``).
    """
    from medanomaly.data.lidc_shapes import load_library
    from medanomaly.synth.insert import insert_shapes, prepare_background

    case = chest_case(name)
    library = load_library()
    pool = library.indices("test", *diameter_mm)
    rng = np.random.default_rng(seed)
    picks = rng.choice(pool, size=min(n, pool.size), replace=False)
    ct = case.canonical
    background = prepare_background(ct, lung=ct.with_array(case.lungs.astype(np.uint8)),
                                    exclude=ct.with_array(case.lesion.astype(np.uint8)), exclude_margin_mm=margin_mm,
                                    name=name)  # fmt: skip
    out, labels, records = insert_shapes(background, [library[int(i)] for i in picks], rng)
    return out.with_meta(modality="CT"), np.asarray(labels.array), [r.to_json() for r in records]
