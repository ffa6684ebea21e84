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


def test_create_names_a_parameter_the_factory_does_not_take_before_calling_it():
    shapes: Registry = Registry("shape")
    calls = []

    @shapes.register("square")
    def square(side: float, scale: float = 1.0) -> float:
        calls.append(side)
        return side * side * scale

    with pytest.raises(ConfigError, match=r"shape 'square': got an unexpected keyword argument 'sidee'; its parameters: side, scale"):
        shapes.create("square", side=1.0, sidee=2.0)
    with pytest.raises(ConfigError, match="missing a required argument: 'side'"):
        shapes.create("square", scale=2.0)
    assert calls == []  # nothing was built
    assert shapes.create("square", side=2.0, scale=0.5) == 2.0


def test_a_method_parameter_typo_in_a_config_names_the_config_in_one_line(tmp_path):
    """`medanomaly train` on an anomaly config whose method params hold a typo: ConfigError naming the YAML file, not
    a TypeError traceback; a parameter check of the method itself (val_cross_outline without edge_heads) too."""
    import yaml

    from medanomaly.engine import train_run

    base = {"task": "anomaly", "name": "typo", "data": {"train": ["mni152"], "val": ["ch2better"], "copies": 0},
            "method": {"name": "atlas", "params": {"val_cros_outline": True}}}  # fmt: skip
    for params, reason in (({"val_cros_outline": True}, "unexpected keyword argument 'val_cros_outline'"),
                           ({"val_cross_outline": True}, "val_cross_outline needs edge_heads")):  # fmt: skip
        config = tmp_path / "typo.yaml"
        config.write_text(yaml.safe_dump({**base, "method": {"name": "atlas", "params": params}}))
        with pytest.raises(ConfigError) as caught:
            train_run(config, tmp_path / "run", overwrite=True)
        assert str(caught.value).startswith(f"{config}: ") and reason in str(caught.value)
