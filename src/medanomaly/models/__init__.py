"""Networks, one per file, each registered by name in :data:`medanomaly.registry.MODELS`.

Importing this package imports every module in :data:`MODEL_MODULES` (add yours there).

Example:
    >>> from medanomaly.registry import MODELS
    >>> "compact_cnn" in MODELS  # doctest: +SKIP
    True
"""

from __future__ import annotations

import importlib

MODEL_MODULES: tuple[str, ...] = (
    "compact_cnn",
    "resnet",
    "densenet",
    "efficientnet",
    "nodule_unet",
    "fusion_early",
    "fusion_feature",
    "fusion_decision",
    "fusion_hybrid",
    "anomaly_autoencoder",
    "anomaly_draem",
)

for _module in MODEL_MODULES:
    importlib.import_module(f"medanomaly.models.{_module}")
