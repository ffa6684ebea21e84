"""Explanations: attribution maps in patient space, overlays, and faithfulness checks.

Importing this package registers the methods in :data:`medanomaly.registry.EXPLAINERS`
(``gradcam``, ``gradcampp``, ``occlusion``, ``integrated_gradients``, ``guided_backprop``).
Heavy libraries (torch, MONAI, captum, SimpleITK, matplotlib) load only when a method runs.
"""

from __future__ import annotations

from medanomaly.explain import methods as methods  # noqa: F401  (registers the explainers)
