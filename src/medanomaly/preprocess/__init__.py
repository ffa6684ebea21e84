"""Preprocessing: denoise, enhance (windows, CLAHE), ROI masks, normalise, resample, pipeline.

Every function takes and returns :class:`~medanomaly.types.Volume`. Importing this package
registers the pipeline steps in :data:`medanomaly.registry.TRANSFORMS` (the registry imports
it lazily). The lung mask is the stable entry point the lung-nodule task uses:

    >>> from medanomaly.preprocess import lung_mask, body_mask  # doctest: +SKIP
"""

from __future__ import annotations

from medanomaly.preprocess import recipes as recipes  # registers the model-input steps
from medanomaly.preprocess import steps as steps  # registers the TRANSFORMS entries
from medanomaly.preprocess.pipeline import Pipeline, PipelineResult, StepRecord
from medanomaly.preprocess.segment import (
    LEFT_LUNG,
    RIGHT_LUNG,
    airway_mask,
    body_mask,
    lung_mask,
    lung_stats,
)
from medanomaly.preprocess.tissue_masks import brain_mask, breast_mask

__all__ = [
    "Pipeline",
    "PipelineResult",
    "StepRecord",
    "LEFT_LUNG",
    "RIGHT_LUNG",
    "airway_mask",
    "body_mask",
    "brain_mask",
    "breast_mask",
    "lung_mask",
    "lung_stats",
]
