"""Training and inference time per volume for each anomaly method (CPU, torch threads from the config).

Usage: ``python bench/bench_anomaly.py [--epochs N]``; prints one JSON line per method.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    import torch

    from medanomaly.anomaly.config import AnomalyConfig
    from medanomaly.anomaly.pipeline import fit, predict_volume
    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.io import read

    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(2)
    volume = read(pyradiomics_case("brain1")[0]).with_meta(modality="MR")
    for name in ("normative", "autoencoder", "padim"):
        config = AnomalyConfig(method={"name": name, "params": {}}, train={"epochs": args.epochs})
        start = time.perf_counter()
        fitted = fit(config)
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        predict_volume(fitted.method, volume, config.data.size, fitted.sigma)
        infer_s = time.perf_counter() - start
        print(json.dumps({"method": name, "train_s": round(train_s, 1), "inference_s_per_volume": round(infer_s, 2),
                          "threads": 2}))  # fmt: skip


if __name__ == "__main__":
    main()
