"""Eager torch fp32 (and bf16 where the CPU has it) vs ONNX Runtime fp32 vs ONNX Runtime int8, from one process,
side by side.

(a) 2D classifier: a MONAI ResNet-18 at 224 px trained for ``--epochs`` (default 4: validation AUC 0.70 measured,
    so the int8 AUC change is that of a model that has learned; one epoch left it at chance) on the breast phantom
    (SYNTHETIC mammography, benign vs malignant, 300 patients; a tiny quickly trained model),
    exported with ``export_run(int8=True)`` (int8 calibrated on the validation split, behind the
    guard; kept with ``force`` so that a refusal is printed instead of stopping the bench).
    Printed per path: images/s at batch 16 and the speed-up against eager torch (the paths are
    timed in interleaved rounds; the speed-up is the median of the per-round ratios, so a change of
    machine load hits every path alike), the multiply-accumulate rate reached (GMAC/s, from the
    counted MACs per image: compare with the CPU's peak), macro ROC AUC on the validation split and
    its change from torch, latency of one image (p50/p95 of single requests). ``--stem-stride``
    picks the ResNet-18 stem: 2 (our model registry's default, as torchvision's) and/or 1 (the
    default of MONAI's ``resnet18``: 4x the activations of the first stage, memory-bound in fp32).
(b) whole-CT detection with the committed fixture lung detector (tests/fixtures/lung_detector,
    the lung_nodule.yaml network trained on simulated nodules): seconds per CT on lung1 (lung mask
    given; p50/p95 over ``--ct-repeats``) for the full ``detect`` (heatmap, findings, masks,
    measurements) and for the network heatmap alone (sliding window), the rank of the real lesion of
    lung1 and lung2 and the held-out CPM (simulated nodules in the held-out lung, synthetic;
    ``--heldout-scans`` per source, the run itself uses 3). int8 is calibrated on the same
    validation windows export uses; the full export guard (CPM on validation scans, real lesion
    ranks) is not rerun here: ``medanomaly export RUN --int8`` does that.

Where the CPU computes bfloat16 natively (AVX512-BF16 or AMX: ``train.precision: auto`` picks it there), both parts
also time eager torch under bfloat16 autocast (``torch bf16``, :mod:`medanomaly.train.precision`: the arithmetic a
detector saved with ``precision: bf16`` or ``auto`` runs in ``predict``); the exported package is always fp32.

The machine's load changes absolute numbers; the ratios are what to compare (see docs/deploy.md). The first line
printed names the CPU and the instruction sets the int8 ratio depends on (AVX2, AVX-512, VNNI); the second the
machine's GEMM ceilings (torch fp32, ORT fp32, ORT int8 matrix products) and their int8 / torch quotient, the most
int8 can gain on a network bound by arithmetic. ORT sessions run with idle spinning off
(``MEDANOMALY_ORT_SPINNING=0``), so that one path's idle threads do not take the cores of the next.

``--run RUN`` replaces the tiny ResNet-18 of (a) by a trained 2D classification run (its validation images, its
model; e.g. ``configs/breast_3class.yaml``'s), so the int8 AUC change is measured on a model that has learned.

Usage: python bench/bench_export.py [--threads 1] [--repeats 7] [--epochs 4] [--stem-stride 2 1] [--run RUN] [--skip-2d] [--skip-ct]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "lung_detector"


def _interleaved_rates(runners: dict[str, Callable[[np.ndarray], Any]], x: np.ndarray, rounds: int) -> dict[str, Any]:
    """Images per second of each path on the batch ``x``, timed in interleaved rounds (one warm-up call
    each, then every round times every path once, in turn), so that a change of machine load hits all
    paths alike. Returns per path the median rate and the median over rounds of its speed-up against the
    first path (timed in the same round)."""
    for fn in runners.values():
        fn(x)
    secs: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for name, fn in runners.items():
            t = time.perf_counter()
            fn(x)
            secs[name].append(time.perf_counter() - t)
    first = np.asarray(secs[next(iter(runners))])
    return {k: {"rate": len(x) / float(np.median(v)), "ratio": float(np.median(first / np.asarray(v)))}
            for k, v in secs.items()}  # fmt: skip


def _machine_line() -> str:
    """The CPU, its vector and int8 instruction sets (ONNX Runtime's int8 kernels are ~2x its fp32 ones on AVX2
    alone and several times faster with VNNI: the ratios below depend on them), and the runtime versions."""
    import platform

    import onnxruntime
    import torch

    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags] or ["unknown"]
    return (f"machine: {model}, {os.cpu_count()} CPUs, {' '.join(isa)}; torch {torch.__version__}, "
            f"onnxruntime {onnxruntime.__version__}")


def _gemm_rate(fn: Callable[[], Any], n: int, rounds: int = 5) -> float:
    """Multiply-accumulates per second (GMAC/s) of ``fn``, an n x n x n matrix product (median of ``rounds``)."""
    median_ms, _ = _latency(lambda _: fn(), None, rounds)  # type: ignore[arg-type]
    return n**3 / (median_ms / 1e3) / 1e9


def _gemm_ceilings(threads: int, n: int = 2048) -> str:
    """The machine's own ceilings for the ratio the bench reports: an n^3 matrix product in eager torch fp32,
    ONNX Runtime fp32 (``MatMul``) and ONNX Runtime int8 (``MatMulInteger``, uint8 x int8, the kernels
    ``QLinearConv`` runs on). A convolution network bound by arithmetic cannot gain more from int8 than the
    int8 rate over torch's fp32 rate: that quotient is printed as the ceiling of the int8 speed-up."""
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def ort_matmul(op: str, a: np.ndarray, b: np.ndarray, out_type: int) -> Callable[[], Any]:
        elem = helper.np_dtype_to_tensor_dtype(a.dtype)
        graph = helper.make_graph([helper.make_node(op, ["A", "B"], ["Y"])], "gemm",
                                  [helper.make_tensor_value_info("A", elem, [n, n])],
                                  [helper.make_tensor_value_info("Y", out_type, [n, n])], [numpy_helper.from_array(b, "B")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        onnx.checker.check_model(model)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return lambda: sess.run(None, {"A": a})

    a, b = torch.randn(n, n), torch.randn(n, n)
    rates = {"torch fp32": _gemm_rate(lambda: a @ b, n)}
    f32 = rng.standard_normal((n, n), dtype=np.float32)
    rates["onnx fp32"] = _gemm_rate(ort_matmul("MatMul", f32, f32, TensorProto.FLOAT), n)
    u8, s8 = rng.integers(0, 255, (n, n), dtype=np.uint8), rng.integers(-64, 64, (n, n), dtype=np.int8)
    rates["onnx int8"] = _gemm_rate(ort_matmul("MatMulInteger", u8, s8, TensorProto.INT32), n)
    ceiling = rates["onnx int8"] / rates["torch fp32"]
    return (f"GEMM ceilings ({n}^3, {threads} thread(s)): " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items())
            + f" GMAC/s; int8 / torch fp32 = {ceiling:.1f}x: the most int8 can gain on a network bound by arithmetic")


def _latency(fn: Callable[[np.ndarray], Any], x1: np.ndarray, n: int) -> tuple[float, float]:
    """p50 and p95 (ms) of ``n`` single requests."""
    fn(x1)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn(x1)
        times.append(time.perf_counter() - t)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 95) * 1e3)


