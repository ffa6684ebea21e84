"""A network that cannot take the configured input (deeper than the image, or a model of another kind) is refused in
one line naming the config key, before any data is read, for every task that trains a network: it was a PyTorch
traceback at the first batch, after minutes of data work."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from medanomaly.errors import ConfigError
from medanomaly.models._classifier import classifier_names
from medanomaly.models.limits import check_input_shape
from medanomaly.registry import MODELS

ROOT = Path(__file__).resolve().parents[3]


def _real_training_forward_works(name: str, kwargs: dict, shape: tuple[int, ...]) -> bool:
    try:
        with torch.no_grad():
            MODELS.get(name)(**kwargs).train()(torch.zeros(shape))
    except (RuntimeError, ValueError):
        return False
    return True


def _check_accepts(name: str, kwargs: dict, shape: tuple[int, ...]) -> bool:
    try:
        check_input_shape(name, MODELS.get(name), kwargs, shape, "data.image_size")
    except ConfigError as exc:
        assert "\n" not in str(exc) and "data.image_size" in str(exc)
        return False
    return True


@pytest.mark.parametrize("name", classifier_names())
def test_the_meta_check_agrees_with_a_real_training_pass_for_every_classifier(name):
    verdicts = []
    for dims, size in ((2, 8), (2, 12), (2, 32), (3, 8)):
        kwargs = {"in_channels": 1, "num_classes": 3, "spatial_dims": dims}
        shape = (2, 1) + (size,) * dims
        verdicts.append(_check_accepts(name, kwargs, shape))
        assert verdicts[-1] == _real_training_forward_works(name, kwargs, shape), (dims, size)
    assert verdicts[2], "32 x 32 is refused: the check refuses what trains"


def _train_refused(tmp_path: Path, config: dict, monkeypatch, module: object, reader: str) -> str:
    """``train`` on ``config``: the ConfigError line, with ``module.reader`` (the data work) made to fail if called."""
    from medanomaly.engine import train_run

    def no_reading(*_args, **_kwargs):
        raise AssertionError("data were read before the network was checked")

    monkeypatch.setattr(module, reader, no_reading)
    attempt = len(list(tmp_path.glob("config*.yaml")))
    path = tmp_path / f"config{attempt}.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as caught:
        train_run(path, tmp_path / f"run{attempt}")
    text = str(caught.value)
    assert text.startswith(f"{path}: ") and "\n" not in text
    return text


def _yaml(name: str) -> dict:
    return yaml.safe_load((ROOT / "configs" / name).read_text())


def test_a_classifier_deeper_than_its_images_is_refused_before_the_images_are_read(tmp_path, monkeypatch):
    from medanomaly.classify import engine

    config = _yaml("breast_3class.yaml")
    config["data"]["image_size"] = [8, 8]
    config["model"] = {"name": "densenet", "params": {}}
    text = _train_refused(tmp_path, config, monkeypatch, engine, "load_data")
    assert "model 'densenet' cannot take inputs of 1 x 8 x 8 (data.image_size" in text and "too small" in text


def test_a_stride_of_0_is_one_line_not_the_meta_devices_division_by_zero(tmp_path, monkeypatch):
    """The meta device computes a convolution's output size by dividing by its stride: a ZeroDivisionError traceback
    (found by mutating lung_malignancy_3d's conv1_stride)."""
    from medanomaly.classify import engine

    config = _yaml("lung_malignancy_3d.yaml")
    config["model"]["params"]["conv1_stride"] = 0
    text = _train_refused(tmp_path, config, monkeypatch, engine, "load_data")
    assert text.endswith("model 'resnet' cannot take inputs of 1 x 32 x 32 x 32 (data.image_size; channels first): "
                         "ZeroDivisionError: a stride or size of 0?")


def test_a_detection_run_checks_its_detector_and_its_lesion_classifier_first(tmp_path, monkeypatch):
    from medanomaly.detect import detection_task

    config = _yaml("breast_mammo_detect_tiny.yaml")
    config["classifier"].update(model={"name": "densenet", "params": {}}, crop_size=[8, 8])
    text = _train_refused(tmp_path, config, monkeypatch, detection_task, "load_lesion_set")
    assert "model 'densenet' cannot take inputs of 1 x 8 x 8 (classifier.crop_size" in text
    config = _yaml("breast_mammo_detect_tiny.yaml")
    config["model"] = {"name": "resnet", "params": {}}
    text = _train_refused(tmp_path, config, monkeypatch, detection_task, "load_lesion_set")
    assert text.endswith("model 'resnet' is a classification network, not a heatmap detector (heatmap_unet, nodule_unet)")


def test_the_lung_detector_is_run_on_its_windows_before_the_scans_are_read(tmp_path, monkeypatch):
    from medanomaly.detect import generic
    from medanomaly.detect import task as lung_task

    def classifier_like():  # a network of no declared task that returns one score per window
        return torch.nn.Sequential(torch.nn.Conv3d(1, 1, 3), torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten())

    monkeypatch.setattr(generic, "build_network", lambda name, params, dims=3: classifier_like())
    text = _train_refused(tmp_path, _yaml("lung_nodule_tiny.yaml"), monkeypatch, lung_task, "load_sources")
    assert text.endswith("model 'nodule_unet' is not a heatmap detector: on a 1 x 4 x 32 x 32 window (train.patch_size) "
                         "it returns shape (1), not one heatmap of the window's size")


@pytest.mark.parametrize("method", ["autoencoder", "padim", "draem"])
def test_an_anomaly_network_that_cannot_reconstruct_the_grid_is_refused_before_any_slice(tmp_path, monkeypatch, method):
    from medanomaly.anomaly import pipeline

    config = _yaml("anomaly_tiny.yaml")
    config["data"]["size"] = 16
    config["method"] = {"name": method, "params": {"channels": [4] * 6}}  # pooled to 1 x 1: no spread to normalise
    text = _train_refused(tmp_path, config, monkeypatch, pipeline, "build_split")
    assert "cannot take inputs of 1 x 16 x 16 (data.size" in text
    config["data"]["size"] = 20
    config["method"]["params"]["channels"] = [4, 4, 4]  # 20 -> 10 -> 5 -> 3 -> ... -> 24
    text = _train_refused(tmp_path, config, monkeypatch, pipeline, "build_split")
    assert text.endswith(f"{method} channels [4, 4, 4] map a 1 x 20 x 20 slice (data.size) to 1 x 24 x 24: "
                         "use a data.size that 2^levels divides")


def test_a_draem_discriminator_deeper_than_the_grid_is_one_line_before_any_slice(tmp_path, monkeypatch):
    from medanomaly.anomaly import pipeline

    config = _yaml("anomaly_tiny.yaml")
    config["data"]["size"] = 20  # the one-level autoencoder takes it (20 -> 10 -> 20); the 4-level UNet does not
    config["method"] = {"name": "draem", "params": {"channels": [4], "disc_channels": [4, 4, 4, 4]}}
    text = _train_refused(tmp_path, config, monkeypatch, pipeline, "build_split")
    assert "model 'anomaly_draem' cannot take inputs of 1 x 20 x 20 (data.size" in text and "\n" not in text
