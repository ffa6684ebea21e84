"""Shared test set-up. Real data is found through medanomaly.data.sources.real_data (no skips)."""

from __future__ import annotations

import os

# Two xdist workers on two cores: one BLAS/torch thread each, or they fight over the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_configure(config):  # noqa: D103
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
