"""One 3D image on the CPU: PyTorch's own kernel choice (native ``slow_conv3d`` at batch size 1) vs oneDNN
(:mod:`medanomaly.models.conv3d_cpu`), in the same process on the same weights.

1. One forward pass at batch size 1 of three of our 3D networks, each at the size it runs at: the lung
   detector's sliding window (``nodule_unet``, 16 x 128 x 128), the LIDC malignancy classifier (MONAI ResNet-10,
   32^3) and the 3D anomaly autoencoder (64^3); and the lung detector's Grad-CAM pass (forward and backward).
2. Whole-CT nodule detection (``NoduleDetector.detect``: lung mask, resampling, the lung-restricted sliding
   window with the config's test-time mirroring and image pyramid, findings, region growing, measurements) on
   the real lung1 and lung2, with the demo's trained detector (``runs/demo/lung_model``, else the committed
   fixture ``tests/fixtures/lung_detector``).

"native" is each network with its convolutions put back to ``torch.nn.Conv3d.forward``. Prints medians of
``REPEATS`` runs and the ratio native / oneDNN; torch threads 2. Run: ``.venv/bin/python bench/bench_conv3d_cpu.py``.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from medanomaly.registry import MODELS

REPEATS = 3
RUNS = (Path("runs/demo/lung_model"), Path("tests/fixtures/lung_detector"))


def native(net: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``net`` whose 3D convolutions run PyTorch's own kernel choice."""
    plain = copy.deepcopy(net)
    for m in plain.modules():
        m.__dict__.pop("forward", None)
    return plain


def median_seconds(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    fn()  # warm-up: oneDNN builds its kernels on the first call
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare(what: str, ours: Callable[[], object], theirs: Callable[[], object], repeats: int = REPEATS) -> None:
    t_native, t_ours = median_seconds(theirs, repeats), median_seconds(ours, repeats)
    print(f"{what}: native {t_native:.3f} s, oneDNN {t_ours:.3f} s, ratio native / oneDNN {t_native / t_ours:.2f}x")


def networks() -> None:
    cases = (
        ("lung detector window, nodule_unet (8, 16, 32), 1 x 1 x 16 x 128 x 128",
         MODELS.create("nodule_unet", filters=(8, 16, 32)), (1, 1, 16, 128, 128)),
        ("LIDC malignancy classifier, MONAI ResNet-10 x 0.25, 1 x 1 x 32^3",
         MODELS.create("resnet", in_channels=1, num_classes=3, spatial_dims=3, depth=10, widen_factor=0.25,
                       conv1_stride=2), (1, 1, 32, 32, 32)),
        ("3D anomaly autoencoder, 1 x 1 x 64^3",
         MODELS.create("anomaly_autoencoder", spatial_dims=3), (1, 1, 64, 64, 64)),
    )  # fmt: skip
    for what, net, shape in cases:
        net.eval()
        plain, x = native(net), torch.randn(*shape)
        with torch.no_grad():
            compare(what, lambda n=net, x=x: n(x), lambda p=plain, x=x: p(x))
    net = MODELS.create("nodule_unet", filters=(8, 16, 32)).eval()
    plain, x = native(net), torch.randn(1, 1, 16, 128, 128, requires_grad=True)
    compare("lung detector window, forward + backward (Grad-CAM's pass)",
            lambda: net(x).sum().backward(), lambda: plain(x).sum().backward())  # fmt: skip


def whole_ct() -> None:
    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.detect.detector import NoduleDetector
    from medanomaly.io import read

    run = next((r for r in RUNS if (r / "model.safetensors").is_file()), None)
    if run is None:
        print("whole-CT detection: no trained detector (runs/demo/lung_model or tests/fixtures/lung_detector)")
        return
    det = NoduleDetector.load(run)
    det.threads = 2
    ours = det.model_
    for case in ("lung1", "lung2"):
        ct = read(pyradiomics_case(case)[0])

        def detect(model: torch.nn.Module, ct=ct) -> object:
            det.model_ = model
            return det.detect(ct)

        compare(f"whole-CT detection on {case} {ct.shape} ({run})", lambda: detect(ours),
                lambda: detect(native(ours)), repeats=1)  # fmt: skip
    det.model_ = ours


def main() -> None:
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, oneDNN {torch.backends.mkldnn.is_available()}")
    networks()
    whole_ct()


if __name__ == "__main__":
    main()
