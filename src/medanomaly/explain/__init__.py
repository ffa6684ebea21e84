"""Explanations: attribution maps in patient space, overlays, and faithfulness checks.

Importing this package registers the methods in :data:`medanomaly.registry.EXPLAINERS`
(``gradcam``, ``gradcampp``, ``occlusion``, ``integrated_gradients``, ``guided_backprop``).
Heavy libraries (torch, MONAI, captum, SimpleITK, matplotlib) load only when a method runs.

Public entry points: :func:`medanomaly.explain.maps.explain` (a map on the image grid) and
:func:`medanomaly.explain.findings.explain_findings` (overlay PNGs for a report's findings).
"""

from __future__ import annotations

from medanomaly.explain import methods as methods  # noqa: F401  (registers the explainers)
from medanomaly.explain.findings import explain_findings
from medanomaly.explain.maps import explain

__all__ = ["explain", "explain_findings"]
