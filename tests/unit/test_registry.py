"""Registry: register, create, lazy population, helpful errors."""

from __future__ import annotations

import sys
import types

import pytest

from medanomaly.errors import ConfigError
from medanomaly.registry import DATASETS, EXPLAINERS, MODELS, TASKS, TRANSFORMS, Registry


def test_registry_register_create_names():
    shapes: Registry = Registry("shape")

    @shapes.register("square")
    def square(side: float) -> float:
        return side * side

    @shapes.register()
    def circle(r: float) -> float:
        return 3.0 * r * r

    assert shapes.create("square", side=3.0) == 9.0
    assert shapes.names() == ["circle", "square"] and shapes.names("sq*") == ["square"]
    assert "circle" in shapes and "triangle" not in shapes
    assert list(shapes) == ["circle", "square"]
    shapes.register("square")(square)  # same object again: fine
    with pytest.raises(ValueError, match="already registered"):
        shapes.register("square")(circle)
    with pytest.raises(ConfigError, match="unknown shape 'triangle'; valid: circle, square"):
        shapes.get("triangle")


def test_registry_lazy_population_and_failed_import(monkeypatch):
    mod = types.ModuleType("medanomaly_test_plugin")
    reg: Registry = Registry("plugin", populate=("medanomaly_test_plugin",))

    def populate():
        reg.register("thing")(lambda: 42)
        assert reg.names() == ["thing"]  # looking itself up while importing does not recurse

    # first: the populating module is missing -> ImportError, and again on the next lookup
    with pytest.raises(ImportError):
        reg.get("thing")
    with pytest.raises(ImportError):
        reg.names()
    monkeypatch.setitem(sys.modules, "medanomaly_test_plugin", mod)
    populate()
    assert reg.create("thing") == 42


def test_registry_global_registries_are_distinct():
    kinds = {r.kind for r in (MODELS, DATASETS, TRANSFORMS, TASKS, EXPLAINERS)}
    assert kinds == {"model", "dataset", "transform", "task", "explainer"}
