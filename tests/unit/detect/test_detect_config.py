"""The lung_nodule config: YAML files validate, and the main one equals the demo defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medanomaly.config import ConfigError, parse_config
from medanomaly.detect.config import LungNoduleConfig

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def test_detect_config_yaml_equals_demo_defaults() -> None:
    data = yaml.safe_load((CONFIGS / "lung_nodule.yaml").read_text())
    cfg = parse_config(data)
    assert isinstance(cfg, LungNoduleConfig)
    expected = LungNoduleConfig(name="lung_nodule").model_dump(mode="json")
    assert cfg.model_dump(mode="json") == expected


def test_detect_tiny_config_validates() -> None:
    cfg = parse_config(yaml.safe_load((CONFIGS / "lung_nodule_tiny.yaml").read_text()))
    assert cfg.train.steps < 50 and len(cfg.simulation.sources) == 1


def test_detect_config_rejects_typos() -> None:
    with pytest.raises(ConfigError, match="stepz"):
        parse_config({"task": "lung_nodule", "train": {"stepz": 3}})


@pytest.mark.parametrize(("axes", "message"), [(["x", "x"], "repeats an axis"), (["w"], "mirror_axes")])
def test_detect_config_refuses_bad_mirror_axes(axes: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"task": "lung_nodule", "infer": {"mirror_axes": axes}})
