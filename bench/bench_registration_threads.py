"""What a reproducible registration costs: ``register`` on one ITK thread (the default since the forty-seventh pass,
``preprocess.registration.REGISTRATION_THREADS``) against the same registration on ``--threads`` threads (ITK's
default is every core), both run here in one process on the same images, and whether repeats agree.

Images (real, not ours): pyradiomics' brain2 T1 registered onto brain1 (``--stages``, default rigid + affine, as the
registered atlas registers a normal brain to a test scan; the Mattes metric, 25 % sampling). Printed per thread count:
seconds per registration (median of ``--repeats``), the ratio to one thread, and how many distinct results the repeats
gave (the final mutual information and the transform's parameters, compared exactly). On several threads ITK's Mattes
metric sums its histogram in the order the threads finish, so the repeats may differ; on one they do not. The
machine's load changes the seconds; the ratio is what to compare.

Then the way back to the cores that stays reproducible (the registered atlas's since the forty-eighth pass):
``--threads`` registrations (seeds 0, 1, ...) one after the other and side by side in threads of this process, each on
one ITK thread; printed: wall seconds per registration each way, the ratio, and whether both gave the same results.

Usage: python bench/bench_registration_threads.py [--repeats 3] [--threads N] [--stages rigid,affine]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def _run(fixed, moving, stages: tuple[str, ...], threads: int, repeats: int) -> tuple[float, int]:
    """(median seconds, number of distinct results) of ``repeats`` registrations on ``threads`` ITK threads."""
    from medanomaly.preprocess.registration import register

    times, results = [], set()
    for _ in range(repeats):
        start = time.perf_counter()
        out = register(fixed, moving, stages=stages, sampling=0.25, iterations=100, init="moments", threads=threads)
        times.append(time.perf_counter() - start)
        results.add((out.mutual_information, tuple(out.transform.GetParameters())))
    return statistics.median(times), len(results)


def _side_by_side(fixed, moving, stages: tuple[str, ...], workers: int) -> tuple[float, float, bool]:
    """(wall seconds per registration one after the other, side by side, same results) of ``workers`` registrations
    on one ITK thread each, seeds 0 .. workers - 1."""
    from concurrent.futures import ThreadPoolExecutor

    from medanomaly.preprocess.registration import register

    def one(seed: int) -> tuple:
        out = register(fixed, moving, stages=stages, sampling=0.25, iterations=100, init="moments", seed=seed)
        return out.mutual_information, tuple(out.transform.GetParameters())

    start = time.perf_counter()
    alone = [one(seed) for seed in range(workers)]
    alone_s = (time.perf_counter() - start) / workers
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        side = list(pool.map(one, range(workers)))
    return alone_s, (time.perf_counter() - start) / workers, side == alone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="the multi-threaded run's threads")
    parser.add_argument("--stages", default="rigid,affine")
    args = parser.parse_args()

    from medanomaly.data.sources import real_data
    from medanomaly.io import read

    fixed, moving = (read(real_data(f"pyradiomics/brain{i}_image.nrrd")) for i in (1, 2))
    stages = tuple(args.stages.split(","))
    print(f"brain2 onto brain1, stages {', '.join(stages)}, {args.repeats} repeats, {os.cpu_count()} cores")
    one_s, one_n = _run(fixed, moving, stages, 1, args.repeats)
    print(f"1 thread: {one_s:.2f} s per registration, {one_n} distinct result(s)")
    many_s, many_n = _run(fixed, moving, stages, args.threads, args.repeats)
    print(f"{args.threads} threads: {many_s:.2f} s per registration (x{many_s / max(one_s, 1e-9):.2f} of one thread), "
          f"{many_n} distinct result(s)")  # fmt: skip
    if args.threads > 1:
        alone_s, side_s, same = _side_by_side(fixed, moving, stages, args.threads)
        print(f"{args.threads} registrations on 1 thread each: one after the other {alone_s:.2f} s per registration, "
              f"side by side {side_s:.2f} s (x{side_s / max(alone_s, 1e-9):.2f}), "
              f"{'the same' if same else 'DIFFERENT'} results")  # fmt: skip


if __name__ == "__main__":
    main()
