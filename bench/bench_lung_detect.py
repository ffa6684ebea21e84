"""Whole-volume nodule detection on the real lung1 CT: our lung-restricted pipeline vs plain MONAI.

Both sides run the **same network** (the demo's trained ``nodule_unet`` from ``runs/demo/lung_model``,
else the committed fixture detector, else the same architecture untrained: the sliding window's
timing does not depend on the weights) on the same
detector grid (1.25 x 1.25 x 5 mm), with the same window size and overlap:

* baseline: ``monai.inferers.SlidingWindowInferer`` over the full resampled volume;
* ours: ``NoduleDetector.heatmap`` searching only the bounding box of the lung mask (+5 mm).

The lung mask is computed once beforehand (ours needs it; any lung-nodule pipeline computes it to
drop findings outside the lungs); its time is printed separately and in a second ratio.
Prints median seconds of ``REPEATS`` runs and the speed-up ratios.

Then **detection seconds per CT on CPU, end to end** (``NoduleDetector.detect`` on the CT as read:
lung mask, resampling, lung-restricted sliding window, findings, region growing, measurements) on
lung1 and lung2, wall and process CPU time, printed beside published anchors (different hardware and
scan sizes: context, not a head-to-head): the MONAI ``lung_nodule_ct_detection`` bundle, 7.45 s per
CT on an A100 in fp32 for the model alone and 36.5 s end to end; TotalSegmentator's fastest CPU
setting, about 70 s per CT. Without ``runs/demo/lung_model`` the committed fixture detector
(``tests/fixtures/lung_detector``, the demo recipe, 250 steps) is used.
Run: ``.venv/bin/python bench/bench_lung_detect.py``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

from medanomaly.data.sources import pyradiomics_case
from medanomaly.detect.detector import NoduleDetector
from medanomaly.detect.grid import lung_region, to_grid, window
from medanomaly.io import read

REPEATS = 3
RUNS = (Path("runs/demo/lung_model"), Path("tests/fixtures/lung_detector"))
ANCHORS = (
    ("MONAI lung_nodule_ct_detection bundle, A100 fp32, model only", 7.45),
    ("MONAI lung_nodule_ct_detection bundle, A100 fp32, end to end", 36.5),
    ("TotalSegmentator, fastest CPU setting (not nodules)", 70.0),
)


def detection_per_ct(det: NoduleDetector) -> None:
    """End-to-end detection seconds per CT (wall and process CPU) on lung1 and lung2, beside the anchors."""
    rows = []
    for case in ("lung1", "lung2"):
        ct = read(pyradiomics_case(case)[0])
        wall, cpu = time.perf_counter(), time.process_time()
        findings = det.detect(ct)
        rows.append((case, ct.shape, time.perf_counter() - wall, time.process_time() - cpu, len(findings)))
    print("detection per CT on CPU, end to end (lung mask + search + findings + growing + measurements):")
    for case, shape, wall, cpu, n in rows:
        print(f"  {case} {shape}: {wall:.1f} s wall, {cpu:.1f} s process CPU "
              f"(torch threads {det.threads}), {n} findings")
    for what, seconds in ANCHORS:
        print(f"  anchor: {what}: {seconds:g} s per CT")


def main() -> None:
    torch.set_num_threads(2)
    ct = read(pyradiomics_case("lung1")[0])
    t0 = time.perf_counter()
    lung = lung_region(ct)
    t_lung = time.perf_counter() - t0
    run = next((r for r in RUNS if (r / "model.safetensors").is_file()), None)
    if run is not None:
        det, which = NoduleDetector.load(run), f"trained ({run})"
    else:
        from medanomaly.models.nodule_unet import nodule_unet

        det, which = NoduleDetector(threads=2), "untrained, same architecture"
        det.model_ = nodule_unet(**det.model_params).eval() if det.model_params else nodule_unet().eval()
    from monai.inferers import SlidingWindowInferer

    det.threads = 2  # same torch threads on both sides
    inferer = SlidingWindowInferer(roi_size=det.roi_size, sw_batch_size=1, overlap=det.overlap, mode="gaussian")

    def baseline() -> np.ndarray:
        grid = to_grid(ct, det.spacing_mm)
        image = window(grid.array, *det.hu_window)
        pads = [(0, (-n) % d) for n, d in zip(image.shape, (2, 4, 4), strict=True)]
        x = torch.from_numpy(np.pad(image, pads))[None, None]
        with torch.no_grad():
            return torch.sigmoid(inferer(x, det.model_))[0, 0].numpy()

    def ours() -> np.ndarray:
        return det.heatmap(ct, det.region(lung)).array

    times: dict[str, list[float]] = {"baseline": [], "ours": []}
    for _ in range(REPEATS):
        for name, fn in (("baseline", baseline), ("ours", ours)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    base, mine = statistics.median(times["baseline"]), statistics.median(times["ours"])
    grid_shape = to_grid(ct, det.spacing_mm).shape
    box = det.region(lung)
    idx = np.argwhere(box)
    crop = idx.max(0) - idx.min(0) + 1
    print(f"lung1 CT {ct.shape} -> detector grid {grid_shape}; network: {which}; torch threads 2")
    print(f"search box (lungs + 5 mm): {tuple(int(c) for c in crop)} = {np.prod(crop) / np.prod(grid_shape):.0%} of the grid")
    print(f"lung mask (once): {t_lung:.2f} s")
    print(f"plain MONAI SlidingWindowInferer, full volume: {base:.2f} s (median of {REPEATS})")
    print(f"ours, lung-restricted sliding window:          {mine:.2f} s (median of {REPEATS})")
    print(f"ratio baseline / ours: {base / mine:.2f}x")
    print(f"ratio baseline / (ours + lung mask): {base / (mine + t_lung):.2f}x")
    detection_per_ct(det)


if __name__ == "__main__":
    main()
