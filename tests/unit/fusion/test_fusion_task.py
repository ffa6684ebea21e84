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


def test_fusion_benchmark_variants_are_bounded_and_labelled_once():
    """Each variant is a full training: 100,000 of them loaded (only the YAML node limit bounded them), and two rows
    with one label made a table nobody could read."""
    row = {"label": "a", "model": {"name": "fusion_feature"}}
    with pytest.raises(ConfigError, match="at most 32"):
        parse_config({"task": "fusion", "benchmark": {"variants": [{**row, "label": str(i)} for i in range(33)]}})
    with pytest.raises(ConfigError, match=r"labels must be non-empty and distinct .*\['a', 'a'\]"):
        parse_config({"task": "fusion", "benchmark": {"variants": [row, row]}})
    assert len(parse_config({"task": "fusion", "benchmark": {"variants": [row]}}).benchmark.variants) == 1


@pytest.mark.parametrize("simulation, field", [
    ({"p_both": 5.0}, "p_both"), ({"lesion_fraction": -1}, "lesion_fraction"), ({"lesion_fraction": 1.0}, "lesion_fraction"),
    ({"weak_contrast": -3}, "weak_contrast"), ({"noise": 2.0}, "noise"), ({"strong_contrast": [1.0, 0.6]}, "inverted"),
    ({"strong_contrast": [0.6, 50.0]}, "strong_contrast"),
])  # fmt: skip
def test_fusion_simulation_values_are_bounded(simulation, field):
    """A probability of 5 was taken silently, a lesion fraction of -1 trained on one class (val_auc nan), a negative
    weak contrast was a numpy traceback mid-simulation."""
    with pytest.raises(ConfigError, match=field):
        parse_config({"task": "fusion", "data": {"simulation": simulation}})


def test_a_split_with_one_label_is_refused_before_training():
    from medanomaly.fusion.task import build_splits

    cfg = parse_config({"task": "fusion", "data": {"n_train": 8, "n_val": 4, "n_test": 4, "size": [32, 32],
                                                   "simulation": {"lesion_fraction": 0.001}}})  # fmt: skip
    with pytest.raises(InputError, match=r"the train split of the simulated data .* holds only label 0 \(8 samples\)"):
        build_splits(cfg)
