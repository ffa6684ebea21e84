"""Benchmark: files/s of ``medanomaly deid`` vs the ``deid`` package (pydicom/deid) on one folder.

Builds a 1,000-file folder from real DICOM files (pydicom's CT_small, MR_small and charset
images; each copy gets its own patient id and UIDs), then, in this same process:

* ``deid`` 0.4: ``replace_identifiers`` with its default recipe, private tags removed, saved;
* ours: :func:`medanomaly.privacy.deid.deidentify_folder`, header profile (PS3.15 Annex E basic),
  keyed pseudonyms and UIDs, atomic writes, audit; ``burned_in="never"`` so both tools do the
  same job (headers only; deid's pixel cleaner is a separate step);
* ours with ``--workers`` processes (default 2), for scale (not part of the ratio);
* ours again with the defaults (pixel scan with OCR for the text-prone OT/SC files) on the first
  100 files, for scale (tesseract dominates there).

Prints files/s for each and the ratio ours/deid (target >= 2). Usage::

    .venv/bin/python bench/bench_deid.py [--files 1000]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
import warnings
from pathlib import Path


def build_folder(dest: Path, n: int) -> list[Path]:
    """``n`` real DICOM files with distinct patients and UIDs (flat folder, unique names)."""
    import pydicom
    from pydicom.data import get_charset_files
    from pydicom.uid import generate_uid

    from medanomaly.data.sources import real_data

    sources = [real_data("pydicom/CT_small.dcm"), real_data("pydicom/MR_small.dcm")]
    sources += [Path(p) for p in sorted(get_charset_files("chr*.dcm")) if "Multi" not in p and "SQ" not in p]
    templates = [pydicom.dcmread(p) for p in sources]
    templates = [t for t in templates if "PixelData" in t]
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        ds = templates[i % len(templates)]
        ds.PatientID = f"BENCH{i // 10:05d}"  # 10 files per patient
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[str(i)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=[f"series{i // 10}"])
        path = dest / f"f{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def run_deid_package(files: list[Path], out: Path) -> float:
    from deid.config import DeidRecipe
    from deid.dicom import replace_identifiers

    out.mkdir(parents=True, exist_ok=True)
    recipe = DeidRecipe()
    t0 = time.perf_counter()
    replace_identifiers([str(f) for f in files], deid=recipe, save=True, output_folder=str(out), remove_private=True)
    return time.perf_counter() - t0


def run_ours(folder: Path, out: Path, burned_in: str, workers: int = 1) -> float:
    from medanomaly.privacy.deid import DeidConfig, deidentify_folder

    t0 = time.perf_counter()
    key = b"benchmark-secret-0123456789"
    summary = deidentify_folder(folder, out, key, DeidConfig(burned_in=burned_in), workers=workers)
    elapsed = time.perf_counter() - t0
    assert summary.refused == 0, "benchmark input must be all valid"
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="extra run of ours with this many processes")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    tmp = Path(tempfile.mkdtemp(prefix="bench_deid_"))
    try:
        files = build_folder(tmp / "in", args.files)
        n = len(files)
        t_deid = run_deid_package(files, tmp / "out_deid")
        t_ours = run_ours(tmp / "in", tmp / "out_ours", "never")
        t_par = run_ours(tmp / "in", tmp / "out_par", "never", workers=args.workers)
        sub = tmp / "in_sub"
        sub.mkdir()
        for f in files[:100]:
            shutil.copy(f, sub / f.name)
        t_full = run_ours(sub, tmp / "out_full", "auto")
        print(f"files: {n} real DICOM files (CT_small, MR_small, pydicom charset images; {n // 10} patients)")
        print(f"deid {_version('deid')} (default recipe, headers):  {n / t_deid:8.1f} files/s  ({t_deid:.2f} s)")
        print(f"medanomaly deid (Annex E basic, headers):      {n / t_ours:8.1f} files/s  ({t_ours:.2f} s)")
        print(f"medanomaly deid (headers, --workers {args.workers}):         {n / t_par:8.1f} files/s  ({t_par:.2f} s)")
        m = min(n, 100)
        print(f"medanomaly deid (defaults: + pixel scan/OCR):  {m / t_full:8.1f} files/s  ({t_full:.2f} s, {m} files)")
        print(f"ratio ours/deid (headers, same files, same process): {t_deid / t_ours:.2f}x  (target >= 2x)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    main()
