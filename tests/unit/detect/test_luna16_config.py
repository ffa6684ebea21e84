"""configs/luna16.yaml validates as a lung_nodule config (issue 16 item 5)."""

from __future__ import annotations

from pathlib import Path

from medanomaly.config import load_config
from medanomaly.detect.config import LungNoduleConfig

ROOT = Path(__file__).resolve().parents[3]


def test_luna16_config_loads_and_validates() -> None:
    cfg = load_config(ROOT / "configs" / "luna16.yaml")
    assert isinstance(cfg, LungNoduleConfig)
    assert all(s.image is not None and s.image.suffix == ".mhd" for s in cfg.simulation.sources)
    assert cfg.grid.spacing_mm[2] <= 2.5 and cfg.infer.grow
