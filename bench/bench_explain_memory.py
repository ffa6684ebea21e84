"""Benchmark: peak memory of explaining a 512 x 512 x 60 CT-sized volume, chunked vs whole.

A small fully convolutional 3D network (a detector-like model whose score is the maximum of its
output map) is explained with Grad-CAM and integrated gradients on a 60 x 512 x 512 float32
volume:

* baseline: the whole volume in one pass (``medanomaly.explain.methods.attribute``);
* ours: :func:`medanomaly.explain.maps.chunked_attribute` with 60 x 128 x 128 windows.

Each variant runs in a fresh child process (peak RSS cannot be reset inside one process); the
script prints each peak in GB and the ratio whole/chunked. Usage::

    .venv/bin/python bench/bench_explain_memory.py [--method gradcam] [--size 512]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def child(method: str, size: int, chunked: bool) -> None:
    import numpy as np
    import torch
    from torch import nn

    from medanomaly.explain.maps import chunked_attribute
    from medanomaly.explain.methods import attribute

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 4, 3, padding=1), nn.ReLU(),
                        nn.Conv3d(4, 1, 1)).eval()  # fmt: skip
    x = torch.from_numpy(np.random.default_rng(0).random((1, 1, 60, size, size), dtype=np.float32))
    t0 = time.perf_counter()
    options = {"n_steps": 8, "internal_batch_size": 1} if method == "integrated_gradients" else {}
    if chunked:
        amap = chunked_attribute(net, x, method, (60, 128, 128), overlap=0.25, **options)
    else:
        amap = attribute(net, x, method, **options)
    seconds = time.perf_counter() - t0
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(json.dumps({"peak_gb": peak_gb, "seconds": seconds, "shape": list(amap.shape)}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--method", default="gradcam")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--child", choices=["whole", "chunked"])
    args = parser.parse_args()
    if args.child:
        child(args.method, args.size, args.child == "chunked")
        return
    results = {}
    for variant in ("whole", "chunked"):
        cmd = [sys.executable, __file__, "--method", args.method, "--size", str(args.size), "--child", variant]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        results[variant] = json.loads(out)
        r = results[variant]
        print(f"{variant:8s} {args.method}: peak {r['peak_gb']:.2f} GB, {r['seconds']:.1f} s, map {r['shape']}")
    ratio = results["whole"]["peak_gb"] / results["chunked"]["peak_gb"]
    print(f"peak memory ratio whole/chunked: {ratio:.2f}x (60 x {args.size} x {args.size} volume)")


if __name__ == "__main__":
    main()
