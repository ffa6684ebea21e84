"""Every Python example in README.md and docs/*.md imports names that exist and calls them with arguments their
signatures take, so an API change cannot leave an example behind (docs/evaluation.md's ``evaluate_classification``
call kept ``logits=``, ``y_val=`` and ``logits_val=`` after the function lost them: a reader's first call failed).
The examples use the reader's own variables, so they are checked, not run."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def snippets() -> list[tuple[str, str]]:
    return [(f"{page.name}#{i}", code) for page in PAGES
            for i, code in enumerate(BLOCK.findall(page.read_text(encoding="utf-8")))]  # fmt: skip


def imported(tree: ast.Module) -> dict[str, object]:
    """Each name a ``from X import Y`` of the example binds, resolved (a missing module or name fails here)."""
    names: dict[str, object] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            for alias in node.names:
                names[alias.asname or alias.name] = getattr(module, alias.name)
    return names


def callee(func: ast.expr, names: dict[str, object]) -> object | None:
    """The object an example calls by an imported name (``f(...)``, ``Cls.method(...)``), else None."""
    if isinstance(func, ast.Name):
        return names.get(func.id)
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in names:
        return getattr(names[func.value.id], func.attr)
    return None


@pytest.mark.parametrize(("where", "code"), snippets(), ids=[w for w, _ in snippets()])
def test_docs_python_examples_call_what_exists(where: str, code: str) -> None:
    tree = ast.parse(code)
    names = imported(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or any(isinstance(a, ast.Starred) for a in node.args):
            continue
        target = callee(node.func, names)
        if target is None or not callable(target):
            continue
        keywords = {k.arg: None for k in node.keywords if k.arg is not None}
        try:
            inspect.signature(target).bind(*[None] * len(node.args), **keywords)
        except TypeError as exc:
            pytest.fail(f"{where}, line {node.lineno}: {ast.unparse(node.func)}(...) does not fit its signature: {exc}")
