"""configs/luna16.yaml validates as a lung_nodule config with a luna16: section (issue 16 item 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medanomaly.config import load_config, parse_config
from medanomaly.detect.config import LungNoduleConfig
from medanomaly.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def test_luna16_config_loads_and_validates() -> None:
    cfg = load_config(ROOT / "configs" / "luna16.yaml")
    assert isinstance(cfg, LungNoduleConfig)
    assert cfg.luna16 is not None and cfg.luna16.root == Path("/data/LUNA16") and cfg.luna16.test_fold == 0
    assert cfg.grid.spacing_mm[2] <= 2.5 and cfg.infer.grow and cfg.infer.max_findings == 100


def test_luna16_section_refuses_bad_folds() -> None:
    with pytest.raises(ConfigError, match="luna16.test_fold"):
        parse_config({"task": "lung_nodule", "luna16": {"root": "/x", "test_fold": 10}})
    with pytest.raises(ConfigError, match="luna16.roots"):
        parse_config({"task": "lung_nodule", "luna16": {"root": "/x", "roots": "/y"}})