def _classifier_config(tmp: Path, epochs: int, stem_stride: int) -> Path:
    """A tiny ResNet-18 run config at 224 px: breast phantom benign vs malignant (rendered at 128 px);
    ``stem_stride`` 2 is our registry's default stem (torchvision's), 1 is MONAI ``resnet18``'s default."""
    import yaml

    cfg = {
        "task": "classification", "name": "bench_export_resnet18", "seed": 0,
        "data": {"dataset": {"name": "mammo_phantom", "params": {"n_patients": 300, "size": 128, "seed": 0,
                                                                 "labels": ["benign", "malignant"],
                                                                 "split_fractions": [0.6, 0.2, 0.2]}},
                 "class_names": ["benign", "malignant"], "image_size": [224, 224], "channels": 1},
        "model": {"name": "resnet", "params": {"depth": 18, "conv1_stride": stem_stride}},
        "train": {"epochs": epochs, "batch_size": 16, "lr": 0.003, "optimizer": "adamw", "progress": False},
        "evaluate": {"n_bootstrap": 10},
    }  # fmt: skip
    path = tmp / f"cls_stem{stem_stride}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _gmacs(module: Any, x1: np.ndarray) -> float:
    """Multiply-accumulates of one forward pass of ``module`` on one image (convolutions and linear
    layers; GMAC), counted with forward hooks."""
    import torch

    total = [0]

    def hook(m: Any, _inp: Any, out: torch.Tensor) -> None:
        if isinstance(m, torch.nn.Conv2d):
            total[0] += out.numel() * m.in_channels // m.groups * int(np.prod(m.kernel_size))
        elif isinstance(m, torch.nn.Linear):
            total[0] += out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    with torch.inference_mode():
        module(torch.from_numpy(x1))
    for h in handles:
        h.remove()
    return total[0] / 1e9


