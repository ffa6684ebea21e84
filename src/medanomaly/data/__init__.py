"""Datasets (registered by name in :data:`medanomaly.registry.DATASETS`), real-data sources,
patient-level splits and sampling. Importing this package registers every dataset module in
:data:`DATASET_MODULES` (add yours there); ``sources`` has no heavy imports.
"""

from __future__ import annotations

import importlib

DATASET_MODULES: tuple[str, ...] = (
    "manifest",
    "medmnist",
    "phantom",
    "inbreast",
    "lidc",
    "nodule_patches",
    "lidc_malignancy",
    "busi",
    "cbis_ddsm",
)

for _module in DATASET_MODULES:
    importlib.import_module(f"medanomaly.data.{_module}")
