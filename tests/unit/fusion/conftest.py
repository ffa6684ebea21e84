"""Shared fixtures for the fusion tests: one tiny simulated set and one trained hybrid network."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def sim_splits():
    """Small simulated T1/PD splits (synthetic), strong contrast so a few epochs learn something."""
    from medanomaly.fusion.simulate import simulate_pairs

    kw = {"size": 32, "strong_contrast": (0.8, 1.2)}
    return {
        "train": simulate_pairs(160, "train", seed=1, **kw),
        "val": simulate_pairs(48, "val", seed=2, **kw),
        "test": simulate_pairs(64, "test", seed=3, **kw),
    }


@pytest.fixture(scope="session")
def trained_hybrid(sim_splits):
    """A hybrid fusion network trained for a few seconds with modality dropout."""
    from medanomaly.fusion.training import FusionTrainSettings, fit_fusion
    from medanomaly.registry import MODELS

    net = MODELS.create("fusion_hybrid", modalities=("T1", "PD"), widths=(8, 16))
    tr, va = sim_splits["train"], sim_splits["val"]
    result = fit_fusion(
        net, (tr.images, tr.labels), (va.images, va.labels), FusionTrainSettings(epochs=8, batch_size=16, lr=3e-3)
    )
    return net, result