def _eager(module: Any, inputs: np.ndarray, batch: int = 16) -> np.ndarray:
    """``module``'s float32 outputs (logits) for ``inputs``, in batches, under inference mode."""
    import torch

    with torch.inference_mode():
        return np.concatenate([module(torch.from_numpy(np.ascontiguousarray(inputs[i : i + batch], np.float32)))
                               .float().numpy() for i in range(0, len(inputs), batch)])  # fmt: skip


def _paths_2d(run: Path, pkg: Path, threads: int) -> tuple[dict[str, Any], dict[str, float], Any, Any]:
    """The runnable paths of the exported classifier (torch fp32, torch bf16 where the CPU has it, ONNX fp32 and
    int8), their validation AUC, the validation data and the torch module."""
    from medanomaly.deploy.export import graph_spec, onnx_outputs, torch_outputs
    from medanomaly.deploy.onnx_model import session, softmax
    from medanomaly.deploy.quantise import class_metrics
    from medanomaly.deploy.validation import validation_data
    from medanomaly.engine import load_model
    from medanomaly.train.precision import in_precision, native_bf16

    model = load_model(run)
    val = validation_data(run, "classification")
    module = graph_spec(model).module
    sessions = {name: session(pkg / graph, threads) for name, graph in (("onnx fp32", "model.onnx"),
                                                                        ("onnx int8", "model.int8.onnx"))}
    aucs = {"torch fp32": class_metrics(val.labels, torch_outputs(model, val.inputs))["auc"]}
    bf16 = in_precision(module, "bf16") if native_bf16("cpu") else None
    if bf16 is not None:
        aucs["torch bf16"] = class_metrics(val.labels, softmax(_eager(bf16, val.inputs)))["auc"]
    aucs.update({k: class_metrics(val.labels, onnx_outputs(s, "classification", val.inputs))["auc"]
                 for k, s in sessions.items()})  # fmt: skip

    runners: dict[str, Any] = {"torch fp32": lambda b: _eager(module, b)}
    if bf16 is not None:
        runners["torch bf16"] = lambda b: _eager(bf16, b)
    runners.update({k: (lambda b, s=s: s.run(None, {"input": b})[0]) for k, s in sessions.items()})
    return runners, aucs, val, module


def bench_2d(threads: int, repeats: int, epochs: int, tmp: Path, stem_stride: int = 2) -> None:
    """Part (a): see the module docstring."""
    from medanomaly.engine import train_run

    t = time.perf_counter()
    run = train_run(_classifier_config(tmp, epochs, stem_stride), tmp / f"cls_run{stem_stride}")
    trained = time.perf_counter() - t
    title = (f"2D ResNet-18 (stem stride {stem_stride}), 224 px; breast phantom (SYNTHETIC), tiny model trained "
             f"{epochs} epoch(s) in {trained:.0f} s")  # fmt: skip
    _bench_2d_paths(run, tmp / f"cls_pkg{stem_stride}", title, threads, repeats)


