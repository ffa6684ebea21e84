"""In-plane disk morphology: SciPy's ``binary_erosion`` / ``binary_dilation`` vs the row-run passes of
:mod:`medanomaly.preprocess.morphology`, on the real scans where the masks use them, in the same process.

1. The body mask's 3 mm opening of lung2's CT (``HU > -500``, 61 x 512 x 512).
2. The brain mask's 8 mm erosion and 10 mm dilation of brain1's MRI (Otsu foreground).
3. The lung mask's 20 mm closing of lung2's right lung (per-slice distance transforms before,
   as the code did until this bench was written, vs the row passes).
4. The whole ``lung_mask`` of lung1 and lung2, and ``brain_mask`` of brain1 (now, once each).

Each pair is checked to give identical masks before it is timed. Prints medians of ``REPEATS`` runs and
the ratio baseline / ours. Run: ``.venv/bin/python bench/bench_inplane_morphology.py``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from medanomaly.data.sources import pyradiomics_case
from medanomaly.io import read
from medanomaly.preprocess.morphology import dilate_in_plane, elliptic_disk, erode_in_plane, open_in_plane
from medanomaly.preprocess.segment import _disk_closing_per_slice, _two_air_regions, body_mask, lung_mask
from medanomaly.preprocess.tissue_masks import brain_mask, otsu_threshold

REPEATS = 3


def median_seconds(fn: Callable[[], object]) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare(what: str, baseline: Callable[[], np.ndarray], ours: Callable[[], np.ndarray]) -> None:
    if not np.array_equal(baseline(), ours()):
        raise SystemExit(f"{what}: the masks differ")
    base, new = median_seconds(baseline), median_seconds(ours)
    print(f"{what}: SciPy / EDT {base:.3f} s, row passes {new:.3f} s, {base / new:.1f}x (identical masks)")


def closing_by_edt(mask: np.ndarray, radius_mm: float, spacing_yx: tuple[float, float]) -> np.ndarray:
    """The per-slice distance-transform closing the lung mask used before the row passes (each slice cropped
    to its mask's box plus the radius)."""
    out = mask.copy()
    pad = int(np.ceil(radius_mm / min(spacing_yx))) + 2
    for z in np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1)):
        ys, xs = np.nonzero(mask[z])
        y0, y1 = max(ys.min() - pad, 0), min(ys.max() + pad + 1, mask.shape[1])
        x0, x1 = max(xs.min() - pad, 0), min(xs.max() + pad + 1, mask.shape[2])
        crop = np.pad(mask[z, y0:y1, x0:x1], pad)
        dilated = ndimage.distance_transform_edt(~crop, sampling=spacing_yx) <= radius_mm
        closed = ndimage.distance_transform_edt(dilated, sampling=spacing_yx) > radius_mm
        out[z, y0:y1, x0:x1] |= closed[pad:-pad, pad:-pad]
    return out


def main() -> None:
    ct = read(pyradiomics_case("lung2")[0])
    fg = np.asarray(ct.array) > -500
    disk = elliptic_disk(3.0, ct.spacing[1], ct.spacing[0])
    compare("lung2 body opening 3 mm", lambda: ndimage.binary_opening(fg, disk), lambda: open_in_plane(fg, disk))

    mr = read(pyradiomics_case("brain1")[0])
    arr = np.asarray(mr.array, np.float32)
    head = arr > otsu_threshold(arr)
    erode, grow = elliptic_disk(8.0, mr.spacing[1], mr.spacing[0]), elliptic_disk(10.0, mr.spacing[1], mr.spacing[0])
    compare("brain1 erosion 8 mm", lambda: ndimage.binary_erosion(head, erode), lambda: erode_in_plane(head, erode))
    compare("brain1 dilation 10 mm", lambda: ndimage.binary_dilation(head, grow), lambda: dilate_in_plane(head, grow))

    right = _two_air_regions(ct, body_mask(ct).array > 0, -320.0, 20.0) == 1
    yx = (ct.spacing[1], ct.spacing[0])
    compare("lung2 one lung's closing 20 mm", lambda: closing_by_edt(right, 20.0, yx),
            lambda: _disk_closing_per_slice(right, 20.0, yx))  # fmt: skip

    for case in ("lung1", "lung2"):
        image = read(pyradiomics_case(case)[0])
        print(f"{case} lung_mask {image.shape}: {median_seconds(lambda im=image: lung_mask(im)):.2f} s")
    print(f"brain1 brain_mask {mr.shape}: {median_seconds(lambda: brain_mask(mr)):.2f} s")


if __name__ == "__main__":
    main()
