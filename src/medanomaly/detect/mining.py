"""Hard negatives mined from the detector's own false positives on its training scans.

The patch sampler's hard negatives are any lung voxel denser than -500 HU (vessels, fissures, the
pleura): most are easy once the network has learnt for a while. Every ``mine_every`` training steps
the network being trained runs over the training lung of each training scan (one plain sliding-window
pass on the detector grid, no mirroring, no pyramid), and the peaks of its heatmap components that
reach ``level`` outside every inserted nodule (grown by ``guard`` voxels) become a pool of patch
centres: what this network now mistakes for a nodule (Faster R-CNN's online hard example mining and
nnDetection's hard negative sampling work from the same idea). A share of the hard-negative patches
is then drawn around them (:meth:`medanomaly.detect.patches.PatchSampler.set_mined`).

Only the training scans are mined (the exclusion zone around the real lesions stays excluded), so
nothing of the validation or held-out scans is seen.

Example:
    >>> import numpy as np
    >>> from medanomaly.detect.patches import GridScan
    >>> img = np.zeros((8, 32, 32), np.float32); img[4, 8, 8] = 1.0; img[4, 24, 24] = 1.0
    >>> tgt = np.zeros(img.shape, np.uint8); tgt[4, 24, 24] = 1
    >>> scan = GridScan("toy", img, tgt, np.ones(img.shape, bool), np.zeros(img.shape, bool), img)
    >>> false_positive_peaks(lambda x: x * 20.0 - 10.0, scan, (8, 32, 32), 0.25).tolist()
    [[4, 8, 8]]
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from medanomaly.detect.infer import region_box, run_network
from medanomaly.detect.patches import GridScan, PatchSampler

__all__ = ["false_positive_peaks", "mine_sampler", "mining_round", "peaks_outside_nodules", "scan_heatmap"]

#: Heatmap probability at which a component outside the nodules counts as a false positive.
MINING_LEVEL = 0.5
#: Most mined centres kept per scan (the highest peaks first).
MAX_PER_SCAN = 64


def false_positive_peaks(predictor: Callable[[Any], Any], scan: GridScan, roi_size: tuple[int, int, int],
                         overlap: float, level: float = MINING_LEVEL, guard: int = 2,
                         max_per_scan: int = MAX_PER_SCAN, divisor: tuple[int, int, int] = (2, 4, 4)) -> np.ndarray:  # fmt: skip
    """(z, y, x) voxels of the heatmap's false-positive peaks in one training scan, highest first.

    Args:
        predictor: the network (logits from a (1, 1, z, y, x) tensor), in eval mode.
        scan: a training scan on the detector grid; only its ``allowed`` voxels are searched.
        roi_size / overlap: sliding windows, as at inference.
        level: probability a component must reach to count.
        guard: voxels (26-connected dilation steps) around each inserted nodule that are not false positives
            (a nodule's own fringe).
        max_per_scan: the most peaks returned.
        divisor: the sizes (z, y, x) the network needs, as at inference (z 1 for a one-slice 2D network).
    """
    prob = scan_heatmap(predictor, scan, roi_size, overlap, divisor)
    return peaks_outside_nodules(prob, scan, level, guard, max_per_scan)


def scan_heatmap(predictor: Callable[[Any], Any], scan: GridScan, roi_size: tuple[int, int, int], overlap: float,
                 divisor: tuple[int, int, int] = (2, 4, 4)) -> np.ndarray:
    """The network's probability over the box of a scan's ``allowed`` voxels (0 elsewhere)."""
    prob = np.zeros(scan.image.shape, np.float32)
    if scan.allowed.any():
        box = region_box(scan.allowed, roi_size)
        prob[box] = run_network(predictor, scan.image[box], roi_size, overlap, divisor)
    return prob


def peaks_outside_nodules(prob: np.ndarray, scan: GridScan, level: float = MINING_LEVEL, guard: int = 2,
                          max_per_scan: int = MAX_PER_SCAN) -> np.ndarray:
    """The peaks of ``prob``'s components reaching ``level`` inside ``allowed`` and ``guard`` voxels clear of every
    nodule, highest first (see :func:`false_positive_peaks`)."""
    from scipy import ndimage

    cube = np.ones((3, 3, 3), bool)
    near = ndimage.binary_dilation(scan.target > 0, cube, iterations=guard) if guard > 0 else scan.target > 0
    labels, n = ndimage.label((prob >= level) & scan.allowed & ~near, structure=cube)
    if n == 0:
        return np.empty((0, 3), np.int64)
    index = np.arange(1, n + 1)
    peaks = np.asarray(ndimage.maximum_position(prob, labels, index), np.int64).reshape(n, 3)
    heights = np.asarray(ndimage.maximum(prob, labels, index), np.float64).reshape(n)
    return peaks[np.argsort(-heights, kind="stable")[:max_per_scan]]


def mine_sampler(net: Any, sampler: PatchSampler, roi_size: tuple[int, int, int], overlap: float,
                 level: float = MINING_LEVEL, divisor: tuple[int, int, int] = (2, 4, 4)) -> dict[str, float]:  # fmt: skip
    """Refresh ``sampler``'s mined pools with ``net``'s false-positive peaks on every one of its scans (the 3D lung
    detector and the 2D heatmap detector alike; ``divisor`` as :func:`false_positive_peaks`), and give it each
    nodule's highest probability from the same heatmap (:meth:`PatchSampler.set_lesion_peaks`: a sampler with a
    ``hard_positive_weight`` then draws the nodules the network misses more often).

    Returns:
        ``{"false_positives": total peaks, "scans_with_any": n, "missed_nodules": nodules whose peak is under
        ``level`` (per-lesion samplers only), "seconds": wall}`` (a record of the round).
    """
    t0 = time.perf_counter()
    total = with_any = 0
    missed: list[int] = []
    for i, scan in enumerate(sampler.scans):
        prob = scan_heatmap(net, scan, roi_size, overlap, divisor)
        peaks = peaks_outside_nodules(prob, scan, level)
        sampler.set_mined(i, peaks)
        if (n := sampler.set_lesion_peaks(i, prob, level)) is not None:
            missed.append(n)
        total += len(peaks)
        with_any += int(len(peaks) > 0)
    record = {"false_positives": float(total), "scans_with_any": float(with_any)}
    if missed:  # a per-lesion sampler (the lung detector): how many training nodules this network misses
        record["missed_nodules"] = float(sum(missed))
    return {**record, "seconds": round(time.perf_counter() - t0, 2)}


def mining_round(sampler: PatchSampler, roi_size: tuple[int, int, int], overlap: float, mine_every: int,
                 divisor: tuple[int, int, int] = (2, 4, 4)) -> Callable[[Any], dict[str, float]] | None:  # fmt: skip
    """The ``mine(net)`` callable a heatmap training run calls every ``mine_every`` steps (:func:`mine_sampler` on
    ``sampler``), or None when ``mine_every`` is 0 (no mining)."""
    if not mine_every:
        return None
    return partial(mine_sampler, sampler=sampler, roi_size=roi_size, overlap=overlap, divisor=divisor)
