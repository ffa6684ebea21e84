"""``medanomaly demo``: run the demo steps of :mod:`medanomaly.demo` (outputs in ``runs/demo/``)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Output folder."),
        only: list[str] | None = typer.Option(None, "--only", help="Run only these steps (repeatable)."),
    ) -> None:
        """Run the demo on the embedded real scans: summary table, contact sheet, and later pipelines."""
        from medanomaly.demo import DEMO_STEPS, run_demo
        from medanomaly.engine.outputs import prepare_output_dir
        from medanomaly.errors import InputError

        steps = DEMO_STEPS
        if only:
            unknown = sorted(set(only) - {name for name, _ in DEMO_STEPS})
            if unknown:
                raise InputError(f"unknown demo step(s) {unknown}; valid: {[n for n, _ in DEMO_STEPS]}")
            steps = [s for s in DEMO_STEPS if s[0] in only]
        prepare_output_dir(out)  # a file there, or a folder that cannot be written: one line before any step
        ctx = run_demo(out, steps)
        ctx.console.print(f"demo outputs in {out}/")
