"""Config: YAML loading, validation by the task's class, errors naming the file."""

from __future__ import annotations

import pydantic
import pytest
import yaml

from medanomaly import registry
from medanomaly.config import ComponentConfig, RunConfig, Section, load_config, parse_config, save_config
from medanomaly.errors import ConfigError


class ToyModel(Section):
    width: int = 8


class ToyConfig(RunConfig):
    model: ComponentConfig
    toy: ToyModel = ToyModel()


class ToyTask:
    config_class = ToyConfig


@pytest.fixture
def toy_tasks(monkeypatch):
    tasks = registry.Registry("task")
    tasks.register("toy")(ToyTask())
    monkeypatch.setattr(registry, "TASKS", tasks)
    return tasks


def test_config_load_validate_save(tmp_path, toy_tasks):
    path = tmp_path / "toy.yaml"
    path.write_text("task: toy\nseed: 3\nmodel: {name: compact_cnn, params: {depth: 2}}\ntoy: {width: 16}\n")
    cfg = load_config(path)
    assert isinstance(cfg, ToyConfig) and cfg.seed == 3 and cfg.toy.width == 16
    assert cfg.model.params == {"depth": 2}
    saved = save_config(cfg, tmp_path / "run")
    assert yaml.safe_load(saved.read_text())["toy"] == {"width": 16}
    assert load_config(saved).model_dump() == cfg.model_dump()
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        cfg.seed = 4  # frozen


def test_config_errors_name_the_file(tmp_path, toy_tasks):
    bad = tmp_path / "typo.yaml"
    bad.write_text("task: toy\nmodel: {name: a}\ntoy: {widht: 3}\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: toy.widht: Extra inputs are not permitted"):
        load_config(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("task: nope\n")
    with pytest.raises(ConfigError, match=r"unknown.yaml: unknown task 'nope'; valid: toy"):
        load_config(unknown)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path)
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping with a 'task' key"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("task: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")
    with pytest.raises(ConfigError, match="model: Field required"):
        parse_config({"task": "toy"})
