"""What every classifier in :data:`medanomaly.registry.MODELS` declares.

A classifier factory is registered with :func:`register_classifier`; it takes
``in_channels``, ``num_classes`` and ``spatial_dims`` (2 or 3) plus its own keyword parameters and
returns a ``torch.nn.Module`` mapping (B, C, *spatial) to logits (B, num_classes). The factory and
the module both carry ``task = "classification"`` so contract tests can pick the classifiers out of
the registry (detectors, segmenters and fusion heads declare their own ``task``), and
``example_params``: small settings the contract test trains with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from medanomaly.models._tagging import model_names_for_task, register_tagged

TASK = "classification"


def register_classifier(name: str, example_params: dict[str, Any] | None = None,
                        example_size: int = 16) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a classifier factory under ``name`` and tag the modules it builds.

    Args:
        name: registry name.
        example_params: tiny parameters for contract tests (fast on CPU).
        example_size: edge length (voxels) of a test input that the example model accepts.
    """

    def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
        def build(in_channels: int = 1, num_classes: int = 2, spatial_dims: int = 2, **params: Any) -> Any:
            if spatial_dims not in (2, 3):
                raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
            if in_channels < 1 or num_classes < 2:
                raise ValueError("need in_channels >= 1 and num_classes >= 2")
            module = factory(in_channels=in_channels, num_classes=num_classes, spatial_dims=spatial_dims, **params)
            module.task = TASK
            module.model_name = name
            module.in_channels = in_channels
            module.num_classes = num_classes
            module.spatial_dims = spatial_dims
            return module

        return register_tagged(name, TASK, build, factory, example_params, example_size)

    return decorator


def classifier_names() -> list[str]:
    """Registered model names whose factory declares ``task == "classification"``."""
    return model_names_for_task(TASK)
