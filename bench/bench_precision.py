"""What bfloat16 autocast buys (``train.precision``): the lung detector's network, a training step and a sliding window
of inference in float32 and in bfloat16, run here in one process on the same inputs, and how far the probabilities
of the two differ.

Networks: the demo's (``nodule_unet``, filters 8-16-32) and the full config's (16-32-64); a training step is a batch
of 8 patches of 8 x 48 x 48 voxels (forward, Dice + BCE loss, backward, AdamW), inference one 16 x 128 x 128 window
(the configs' ``roi_size``). Printed per network: milliseconds per step and per window (median of ``--repeats``
after warm-up) each way, the ratio bf16 / fp32, and the largest difference of the window's sigmoid probabilities
(both ways on the same, freshly initialised weights, before any training step).
Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX) is printed first: without it bfloat16 is emulated
and ``precision: auto`` keeps float32. The machine's load changes the milliseconds; the ratio is what to compare.

Usage: python bench/bench_precision.py [--repeats 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

FILTERS = {"demo": (8, 16, 32), "full": (16, 32, 64)}


def _median_ms(run, repeats: int) -> float:
    for _ in range(2):  # warm-up: oneDNN picks its kernels on the first calls
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def _one_network(filters: tuple[int, ...], repeats: int) -> dict[str, float]:
    import torch

    import medanomaly.models  # noqa: F401 - registers the networks
    from medanomaly.detect.generic import heatmap_loss
    from medanomaly.registry import MODELS
    from medanomaly.train.precision import in_precision

    torch.manual_seed(0)
    net = MODELS.create("nodule_unet", filters=filters)
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3)
    criterion = heatmap_loss("dice_ce_patch")
    x, y = torch.randn(8, 1, 8, 48, 48), (torch.rand(8, 1, 8, 48, 48) > 0.97).float()
    window = torch.randn(1, 1, 16, 128, 128)
    out: dict[str, float] = {}
    probabilities = {}
    net.eval()  # inference first, both ways on the same (initial) weights
    for precision in ("fp32", "bf16"):
        forward = in_precision(net, precision)
        with torch.no_grad():
            out[f"{precision}_window_ms"] = _median_ms(lambda: forward(window), repeats)
            probabilities[precision] = torch.sigmoid(forward(window))
    out["max_probability_difference"] = float((probabilities["fp32"] - probabilities["bf16"]).abs().max())
    net.train()
    for precision in ("fp32", "bf16"):
        forward = in_precision(net, precision)

        def step() -> None:
            optimiser.zero_grad(set_to_none=True)
            criterion(forward(x), y).backward()
            optimiser.step()

        out[f"{precision}_step_ms"] = _median_ms(step, repeats)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from medanomaly.train.precision import native_bf16

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, native bfloat16 on this CPU: {native_bf16('cpu')}")
    for name, filters in FILTERS.items():
        r = _one_network(filters, args.repeats)
        print(f"{name} network {'-'.join(map(str, filters))}: training step fp32 {r['fp32_step_ms']:.0f} ms, bf16 "
              f"{r['bf16_step_ms']:.0f} ms (x{r['bf16_step_ms'] / r['fp32_step_ms']:.2f}); inference window fp32 "
              f"{r['fp32_window_ms']:.0f} ms, bf16 {r['bf16_window_ms']:.0f} ms "
              f"(x{r['bf16_window_ms'] / r['fp32_window_ms']:.2f}); largest probability difference "
              f"{r['max_probability_difference']:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
