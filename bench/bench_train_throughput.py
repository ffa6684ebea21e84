"""Training throughput: medanomaly's loop (``medanomaly.train.loop.fit``) against a plain PyTorch
loop over the same model, data, batch size and optimiser, in the same process.

Our loop adds: seeded batch sampler, LR schedule, loss accumulation, progress bar, per-epoch
checkpoint (safetensors + resumable state) and history. Validation is work the plain loop does
not do, so it is measured separately (``--with-val``). Runs alternate (plain, ours, plain, ...)
and the median of the paired ratios over ``--repeats`` is reported, so load from other processes
hits both alike.

Usage:
    python bench/bench_train_throughput.py [--images 512] [--size 64] [--epochs 2] [--repeats 3]

Prints images/s of both and the ratio ours / plain (target >= 0.9).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch


def make_data(n: int, size: int, seed: int = 0):
    from medanomaly.data.arrays import LabelledImages

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    images = rng.random((n, 1, size, size), dtype=np.float32)
    return LabelledImages(images, labels, np.arange(n).astype(str), ("a", "b", "c"))


def make_model(seed: int = 0):
    from medanomaly.registry import MODELS

    torch.manual_seed(seed)
    return MODELS.create("compact_cnn", in_channels=1, num_classes=3, widths=(16, 32, 64), hidden=32)


def plain_loop(data, epochs: int, batch_size: int, lr: float) -> float:
    """The baseline: shuffle, slice, forward, loss, backward, step. Returns images/s."""
    model = make_model()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    x_all, y_all = torch.from_numpy(data.images), torch.from_numpy(data.labels)
    gen = torch.Generator().manual_seed(0)
    n = 0
    t0 = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(len(x_all), generator=gen).split(batch_size):
            loss = torch.nn.functional.cross_entropy(model(x_all[idx]), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += len(idx)
    return n / (time.perf_counter() - t0)


def our_loop(data, val, epochs: int, batch_size: int, lr: float) -> float:
    from medanomaly.train.loop import TrainSettings, fit

    settings = TrainSettings(epochs=epochs, batch_size=batch_size, lr=lr, optimizer="adamw", weight_decay=1e-4,
                             scheduler="cosine", progress=True, patience=10**6)
    with tempfile.TemporaryDirectory() as run_dir:
        t0 = time.perf_counter()
        result = fit(make_model(), data, val, settings, run_dir=run_dir)
        seconds = time.perf_counter() - t0
    return len(data) * result.epochs_run / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--with-val", action="store_true", help="also time our loop with per-epoch validation")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = make_data(args.images, args.size)
    val = make_data(args.images // 4, args.size, seed=1)
    plain_loop(data, 1, args.batch_size, 1e-3)  # warm-up (allocator, kernels)
    plain, ours, ours_val = [], [], []
    for _ in range(args.repeats):
        plain.append(plain_loop(data, args.epochs, args.batch_size, 1e-3))
        ours.append(our_loop(data, None, args.epochs, args.batch_size, 1e-3))
        if args.with_val:
            ours_val.append(our_loop(data, val, args.epochs, args.batch_size, 1e-3))
    p, o = statistics.median(plain), statistics.median(ours)
    print(f"setup: compact_cnn, {args.images} images {args.size}x{args.size}, batch {args.batch_size}, "
          f"{args.epochs} epochs, {args.threads} thread(s), median of {args.repeats}")
    print(f"plain PyTorch loop : {p:8.1f} images/s   (runs: {', '.join(f'{v:.1f}' for v in plain)})")
    print(f"medanomaly fit     : {o:8.1f} images/s   (runs: {', '.join(f'{v:.1f}' for v in ours)})")
    pairs = [b / a for a, b in zip(plain, ours, strict=True)]
    print(f"ratio ours / plain : {statistics.median(pairs):.3f}   (median of paired runs "
          f"{', '.join(f'{r:.2f}' for r in pairs)}; ratio of medians {o / p:.3f}; target >= 0.9)")
    if ours_val:
        ov = statistics.median(ours_val)
        print(f"medanomaly fit + validation every epoch ({len(val)} images): {ov:.1f} training images/s, "
              f"ratio {ov / p:.3f}")


if __name__ == "__main__":
    main()
