"""Eager torch fp32 vs ONNX Runtime fp32 vs ONNX Runtime int8, from one process, side by side.

(a) a 2D classifier (MONAI ResNet-18 via the registry) at 224 px, batch 16: images/s, and the
    latency of one image (p50/p95 over single requests);
(b) whole-CT detection on pyradiomics lung1 (the lung_nodule.yaml network and grid): seconds per
    CT for the heatmap (torch + MONAI sliding window vs ONNX + NumPy sliding window).

Networks are randomly initialised here: this measures SPEED only. Accuracy changes of int8 are
what the export guard measures on a trained run's validation split (see docs/deploy.md).
int8 is calibrated on random inputs here (speed only; export calibrates on validation data).

Usage: python bench/bench_export.py [--threads 2] [--repeats 5] [--skip-ct]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def _rate(fn, x, repeats: int) -> float:
    fn(x)
    t = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    return repeats * len(x) / (time.perf_counter() - t)


def _latency(fn, x1, n: int) -> tuple[float, float]:
    fn(x1)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn(x1)
        times.append(time.perf_counter() - t)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 95) * 1e3)


def bench_2d(threads: int, repeats: int, tmp: Path) -> None:
    import torch

    from medanomaly.deploy.export import GraphSpec, export_graph
    from medanomaly.deploy.onnx_model import session
    from medanomaly.deploy.quantise import quantise_graph
    from medanomaly.registry import MODELS

    torch.manual_seed(0)
    net = MODELS.create("resnet", in_channels=1, num_classes=2, spatial_dims=2, depth=18).eval()
    x = np.random.default_rng(0).random((16, 1, 224, 224)).astype(np.float32)
    spec = GraphSpec(net, (torch.zeros(1, 1, 224, 224),), ["input"], ["logits"], {"input": {0: "b"}, "logits": {0: "b"}})
    fp32 = export_graph(spec, tmp / "cls.onnx")
    int8 = quantise_graph(fp32, tmp / "cls.int8.onnx", [{"input": x[i : i + 1]} for i in range(8)])
    s32, s8 = session(fp32, threads), session(int8, threads)

    def eager(b):
        with torch.inference_mode():
            return net(torch.from_numpy(b)).numpy()

    runners = {"torch fp32": eager, "onnx fp32": lambda b: s32.run(None, {"input": b})[0],
               "onnx int8": lambda b: s8.run(None, {"input": b})[0]}  # fmt: skip
    print(f"(a) 2D ResNet-18, 224 px, batch 16, {threads} thread(s) [random weights: speed only]")
    base = None
    for name, fn in runners.items():
        rate = _rate(fn, x, repeats)
        p50, p95 = _latency(fn, x[:1], 30)
        base = base or rate
        print(f"    {name:10s} {rate:8.1f} img/s  ({rate / base:4.1f}x)   one image p50 {p50:6.1f} ms  p95 {p95:6.1f} ms")


def bench_ct(threads: int, tmp: Path) -> None:
    import torch

    from medanomaly.config import load_config
    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.deploy.export import GraphSpec, export_graph
    from medanomaly.deploy.onnx_model import OnnxDetector, session
    from medanomaly.deploy.quantise import quantise_graph
    from medanomaly.detect.detector import NoduleDetector, _build
    from medanomaly.detect.grid import lung_region
    from medanomaly.io import read

    cfg = load_config("configs/lung_nodule.yaml")
    det = NoduleDetector.from_config(cfg)
    det.threads = threads
    torch.manual_seed(0)
    det.model_ = _build(det.model_name, det.model_params).eval()
    roi = det.roi_size
    axes = {0: "b", 2: "z", 3: "y", 4: "x"}
    fp32 = export_graph(GraphSpec(det.model_, (torch.zeros(1, 1, *roi),), ["input"], ["logits"],
                                  {"input": axes, "logits": axes}), tmp / "det.onnx")  # fmt: skip
    feeds = [{"input": np.random.default_rng(i).random((1, 1, *roi)).astype(np.float32)} for i in range(4)]
    int8 = quantise_graph(fp32, tmp / "det.int8.onnx", feeds)
    params = det.get_params()
    ct = read(pyradiomics_case("lung1")[0])
    region = det.region(lung_region(ct))
    print(f"(b) whole-CT heatmap, lung1, lung_nodule.yaml network, {threads} thread(s) [random weights: speed only]")
    runners = {"torch fp32": det, "onnx fp32": OnnxDetector(session(fp32, threads), params),
               "onnx int8": OnnxDetector(session(int8, threads), params)}  # fmt: skip
    base = None
    for name, d in runners.items():
        times = []
        for _ in range(3):
            t = time.perf_counter()
            d.heatmap(ct, region)
            times.append(time.perf_counter() - t)
        sec = float(np.median(times))
        base = base or sec
        print(f"    {name:10s} {sec:8.2f} s/CT  ({base / sec:4.1f}x)   p50 {np.percentile(times, 50):.2f} s  "
              f"p95 {np.percentile(times, 95):.2f} s")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-ct", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        bench_2d(args.threads, args.repeats, Path(tmp))
        if not args.skip_ct:
            bench_ct(args.threads, Path(tmp))


if __name__ == "__main__":
    main()
