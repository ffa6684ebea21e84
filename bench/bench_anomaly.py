"""Training and inference time per volume for each anomaly method, and (``--evaluate``) the brain
tumour case study of each (CPU, 2 torch threads).

Usage: ``python bench/bench_anomaly.py [--config configs/anomaly_brain.yaml] [--epochs N]
[--methods normative autoencoder padim draem] [--evaluate] [--seed N] [--threads N] [--out runs/bench_anomaly]``; prints one JSON
line per method (train seconds, inference seconds per volume, and with ``--evaluate`` pixel AUROC,
slice AUROC with its 95 % CI and mean Dice on brain1 + brain2).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _row(name: str, seed: int, threads: int, run: Path, infer_s: float, metrics: dict | None) -> dict:
    train = json.loads((run / "train.json").read_text())
    row = {"method": name, "seed": seed, "train_s": train["seconds"], "inference_s_per_volume": round(infer_s, 2), "threads": threads,
           "sigma": train.get("sigma"), "synthetic_val_pixel_auroc_by_sigma": train.get("synthetic_val_pixel_auroc_by_sigma")}
    if metrics:
        sl = metrics["slice_auroc"]
        row.update({"pixel_auroc": round(metrics["pixel_auroc"], 4),
                    "pixel_auroc_by_case": {c["case"]: round(c["pixel_auroc"], 4) for c in metrics["cases"]},
                    "slice_auroc": round(sl["value"], 4) if sl["value"] is not None else None,
                    "slice_auroc_ci95": [round(v, 3) for v in sl["ci95"]] if sl.get("ci95") else None,
                    "dice_mean": round(metrics["dice_mean"], 4)})  # fmt: skip
    return row


def main() -> None:
    import torch

    from medanomaly.config import load_config
    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.engine import evaluate_run, load_model, train_run
    from medanomaly.io import read

    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "anomaly_brain.yaml"))
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--methods", nargs="+", default=["normative", "autoencoder", "padim", "draem"])
    parser.add_argument("--evaluate", action="store_true")
    parser.add_argument("--seed", type=int, default=None, help="the config's seed (training, augmentation, validation)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (train.threads too)")
    parser.add_argument("--out", default="runs/bench_anomaly")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = load_config(args.config)
    volume = read(pyradiomics_case("brain1")[0]).with_meta(modality="MR")
    for name in args.methods:
        params = dict(base.method.params) if name == base.method.name else {}
        updates = {"method": base.method.model_copy(update={"name": name, "params": params})}
        updates["train"] = base.train.model_copy(update={"threads": args.threads, **({"epochs": args.epochs} if args.epochs else {})})
        if args.seed is not None:
            updates["seed"] = args.seed
        config = base.model_copy(update=updates)
        run = train_run(config, Path(args.out) / name, overwrite=True)
        model = load_model(run)
        start = time.perf_counter()
        model.predict(volume)
        infer_s = time.perf_counter() - start
        metrics = evaluate_run(run) if args.evaluate else None
        print(json.dumps(_row(name, config.seed, args.threads, run, infer_s, metrics)), flush=True)


if __name__ == "__main__":
    main()
