"""Benchmark: read a 500-file CT series with medanomaly vs SimpleITK's ImageSeriesReader.

The series is real data in the real format: the 48 slices of pyradiomics' lung1 CT (HU),
cycled to 500 slices at 1 mm, each written with pydicom into its own DICOM file whose header is
pydicom's CT_small (a real CT header, ~260 elements) with new UIDs, positions and pixels.
File names are shuffled, so both readers must sort by position.

Both readers run in this process on the same folder, alternating, best of ``--repeat`` runs
(disk cache warm for both). The voxels must be identical, or the benchmark fails.

Usage: ``.venv/bin/python bench/bench_dicom_read.py [--files 500] [--repeat 5]``
Prints: times and the speed ratio (SimpleITK time / our time; > 1 means we are faster).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build_series(folder: Path, n_files: int, seed: int = 0) -> None:
    """Write ``n_files`` CT slices (lung1 pixels, CT_small header) with shuffled file names."""
    import pydicom
    from pydicom.uid import generate_uid

    from medanomaly.data.sources import real_data
    from medanomaly.io import read

    lung = read(real_data("pyradiomics/lung1_image.nrrd"))
    stored = (np.clip(lung.array, -1024, 3071).astype(np.int32) + 1024).astype(np.uint16)
    template = pydicom.dcmread(real_data("pydicom/CT_small.dcm"))
    template.Rows, template.Columns = stored.shape[1:]
    template.BitsStored, template.HighBit, template.PixelRepresentation = 12, 11, 0
    template.RescaleSlope, template.RescaleIntercept = "1", "-1024"
    template.PixelSpacing = [f"{lung.spacing[1]:.6f}", f"{lung.spacing[0]:.6f}"]
    template.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    template.SliceThickness = "1"
    template.SeriesInstanceUID = generate_uid()
    names = [f"IM{i:05d}" for i in range(n_files)]
    random.Random(seed).shuffle(names)
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n_files):
        template.SOPInstanceUID = generate_uid()
        template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
        template.InstanceNumber = k + 1
        template.ImagePositionPatient = [f"{lung.origin[0]:.4f}", f"{lung.origin[1]:.4f}", f"{-250.0 + k:.4f}"]
        template.PixelData = stored[k % stored.shape[0]].tobytes()
        template.save_as(folder / names[k], enforce_file_format=True)


def read_sitk(folder: Path) -> np.ndarray:
    """SimpleITK's reference way: GDCM sorts the files of the series, ImageSeriesReader stacks."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return sitk.GetArrayFromImage(reader.Execute())


def read_ours(folder: Path) -> np.ndarray:
    from medanomaly.io import read

    return read(folder).array


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    import SimpleITK as sitk  # noqa: F401  (import cost outside the timings)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "series"
        t0 = time.perf_counter()
        build_series(folder, args.files)
        print(f"built {args.files}-file CT series (lung1 pixels, CT_small header) in {time.perf_counter() - t0:.1f} s")
        ours_t, sitk_t = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            ref = read_sitk(folder)
            sitk_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            mine = read_ours(folder)
            ours_t.append(time.perf_counter() - t)
        identical = mine.shape == ref.shape and np.array_equal(mine, ref)
        best_ours, best_sitk = min(ours_t), min(sitk_t)
        print(f"SimpleITK ImageSeriesReader: best {best_sitk:.3f} s, median {np.median(sitk_t):.3f} s")
        print(f"medanomaly.io.read:          best {best_ours:.3f} s, median {np.median(ours_t):.3f} s")
        print(f"voxels identical: {identical} (shape {mine.shape}, dtype ours {mine.dtype} / sitk {ref.dtype})")
        print(f"speed ratio (SimpleITK time / ours): {best_sitk / best_ours:.2f}x best, "
              f"{np.median(sitk_t) / np.median(ours_t):.2f}x median (target >= 1.0x)")
        return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
