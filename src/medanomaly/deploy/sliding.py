"""Sliding-window inference in NumPy (no torch): MONAI's window grid and Gaussian blending.

The exported detector is a fully convolutional network (patch in, logit map out); the sliding
window stays outside the ONNX graph (MONAI's inferer cannot be exported, MONAI #6526). This
module places the windows exactly as :func:`monai.inferers.sliding_window_inference` does
(``_get_scan_interval`` + ``dense_patch_slices``), weights each window by the same Gaussian
importance map (``sigma_scale=0.125``, clamped at its minimum or 1e-3) and divides by the summed
weights, so its output equals MONAI's to float32 rounding. Windows are sent to the predictor in
batches (the exported graph has a dynamic batch axis).

Example:
    >>> import numpy as np
    >>> out = sliding_window(lambda x: x * 2.0, np.ones((4, 8, 8), np.float32), (2, 4, 4), 0.25)
    >>> float(out.min()), float(out.max())
    (2.0, 2.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["gaussian_importance", "window_starts", "sliding_window", "run_network_numpy"]


def gaussian_importance(patch: Sequence[int], sigma_scale: float = 0.125) -> np.ndarray:
    """MONAI's Gaussian importance map of a window (float32, unnormalised, clamped > 0)."""
    out: np.ndarray | None = None
    for i, n in enumerate(patch):
        sigma = n * sigma_scale
        x = np.arange(-(n - 1) / 2.0, (n - 1) / 2.0 + 1, dtype=np.float32)
        g = np.exp(x**2 / np.float32(-2 * sigma**2)).astype(np.float32)
        out = g if i == 0 else out[..., None] * g[(None,) * i]  # type: ignore[index]
    assert out is not None
    floor = max(float(out.min()), 1e-3)
    return np.clip(out, floor, None).astype(np.float32)


def window_starts(image: Sequence[int], roi: Sequence[int], overlap: float) -> list[tuple[int, ...]]:
    """Window start indices (one tuple per window), in MONAI's order."""
    starts = []
    for n, r in zip(image, roi, strict=True):
        interval = int(r) if r == n else max(int(r * (1 - overlap)), 1)
        num = int(math.ceil(float(n) / interval))
        count = next((d + 1 for d in range(num) if d * interval + r >= n), 1)
        starts.append([i * interval - max(i * interval + r - n, 0) for i in range(count)])
    grid = np.meshgrid(*starts, indexing="ij")
    return [tuple(int(v) for v in row) for row in np.stack([g.ravel() for g in grid], 1)]


def sliding_window(predictor: Callable[[np.ndarray], np.ndarray], image: np.ndarray, roi: Sequence[int],
                   overlap: float, batch: int = 4) -> np.ndarray:  # fmt: skip
    """Gaussian-blended output (same shape as ``image``, one channel) of ``predictor`` over windows.

    Args:
        predictor: maps a batch (B, 1, *roi) float32 to logits (B, 1, *roi).
        image: (z, y, x) float32, at least ``roi`` in every axis.
        roi: window size (z, y, x) in voxels.
        overlap: fraction of a window shared with its neighbour (0..1).
        batch: windows per predictor call.
    """
    weight = gaussian_importance(roi)
    out = np.zeros(image.shape, np.float32)
    norm = np.zeros(image.shape, np.float32)
    starts = window_starts(image.shape, roi, overlap)
    for i in range(0, len(starts), batch):
        chunk = starts[i : i + batch]
        boxes = [tuple(slice(s, s + r) for s, r in zip(st, roi, strict=True)) for st in chunk]
        x = np.stack([image[b] for b in boxes])[:, None].astype(np.float32)
        y = np.asarray(predictor(np.ascontiguousarray(x)), np.float32)
        for b, pred in zip(boxes, y[:, 0], strict=True):
            out[b] += pred * weight
            norm[b] += weight
    return out / norm


def run_network_numpy(predictor: Callable[[np.ndarray], np.ndarray], image: np.ndarray, roi_size: tuple[int, int, int],
                      overlap: float, divisor: tuple[int, int, int] = (2, 4, 4)) -> np.ndarray:  # fmt: skip
    """Sigmoid probability of ``predictor`` over ``image`` (z, y, x): the NumPy twin of
    :func:`medanomaly.detect.infer.run_network` (same padding, windows and blending)."""
    pads = [(0, (-n) % d) for n, d in zip(image.shape, divisor, strict=True)]
    padded = np.pad(np.asarray(image, np.float32), pads, mode="constant")
    roi = tuple(min(r, n) for r, n in zip(roi_size, padded.shape, strict=True))
    logits = sliding_window(predictor, padded, roi, overlap)
    prob = 1.0 / (1.0 + np.exp(-logits))
    return prob[: image.shape[0], : image.shape[1], : image.shape[2]].astype(np.float32)
