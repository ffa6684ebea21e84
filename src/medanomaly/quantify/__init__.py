"""Lesion measurements in physical units (mL, mm, HU) and IBSI / pyradiomics shape features.

Example:
    >>> from medanomaly.quantify import measure, measure_labels, shape_features  # doctest: +SKIP
"""

from medanomaly.quantify.labels import LabelledLesion, measure_labels
from medanomaly.quantify.measure import SOLID_THRESHOLD_HU, max_diameter_mm, measure, measure_lesions
from medanomaly.quantify.shape import ShapeFeatures, shape_features

__all__ = [
    "SOLID_THRESHOLD_HU",
    "LabelledLesion",
    "ShapeFeatures",
    "max_diameter_mm",
    "measure",
    "measure_labels",
    "measure_lesions",
    "shape_features",
]
