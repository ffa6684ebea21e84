"""What ``--register-to-first`` costs a fusion call, against ``--resample-to-first`` (resampling by patient
coordinates alone), both run here in one process on the same images, and how close the registration lands.

Images (real, not ours): ITK's 3D T1 head (``KmeansTest_T1UCharRaw.nii.gz``, 128 x 128 x 62 voxels of 2 x 2 x 3 mm)
as the first modality; the second is the same head moved by a known rigid transform (``--angle`` degrees about z,
``--shift`` mm along x and y) and given another contrast (its intensities inverted inside the head, as a T2 or PD
differs from a T1), resampled on the first's grid; and ITK's 2D T1 and PD slices of one subject, the PD moved (13, 17)
mm (ITK's own shifted copy). Printed per pair: seconds per registration (median of ``--repeats``), the ratio to
resampling the second image onto the first's grid by coordinates (what ``--resample-to-first`` does, the baseline), and for the 3D pair the target registration error (mm, mean over 200 points of the head) against the
known transform. The machine's load changes the seconds; the ratios are what to compare.

Usage: python bench/bench_fusion_alignment.py [--repeats 3] [--angle 5] [--shift 8]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

ITK = Path("/usr/share/doc/insighttoolkit5-examples/examples/Data")


def _moved(fixed, angle_deg: float, shift_mm: float):
    """``fixed`` moved by a known rigid transform and given another contrast: (moving Volume, fixed -> moving)."""
    import SimpleITK as sitk

    from medanomaly.preprocess.registration import resample_to, to_sitk_image

    image = to_sitk_image(fixed)
    centre = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])
    truth = sitk.Euler3DTransform(centre, 0.0, 0.0, np.deg2rad(angle_deg), (shift_mm, shift_mm, 0.0))
    moved = resample_to(fixed, fixed, truth.GetInverse())  # the moving image seen through truth is the fixed one
    head = moved.array > np.percentile(moved.array, 60)
    other = np.where(head, moved.array.max() - moved.array, 0.0).astype(np.float32)  # another contrast inside
    return moved.with_array(other).with_meta(frame_of_reference_uid="1.2.3.4"), truth


def _median_seconds(work, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _pair(name: str, fixed, moving, repeats: int, truth=None) -> None:
    from medanomaly.engine.alignment import onto_first_by_registration, registration_flags
    from medanomaly.preprocess.registration import foreground_points, register, target_registration_error
    from medanomaly.preprocess.resample import resample_like

    resample_s, _ = _median_seconds(lambda: resample_like(moving, fixed, "linear", dtype="float32"), repeats)
    register_s, out = _median_seconds(lambda: onto_first_by_registration({"A": fixed, "B": moving}), repeats)
    print(f"{name}: resample by coordinates {resample_s * 1000:.1f} ms, register {register_s:.2f} s "
          f"(x{register_s / max(resample_s, 1e-9):.0f}); {registration_flags(out)[0]}")  # fmt: skip
    if truth is not None:
        result = register(fixed, moving, stages=("rigid",), metric="mattes")
        tre = target_registration_error(result.transform, truth, foreground_points(fixed))
        print(f"  target registration error against the known transform: {tre:.2f} mm (voxels 2 x 2 x 3 mm)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--angle", type=float, default=5.0)
    parser.add_argument("--shift", type=float, default=8.0)
    args = parser.parse_args()
    from medanomaly.preprocess.registration import load_scalar

    fixed = load_scalar(ITK / "KmeansTest_T1UCharRaw.nii.gz").with_meta(frame_of_reference_uid="1.2.3.4")
    moving, truth = _moved(fixed, args.angle, args.shift)
    _pair(f"3D head {fixed.shape[::-1]} (moved {args.angle:g} deg, {args.shift:g} mm)", fixed, moving, args.repeats,
          truth)  # fmt: skip
    t1 = load_scalar(ITK / "BrainT1Slice.png")
    pd = load_scalar(ITK / "BrainProtonDensitySliceShifted13x17y.png")
    _pair("2D T1 and PD slices (ITK's PD moved 13, 17 px inside a 20 px border: expect 33, 37 mm)", t1, pd,
          args.repeats)  # fmt: skip


if __name__ == "__main__":
    main()
