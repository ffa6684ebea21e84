"""Two ``torchrun`` processes on CPU (gloo) train like one process at the same GLOBAL batch size.

The test launches ``python -m torch.distributed.run --standalone --nproc_per_node 2`` on this file
(the ``__main__`` block below is the worker) and trains twice under DDP:

1. **Exact check** - a batch-norm-free MLP classifier through :func:`medanomaly.train.loop.fit`
   (global batch 16: 8 per process). Averaging the two processes' gradients of their 8-sample mean
   losses is mathematically the gradient of the 16-sample mean, so the loss curve must equal the
   single-process one up to float32 summation order. Tolerance: 1e-4 relative on every epoch's
   training and validation loss (measured: about 1e-7; Adam over 16 steps amplifies rounding a
   little, nowhere near 1e-4). Both processes must end with bitwise identical weights.
2. **The task path** - a tiny classification config (``compact_cnn``, batch norm) through
   :func:`medanomaly.classify.engine.fit_members`, the function ``medanomaly train`` runs. On CPU,
   batch norm statistics are per process (PyTorch's SyncBatchNorm is GPU-only; on GPU the loop
   converts to it), so each process normalises over 4 instead of 8 samples and the curve is only
   close: tolerance 0.075 absolute on each epoch's training loss (measured: <= 0.024 on this
   config, 3x margin). Both processes end with one history (validation on rank 0, broadcast).

The single-process references train in the test process while the workers start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ddp

EXACT_RTOL = 1e-4
BN_ATOL = 0.075


def _blobs(n: int, size: int = 8, seed: int = 0):
    """Class 1 = a bright centre square; class 0 = noise (as tests/unit/train/conftest.py)."""
    from medanomaly.data.arrays import LabelledImages

    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.5).astype(int)
    labels[:2] = [0, 1]
    images = rng.normal(0.3, 0.1, (n, 1, size, size)).astype(np.float32)
    c = size // 2
    images[labels == 1, :, c - 2:c + 2, c - 2:c + 2] += 0.3
    return LabelledImages(images, labels, np.arange(n).astype(str), ("normal", "abnormal"))


def _mlp():
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    net.in_channels, net.num_classes = 1, 2
    return net


def train_mlp(run_dir: Path | None):
    """Part 1: the BN-free network, global batch 16, 4 epochs."""
    from medanomaly.train.loop import TrainSettings, fit

    net = _mlp()
    settings = TrainSettings(epochs=4, batch_size=16, lr=0.05, scheduler="cosine", progress=False, device="cpu")
    return net, fit(net, _blobs(64), _blobs(32, seed=1), settings, run_dir=run_dir)


def write_manifest(root: Path) -> Path:
    """12 patients x 2 NRRD images (abnormal = bright centre square)."""
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True, exist_ok=True)
    lines = ["path,label,patient_id"]
    for p in range(12):
        label = ("normal", "abnormal")[p % 2]
        for i in range(2):
            img = rng.normal(100, 10, (16, 16)).astype(np.float32)
            if label == "abnormal":
                img[5:11, 5:11] += 80
            sitk.WriteImage(sitk.GetImageFromArray(img), str(root / f"img/p{p}_{i}.nrrd"))
            lines.append(f"img/p{p}_{i}.nrrd,{label},P{p:02d}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root / "manifest.csv"


def train_config(manifest: Path, run_dir: Path):
    """Part 2: a tiny classification config through the task's training function."""
    from medanomaly.classify.engine import fit_members, load_data
    from medanomaly.config import parse_config

    cfg = parse_config({
        "task": "classification", "name": "ddp", "seed": 0,
        "data": {"dataset": {"name": "manifest", "params": {"csv": str(manifest)}},
                 "class_names": ["normal", "abnormal"], "image_size": [16, 16], "val_fraction": 0.34,
                 "test_fraction": 0.0},
        "model": {"name": "compact_cnn", "params": {"widths": [4, 8], "hidden": 0, "stem_stride": 1}},
        "train": {"epochs": 4, "batch_size": 8, "lr": 0.02, "progress": False, "scheduler": "none", "device": "cpu"},
    })
    _, results, _ = fit_members(cfg, load_data(cfg), run_dir)
    return results[0]


def _digest(net) -> str:
    import hashlib

    return hashlib.sha256(b"".join(v.detach().numpy().tobytes() for v in net.state_dict().values())).hexdigest()


def worker(out: Path, manifest: Path) -> None:
    """Runs in each torchrun process; the per-rank files are the test's, not the library's."""
    import torch

    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    net, mlp = train_mlp(out / "mlp_run")
    cnn = train_config(manifest, out / "cnn_run")
    (out / f"rank{rank}.json").write_text(json.dumps({
        "world": int(os.environ["WORLD_SIZE"]), "mlp": list(mlp.history), "digest": _digest(net),
        "cnn": list(cnn.history)}))


def test_ddp_two_processes_match_one(tmp_path: Path) -> None:
    import torch

    torch.set_num_threads(1)
    manifest = write_manifest(tmp_path / "data")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           __file__, str(tmp_path), str(manifest)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        _, single = train_mlp(None)  # the same trainings in this one process, meanwhile
        cnn_single = train_config(manifest, tmp_path / "cnn_single")
        output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    assert ranks[0]["digest"] == ranks[1]["digest"]  # DDP kept the replicas identical

    ddp = ranks[0]["mlp"]
    assert len(ddp) == len(single.history) == 4
    for a, b in zip(ddp, single.history, strict=True):
        for key in ("train_loss", "val_loss"):
            assert a[key] == pytest.approx(b[key], rel=EXACT_RTOL), (key, a, b)
    assert (tmp_path / "mlp_run" / "model.safetensors").is_file()
    assert (tmp_path / "mlp_run" / "checkpoint" / "state.json").is_file()

    for a, b in zip(ranks[0]["cnn"], cnn_single.history, strict=True):
        assert abs(a["train_loss"] - b["train_loss"]) <= BN_ATOL, (a, b)
    assert ranks[0]["cnn"] == ranks[1]["cnn"]  # validation on rank 0, broadcast: one history
    assert (tmp_path / "cnn_run" / "members" / "0" / "model.safetensors").is_file()


if __name__ == "__main__":  # the torchrun worker
    worker(Path(sys.argv[1]), Path(sys.argv[2]))
