"""Peak memory of one prediction per input voxel, against each task's declared floor.

Every model refuses, before the work, an image whose prediction would take more than the process may still take
(``ModelBase.check_memory``: ``PREDICT_BYTES_PER_VOXEL`` x input voxels against
``io.memory.available_memory_bytes``). The floor must stay under what a prediction really takes, or the check would
refuse work that fits: this bench measures it. Each case runs in a child process: load the model, read the image
(upsampled in-plane by ZOOM for a large input), reset the peak (``/proc/self/clear_refs``), predict, read the peak
(``VmHWM``); bytes per voxel = (peak - resident before) / input voxels. Prints measured / floor (>= 1: the floor
holds). Linux only.

Cases: the committed fixture lung detector on lung1 and on lung2 upsampled x2 (64 million voxels, ~4 GB), and a
tiny 2D classifier trained here (bench_serve's) on a 2048 x 2048 and a 4096 x 4096 picture made from a lung1 slice;
``--case RUN IMAGE ZOOM`` adds any run (e.g. a 2D detection or anomaly run).

Usage: python bench/bench_predict_memory.py [--case RUN IMAGE ZOOM ...] [--no-default]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import gc, json, sys
from scipy import ndimage
from medanomaly.engine import load_model
from medanomaly.io import read

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

run, image, zoom = sys.argv[1], sys.argv[2], float(sys.argv[3])
model = load_model(run)
volume = read(image)
if zoom != 1:
    spacing = (volume.spacing[0] / zoom, volume.spacing[1] / zoom, volume.spacing[2])
    volume = volume.__class__(ndimage.zoom(volume.array, (1, zoom, zoom), order=1), spacing=spacing,
                              origin=volume.origin, direction=volume.direction, meta=dict(volume.meta))
model.check_input(volume, image)
gc.collect()
open("/proc/self/clear_refs", "w").write("5")
before = status("VmRSS:")
model.predict(volume)
used = status("VmHWM:") - before
print(json.dumps({"task": model.task, "shape": list(volume.shape), "voxels": int(volume.array.size),
                  "peak_mib": round(used / 2**20), "bytes_per_voxel": round(used / volume.array.size, 1),
                  "floor": type(model).PREDICT_BYTES_PER_VOXEL}))
"""


def measure(run: Path, image: Path, zoom: float) -> dict:
    """One case in a child process (its peak is its own)."""
    res = subprocess.run([sys.executable, "-c", _CHILD, str(run), str(image), str(zoom)], capture_output=True,
                         text=True, timeout=1800)  # fmt: skip
    if res.returncode != 0:
        return {"run": str(run), "error": (res.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def default_cases(tmp: Path) -> list[tuple[Path, Path, float]]:
    """The fixture lung detector on lung1 / lung2 x2, and a tiny classifier on two pictures from a lung1 slice."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "bench"))
    from bench_serve import fixture_detector, train_tiny_classifier

    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.io import read, write
    from medanomaly.types import Volume

    lung1, lung2 = (pyradiomics_case(c)[0] for c in ("lung1", "lung2"))
    plane = np.clip((read(lung1).array[24].astype(np.float32) + 1000) / 1400, 0, 1)
    picture = write(Volume((np.kron(plane, np.ones((4, 4))) * 255).astype(np.uint8)[None]), tmp / "slice.png")
    lung, cls = fixture_detector(tmp / "lung"), train_tiny_classifier(tmp / "cls")
    return [(lung, lung1, 1.0), (lung, lung2, 2.0), (cls, picture, 1.0), (cls, picture, 2.0)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", nargs=3, action="append", default=[], metavar=("RUN", "IMAGE", "ZOOM"))
    ap.add_argument("--no-default", action="store_true", help="only the --case cases")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as d:
        cases = [] if args.no_default else default_cases(Path(d))
        cases += [(Path(r), Path(i), float(z)) for r, i, z in args.case]
        for run, image, zoom in cases:
            row = measure(run, image, zoom)
            if "error" in row:
                print(f"{run.name} on {image.name} x{zoom:g}: failed: {row['error']}")
                continue
            print(f"{row['task']:<13} {' x '.join(map(str, row['shape'])):>16} {row['voxels'] / 1e6:6.1f} Mvox  "
                  f"peak {row['peak_mib']:5d} MiB  {row['bytes_per_voxel']:5.1f} B/voxel  floor {row['floor']:4.1f}  "
                  f"measured / floor {row['bytes_per_voxel'] / row['floor']:.2f}")


if __name__ == "__main__":
    main()
