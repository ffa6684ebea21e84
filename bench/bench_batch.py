"""Batch inference throughput over an archive: series/hour on one machine and on Ray (local, 2 workers).

Builds an archive from the real pyradiomics lung CTs (copies with new UIDs, a few corrupt series,
an SR, an RT plan, a NIfTI copy, a localizer, a non-UTF-8 name, a symlink loop), runs the batch
on it with the one-machine engine and with Ray Data, and prints series/hour (and per core).

    python bench/bench_batch.py                          # 40 cropped series, stand-in model (quick)
    python bench/bench_batch.py --n 200 --check-resume   # the issue's 200-series run + kill -9 check
    python bench/bench_batch.py --run runs/lung --full --n 6   # a trained detector on whole scans

Without ``--run`` the model is a labelled stand-in (threshold + medanomaly.quantify, no network):
it measures the batch machinery (walk, read, quantify, DICOM SEG/SR/map, records, tables), not a
detector. Numbers depend on the machine and its load; the script prints what it measured.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")


class StandInDetector:
    """Labelled stand-in model: voxels above -300 HU in the central block, measured as findings."""

    task = "lung_nodule"
    class_names = ("nodule",)
    info = {"model": "bench stand-in (threshold + quantify)", "version": 1}

    def predict(self, volume):
        from medanomaly.quantify.measure import measure_lesions
        from medanomaly.types import Finding, Prediction

        array = np.asarray(volume.array, dtype=np.float32)
        z, y, x = array.shape
        block = np.zeros(array.shape, bool)
        block[z // 4 : z - z // 4 or z, y // 3 : y - y // 3, x // 3 : x - x // 3] = True
        mask = (array > -300.0) & block
        found = measure_lesions(volume.with_array(mask.astype(np.uint8)), volume, min_voxels=3)[:3] if mask.any() else []
        findings = tuple(Finding(f.center_mm, f.bbox_mm, 0.5, "nodule", f.mask, f.measurements) for f in found)
        score = volume.with_array(np.clip((array + 1000.0) / 1400.0, 0, 1).astype(np.float32))
        return Prediction(scores=(float(bool(findings)),), class_names=self.class_names,
                          label="nodule", findings=findings, anomaly_map=score)  # fmt: skip


def _model(run: str | None):
    if run is None:
        return StandInDetector()
    from medanomaly.engine import load_model

    return load_model(run)


def _rows(out: Path) -> list[dict]:
    with (out / "results.csv").open() as fh:
        return list(csv.DictReader(fh))


def _timed(model, archive: Path, out: Path, engine: str, workers: int) -> tuple[float, dict]:
    from medanomaly.deploy.batch import run_batch

    start = time.perf_counter()
    summary = run_batch(model, archive, out, progress=False, engine=engine, workers=workers)
    return time.perf_counter() - start, summary.counts


def _check_resume(archive: Path, out: Path, run: str | None, manifest) -> None:
    """Run in a subprocess, kill -9 it mid-run, rerun: every series once, none missing."""
    code = ("import sys; sys.path.insert(0, %r); import bench_batch as b; from medanomaly.deploy.batch import run_batch;"
            " run_batch(b._model(%r), %r, %r, progress=False)") % (str(Path(__file__).parent), run, str(archive), str(out))
    proc = subprocess.Popen([sys.executable, "-c", code])
    target = max(3, len(manifest.good) // 3)
    while proc.poll() is None and len(list((out / "series").glob("*.json"))) < target:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = len(list((out / "series").glob("*.json")))
    _timed(_model(run), archive, out, "local", 1)
    ids = Counter(r["series_id"] for r in _rows(out))
    status = {r["series_id"]: r["status"] for r in _rows(out)}
    missing = [u for u in manifest.good if status.get(u) != "done"]
    twice = [k for k, n in ids.items() if n > 1]
    bad = [u for u in manifest.bad if status.get(u) != "error"]
    print(f"kill -9 after {before} records, then rerun: {len(ids)} rows, missing {len(missing)}, "
          f"twice {len(twice)}, corrupt series not reported as error {len(bad)}")  # fmt: skip
    if missing or twice or bad:
        sys.exit("resume check FAILED")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="number of CT series in the archive")
    parser.add_argument("--run", default=None, help="trained run folder (default: the labelled stand-in model)")
    parser.add_argument("--full", action="store_true", help="whole scans (48-61 x 512 x 512) instead of 8x64x64 crops")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers (local mode)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray path")
    parser.add_argument("--check-resume", action="store_true", help="also run the kill -9 / rerun check")
    args = parser.parse_args()

    from medanomaly.deploy.demo_archive import build_archive

    tmp = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        crop = None if args.full else (8, 64, 64)
        t0 = time.perf_counter()
        manifest = build_archive(tmp / "archive", args.n, crop=crop, n_corrupt=max(1, args.n // 40))
        print(f"archive: {args.n} CT series ({'whole scans' if args.full else '8x64x64 crops'} of lung1/lung2, new UIDs), "
              f"{len(manifest.bad)} corrupt, + SR, RT plan, NIfTI, localizer, clutter; built in {time.perf_counter() - t0:.0f} s")
        model = _model(args.run)
        label = args.run or "stand-in model (threshold + quantify, no network)"
        paths = [("local", 1)] + ([] if args.no_ray else [("ray", args.workers)])
        for engine, cores in paths:
            seconds, counts = _timed(model, tmp / "archive", tmp / f"out-{engine}", engine, cores)
            n_run = counts.get("done", 0) + counts.get("error", 0)
            rate = n_run / seconds * 3600
            print(f"{engine:5s} ({cores} core{'s' if cores > 1 else ''}): {n_run} series run in {seconds:.1f} s "
                  f"-> {rate:.0f} series/hour, {rate / cores:.0f} per core; {dict(counts)}; model: {label}")
        if len(paths) == 2:
            same = [{k: v for k, v in r.items() if k != "seconds"} for r in _rows(tmp / "out-local")] == \
                   [{k: v for k, v in r.items() if k != "seconds"} for r in _rows(tmp / "out-ray")]  # fmt: skip
            print(f"ray results identical to local: {same}")
        if args.check_resume:
            _check_resume(tmp / "archive", tmp / "out-resume", args.run, manifest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
