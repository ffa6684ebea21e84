"""Benchmark: the lung CT pipeline (window + denoise + lung mask + resample) on the real lung1 CT.

Ours (medanomaly.preprocess: NumPy window, SimpleITK recursive Gaussian, SimpleITK resampling)
against the same steps done with MONAI's own transforms where MONAI has them
(``ScaleIntensityRange``, ``GaussianSmooth``, ``Spacing``); MONAI has no lung mask, so both
arms use ``medanomaly.preprocess.lung_mask`` for that step (timed once, reported separately).

Run: ``.venv/bin/python bench/bench_lung_pipeline.py [--repeats 3] [--threads 1]``.
Prints seconds per volume for each arm and step, and the ratio MONAI / ours (> 1: ours faster).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

TARGET_MM = (1.0, 1.0, 2.5)  # x, y, z
SIGMA_MM = 1.0
LOW, HIGH = -1350.0, 150.0


def _best(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch and ITK threads")
    args = parser.parse_args()

    import SimpleITK as sitk
    import torch
    from monai.data import MetaTensor
    from monai.transforms import GaussianSmooth, ScaleIntensityRange, Spacing

    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.io import read
    from medanomaly.preprocess.denoise import gaussian
    from medanomaly.preprocess.enhance import window
    from medanomaly.preprocess.resample import resample_to_spacing
    from medanomaly.preprocess.segment import lung_mask

    torch.set_num_threads(args.threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    ct = read(pyradiomics_case("lung1")[0]).with_meta(modality="CT")
    print(f"lung1 CT {ct.shape} (z, y, x), spacing {tuple(round(s, 3) for s in ct.spacing)} mm; "
          f"threads={args.threads}, best of {args.repeats}")  # fmt: skip

    t_mask, mask = _best(lambda: lung_mask(ct), 1)

    # ---------------------------------------------------------------- ours
    ours: dict[str, float] = {}
    ours["window"], win = _best(lambda: window(ct, "lung"), args.repeats)
    ours["denoise"], den = _best(lambda: gaussian(win, sigma_mm=SIGMA_MM), args.repeats)
    ours["resample"], res = _best(
        lambda: (resample_to_spacing(den, TARGET_MM), resample_to_spacing(mask, TARGET_MM)), args.repeats
    )

    # ---------------------------------------------------------------- MONAI
    sx, sy, sz = ct.spacing
    affine = torch.diag(torch.tensor([sz, sy, sx, 1.0], dtype=torch.float64))  # array axes (z, y, x)
    img = MetaTensor(torch.from_numpy(ct.array.astype(np.float32))[None], affine=affine)
    msk = MetaTensor(torch.from_numpy(mask.array)[None], affine=affine)
    scale = ScaleIntensityRange(a_min=LOW, a_max=HIGH, b_min=0.0, b_max=1.0, clip=True)
    smooth = GaussianSmooth(sigma=(SIGMA_MM / sz, SIGMA_MM / sy, SIGMA_MM / sx))
    spacing_img = Spacing(pixdim=TARGET_MM[::-1], mode="bilinear")
    spacing_msk = Spacing(pixdim=TARGET_MM[::-1], mode="nearest")
    monai: dict[str, float] = {}
    with torch.no_grad():
        monai["window"], m_win = _best(lambda: scale(img), args.repeats)
        monai["denoise"], m_den = _best(lambda: smooth(m_win), args.repeats)
        monai["resample"], m_res = _best(lambda: (spacing_img(m_den), spacing_msk(msk)), args.repeats)

    # ---------------------------------------------------------------- agreement
    win_diff = float(np.abs(np.asarray(m_win[0]) - win.array).max())
    den_diff = float(np.abs(np.asarray(m_den[0]) - den.array)[4:-4, 8:-8, 8:-8].mean())
    print(f"agreement: window max |diff| {win_diff:.2e}; denoise mean |diff| (interior) {den_diff:.2e}; "
          f"resampled shapes ours {res[0].shape} MONAI {tuple(m_res[0].shape[1:])}")  # fmt: skip
    lung_ml = float((mask.array > 0).sum() * ct.voxel_volume_mm3 / 1000)
    print(f"lung mask (same in both arms): {t_mask:.2f} s, {lung_ml:.0f} mL")
    print(f"{'step':<10} {'ours s':>9} {'MONAI s':>9} {'MONAI/ours':>11}")
    for step in ours:
        print(f"{step:<10} {ours[step]:9.3f} {monai[step]:9.3f} {monai[step] / ours[step]:11.2f}")
    total_ours = sum(ours.values()) + t_mask
    total_monai = sum(monai.values()) + t_mask
    print(f"{'total':<10} {total_ours:9.3f} {total_monai:9.3f} {total_monai / total_ours:11.2f}   (seconds per volume, incl. lung mask)")
    print(f"ratio (MONAI / ours, steps MONAI has): {sum(monai.values()) / sum(ours.values()):.2f}")


if __name__ == "__main__":
    main()
