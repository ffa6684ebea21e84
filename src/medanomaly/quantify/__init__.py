"""Lesion measurements in physical units (mL, mm, HU) from a mask and its spacing.

Example:
    >>> from medanomaly.quantify import measure, measure_lesions  # doctest: +SKIP
"""

from medanomaly.quantify.measure import SOLID_THRESHOLD_HU, max_diameter_mm, measure, measure_lesions

__all__ = ["SOLID_THRESHOLD_HU", "max_diameter_mm", "measure", "measure_lesions"]
