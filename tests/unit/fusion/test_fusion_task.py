"""The fusion task's configs: the shipped YAMLs validate and build their networks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medanomaly.config import load_config, parse_config
from medanomaly.errors import ConfigError, InputError
from medanomaly.fusion.task import FusionConfig, build_model
from medanomaly.registry import TASKS

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def test_fusion_task_registered():
    assert "fusion" in TASKS and TASKS.get("fusion").config_class is FusionConfig


def test_fusion_task_ct_mri_case_study_config_builds_two_branch_3d_network():
    cfg = load_config(CONFIGS / "fusion_ct_mri.yaml")
    assert isinstance(cfg, FusionConfig)
    assert cfg.data.source == "manifest" and cfg.data.modalities == ("CT", "MR") and len(cfg.data.size) == 3
    net = build_model(cfg.model, cfg.data.modalities, spatial_dims=3)
    assert len(net.encoders) == 2  # one branch per modality
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(1, 2, 16, 32, 32), torch.tensor([[True, False]]))  # MR missing
    assert out.shape == (1, 2)


def test_fusion_task_brain_sim_config():
    cfg = load_config(CONFIGS / "fusion_brain_sim.yaml")
    assert cfg.data.source == "simulated" and cfg.data.size == (64, 64)
    assert cfg.train.modality_dropout > 0


def test_fusion_task_config_errors():
    with pytest.raises(ConfigError, match="extra|not permitted"):
        parse_config({"task": "fusion", "data": {"sauce": "simulated"}})
    with pytest.raises(ConfigError, match="modality_dropout"):
        parse_config({"task": "fusion", "train": {"modality_dropout": 1.5}})
    cfg = parse_config({"task": "fusion", "model": {"name": "compact_cnn"}})
    with pytest.raises(InputError, match="not a fusion network"):
        build_model(cfg.model, ("T1", "PD"), 2)