def bench_2d_run(run: Path, threads: int, repeats: int, tmp: Path) -> None:
    """Part (a) on a trained 2D classification run of the user's (``--run``): its own images and model."""
    _bench_2d_paths(run, tmp / "run_pkg", f"{run.name} (a trained run)", threads, repeats)


def _bench_2d_paths(run: Path, pkg_dir: Path, title: str, threads: int, repeats: int) -> None:
    """Export ``run`` with int8 (kept with ``force``), then time and score the paths at batch 16."""
    from medanomaly.deploy.export import export_run

    t = time.perf_counter()
    pkg = export_run(run, pkg_dir, int8=True, calibration=10_000, force=True)
    exported = time.perf_counter() - t
    guard = json.loads((pkg / "manifest.json").read_text())["int8"]
    runners, aucs, val, module = _paths_2d(run, pkg, threads)
    x = np.ascontiguousarray(val.inputs[:16], np.float32)
    gmac = _gmacs(module, x[:1])
    print(f"(a) {title}; {gmac:.3f} GMAC per image, input {tuple(x.shape[1:])}, batch {len(x)}, {threads} thread(s); "
          f"export + int8 guard {exported:.0f} s; AUC = ROC AUC (binary: class 1; else macro) on the "
          f"{len(val.labels)} validation images; speed-up = median over {repeats} interleaved rounds")  # fmt: skip
    rates = _interleaved_rates(runners, x, repeats)
    for name, fn in runners.items():
        p50, p95 = _latency(fn, x[:1], 30)
        r = rates[name]
        print(f"    {name:10s} {r['rate']:7.1f} img/s ({r['ratio']:4.1f}x; {r['rate'] * gmac:5.1f} GMAC/s)  "
              f"AUC {aucs[name]:.4f} ({aucs[name] - aucs['torch fp32']:+.4f})  one image p50 {p50:6.1f} ms  "
              f"p95 {p95:6.1f} ms")  # fmt: skip
    print(f"    int8 guard (export, validation): passed={guard['passed']} auc_drop={guard['auc_drop']} "
          f"accuracy_drop={guard['accuracy_drop']}")  # fmt: skip


def _fixture_run(dest: Path) -> Path:
    """The committed fixture lung detector (a finished run folder) copied to ``dest``."""
    return Path(shutil.copytree(FIXTURE, dest))


def _ct_scores(detector: Any, sources: list[Any], cfg: Any, heldout_scans: int, ct_repeats: int) -> dict[str, Any]:
    """One detector: seconds of the lung1 heatmap and of the full lung1 detection (``ct_repeats``
    each), the real lesion ranks and the held-out CPM."""
    from medanomaly.detect.evaluation import evaluate_heldout, evaluate_real

    first = sources[0]
    region = detector.region(first.lung)
    heat, times, ranks = [], [], {}
    for _ in range(ct_repeats):
        t = time.perf_counter()
        detector.heatmap(first.ct, region)
        heat.append(time.perf_counter() - t)
        t = time.perf_counter()
        ranks[first.name] = evaluate_real(detector, first).rank
        times.append(time.perf_counter() - t)
    ranks.update({src.name: evaluate_real(detector, src).rank for src in sources[1:]})
    sim = cfg.simulation
    held = evaluate_heldout(detector, sources, 3 - sim.train_side, heldout_scans, sim.nodules_per_test_scan,
                            sim.diameter_range_mm, cfg.seed, cfg.infer.hit_min_radius_mm, progress=False)  # fmt: skip
    return {"heatmap": heat, "times": times, "ranks": ranks, "cpm": float(held["froc"].cpm)}


