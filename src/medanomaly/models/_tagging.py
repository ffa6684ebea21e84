"""Registering a network factory with the tags contract tests select by.

Every registered factory carries ``task`` (``"classification"``, ``"fusion"``, ...), a tiny
``example_params`` dict and ``example_size`` (edge length of a test input), so registry-wide
contract tests can build and train any model of a task without per-model test code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from medanomaly.registry import MODELS


def register_tagged(name: str, task: str, build: Callable[..., Any], factory: Callable[..., Any],
                    example_params: dict[str, Any] | None, example_size: int) -> Callable[..., Any]:
    """Tag ``build`` (the validated wrapper of ``factory``) and register it in MODELS as ``name``."""
    build.__name__ = name
    build.__doc__ = factory.__doc__
    build.__wrapped__ = factory  # type: ignore[attr-defined]
    build.task = task  # type: ignore[attr-defined]
    build.example_params = dict(example_params or {})  # type: ignore[attr-defined]
    build.example_size = example_size  # type: ignore[attr-defined]
    return MODELS.register(name)(build)


def model_names_for_task(task: str) -> list[str]:
    """Registered model names whose factory declares ``task``."""
    return [n for n in MODELS.names() if getattr(MODELS.get(n), "task", None) == task]
