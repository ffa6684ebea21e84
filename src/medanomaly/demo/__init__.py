"""``medanomaly demo``: the main job, run as an ordered list of steps.

Each step is a function ``step(ctx: DemoContext) -> None`` named in :data:`DEMO_STEPS` as
``(name, "module:function")``; it prints what it did on ``ctx.console`` and writes its files
under ``ctx.out_dir`` (``runs/demo/`` by default). To add a step (e.g. the lung pipeline),
append one entry to :data:`DEMO_STEPS`; the module is imported only when the demo runs, so
``import medanomaly`` stays fast.

Example:
    >>> [name for name, _ in DEMO_STEPS][:1]
    ['scans']
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Ordered demo steps: (name, "module:function"). Later steps may read ``ctx.results`` of earlier ones.
DEMO_STEPS: list[tuple[str, str]] = [
    ("scans", "medanomaly.demo.scans:run"),
    ("lung", "medanomaly.demo.lung:run"),
    ("anomaly", "medanomaly.demo.anomaly:run"),
    ("breast", "medanomaly.demo.breast:run_breast_step"),
]


@dataclass
class DemoContext:
    """What the steps share: output folder, console, and each step's results by step name."""

    out_dir: Path
    console: Any
    results: dict[str, Any] = field(default_factory=dict)


DemoStep = Callable[[DemoContext], Any]


def load_step(target: str) -> DemoStep:
    """Import ``"module:function"`` and return the function."""
    module_name, _, func_name = target.partition(":")
    return getattr(importlib.import_module(module_name), func_name)


def run_demo(
    out_dir: str | Path = Path("runs/demo"),
    steps: Sequence[tuple[str, str]] | None = None,
    console: Any = None,
) -> DemoContext:
    """Run the demo steps in order; each step's return value lands in ``ctx.results[name]``.

    Args:
        out_dir: where steps write (created).
        steps: (name, "module:function") pairs; default :data:`DEMO_STEPS`.
        console: a ``rich.console.Console`` (default: a new one on stdout).
    """
    from rich.console import Console

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if console is None:  # a wide table also when piped to a file or CI log
        console = Console(width=None if sys.stdout.isatty() else 140)
    ctx = DemoContext(out_dir=out, console=console)
    for name, target in steps if steps is not None else DEMO_STEPS:
        start = time.perf_counter()
        ctx.console.rule(f"demo step: {name}")
        ctx.results[name] = load_step(target)(ctx)
        ctx.console.print(f"[dim]{name}: {time.perf_counter() - start:.1f} s[/dim]")
    return ctx