def bench_ct(threads: int, heldout_scans: int, ct_repeats: int, tmp: Path) -> None:
    """Part (b): see the module docstring."""
    from medanomaly.config import load_config
    from medanomaly.deploy.export import export_run
    from medanomaly.deploy.onnx_model import onnx_model
    from medanomaly.deploy.quantise import quantise_graph
    from medanomaly.deploy.validation import validation_data
    from medanomaly.engine import load_model
    from medanomaly.train.precision import native_bf16

    if not (FIXTURE / "model.safetensors").is_file():
        print(f"(b) skipped: the fixture detector {FIXTURE} is missing")
        return
    run = _fixture_run(tmp / "lung_run")
    cfg = load_config(run / "config.yaml")
    pkg = export_run(run, tmp / "lung_pkg")  # fp32 graph, checked against torch on validation windows
    val = validation_data(run, "lung_nodule", 64)
    int8 = quantise_graph(pkg / "model.onnx", tmp / "lung.int8.onnx", [{"input": w[None]} for w in val.inputs])
    torch_model = load_model(run)
    torch_model.detector.threads = threads
    detectors = {"torch fp32": torch_model.detector}
    if native_bf16("cpu"):  # the same weights, the network under bfloat16 autocast
        bf16 = load_model(run).detector
        bf16.threads, bf16.precision = threads, "bf16"
        detectors["torch bf16"] = bf16
    for name, path in (("onnx fp32", pkg / "model.onnx"), ("onnx int8", int8)):
        detectors[name] = onnx_model(path, torch_model.info, pkg, threads).detector
    print(f"(b) whole-CT detection, fixture lung detector (lung_nodule.yaml network), {threads} thread(s); "
          f"seconds per CT on lung1 (lung mask given; {ct_repeats} run(s)): full detect and its network heatmap; "
          f"held-out CPM on {heldout_scans} simulated scan(s) per source (SYNTHETIC nodules)")  # fmt: skip
    base, hbase = None, None
    for name, det in detectors.items():
        s = _ct_scores(det, val.sources, cfg, heldout_scans, ct_repeats)
        sec, heat = float(np.median(s["times"])), float(np.median(s["heatmap"]))
        base, hbase = base or sec, hbase or heat
        ranks = ", ".join(f"{k} {v}" for k, v in s["ranks"].items())
        print(f"    {name:10s} detect {sec:6.2f} s/CT ({base / sec:4.1f}x; p50 {np.percentile(s['times'], 50):.2f} "
              f"p95 {np.percentile(s['times'], 95):.2f})  heatmap {heat:6.2f} s ({hbase / heat:4.1f}x)  "
              f"lesion rank {ranks}  held-out CPM {s['cpm']:.3f}", flush=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved timing rounds (one batch per path each)")
    ap.add_argument("--epochs", type=int, default=4,
                    help="training epochs of the 2D classifier (4: it has learned, validation AUC ~0.70; 1 leaves it at chance)")
    ap.add_argument("--heldout-scans", type=int, default=1, help="held-out simulated scans per source CT")
    ap.add_argument("--ct-repeats", type=int, default=1, help="timed detections of lung1 per path")
    ap.add_argument("--stem-stride", type=int, nargs="+", default=[2], choices=[1, 2],
                    help="ResNet-18 stem stride(s) for (a): 2 = our registry default, 1 = MONAI resnet18's default")
    ap.add_argument("--run", type=Path, default=None,
                    help="(a) on this trained 2D classification run instead of the tiny ResNet-18 (e.g. breast_3class)")
    ap.add_argument("--skip-2d", action="store_true")
    ap.add_argument("--skip-ct", action="store_true")
    args = ap.parse_args()
    # The paths run back to back: ORT's idle workers would spin on the cores the next path needs (with 2 threads
    # the int8 graph ran at 155 img/s after the fp32 session's run and 219 img/s with spinning off; torch 40 vs 44).
    os.environ.setdefault("MEDANOMALY_ORT_SPINNING", "0")
    import torch

    torch.set_num_threads(args.threads)
    print(_machine_line(), flush=True)
    print(_gemm_ceilings(args.threads), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        if args.run is not None and not args.skip_2d:
            bench_2d_run(args.run, args.threads, args.repeats, Path(tmp))
        elif not args.skip_2d:
            for stride in args.stem_stride:
                bench_2d(args.threads, args.repeats, args.epochs, Path(tmp), stride)
        if not args.skip_ct:
            bench_ct(args.threads, args.heldout_scans, args.ct_repeats, Path(tmp))


if __name__ == "__main__":
    main()
