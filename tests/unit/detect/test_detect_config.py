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


def _tiny(name: str, **train: object) -> dict:
    """The YAML of ``configs/<name>.yaml`` as a dict, with these ``train:`` values set."""
    data = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    data["train"].update(train)
    return data


def test_train_device_reaches_both_detectors_and_their_saved_parameters(tmp_path) -> None:
    """The docs named `train.device` for the detection recipes while their configs refused it; now it is a setting."""
    from medanomaly.detect.detector import NoduleDetector
    from medanomaly.detect.generic import HeatmapDetector, thread_probe

    lung = _tiny("lung_nodule_tiny", device="cpu")
    assert NoduleDetector.from_config(parse_config(lung)).get_params()["device"] == "cpu"
    breast = _tiny("breast_mammo_detect_tiny", device="cpu")
    assert HeatmapDetector.from_config(parse_config(breast)).get_params()["device"] == "cpu"
    assert LungNoduleConfig(name="x").train.device == "auto"
    assert thread_probe("auto", "cpu") is not None and thread_probe(2, "cpu") is None
    with pytest.raises(ConfigError, match="train.device"):
        parse_config({**lung, "train": {**lung["train"], "device": "tpu"}})


def test_a_cuda_run_without_a_gpu_stops_before_reading_any_scan(tmp_path, monkeypatch) -> None:
    import torch

    from medanomaly.detect import task as lung_task
    from medanomaly.engine import train_run
    from medanomaly.errors import InputError

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")

    def no_reading(*_args, **_kwargs):
        raise AssertionError("the sources were read before the device was checked")

    monkeypatch.setattr(lung_task, "load_sources", no_reading)
    config = _tiny("lung_nodule_tiny", device="cuda")
    path = tmp_path / "cuda.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(InputError, match="no CUDA device is available"):
        train_run(path, tmp_path / "run")


def test_train_precision_is_one_of_three_and_reaches_both_detectors() -> None:
    from medanomaly.detect.detector import NoduleDetector
    from medanomaly.detect.generic import HeatmapDetector

    lung = _tiny("lung_nodule_tiny", precision="auto")
    assert NoduleDetector.from_config(parse_config(lung)).get_params()["precision"] == "auto"
    breast = _tiny("breast_mammo_detect_tiny", precision="bf16")
    assert HeatmapDetector.from_config(parse_config(breast)).get_params()["precision"] == "bf16"
    assert LungNoduleConfig(name="x").train.precision == "auto"  # the lung recipe: bf16 where the hardware has it
    assert parse_config(_tiny("breast_mammo_detect_tiny")).train.precision == "fp32"
    with pytest.raises(ConfigError, match="train.precision"):
        parse_config({**lung, "train": {**lung["train"], "precision": "fp16"}})
