"""Networks are counted on the meta device before they are allocated, and a network its parameters cannot build is
one ConfigError line, through every way a network is made (registry, detectors' own, a saved run)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from medanomaly.errors import ConfigError, InputError, unfit_file
from medanomaly.models.limits import MAX_PARAMETERS_ENV, build_within_limits, max_parameters, parameter_count
from medanomaly.registry import MODELS

ROOT = Path(__file__).resolve().parents[3]
HUGE = {"filters": (4000, 8000, 16000)}  # 20.7 billion parameters: 77 GiB if it were allocated


def test_a_huge_network_is_refused_before_any_memory_is_taken():
    with pytest.raises(ConfigError) as caught:
        MODELS.create("nodule_unet", **HUGE)
    text = str(caught.value)
    assert "model 'nodule_unet': 20,736,200,001 parameters" in text and MAX_PARAMETERS_ENV in text and "\n" not in text


def test_the_limit_counts_exactly_and_can_be_raised_or_lowered(monkeypatch):
    small = {"filters": (4, 8, 16)}
    count = parameter_count("nodule_unet", MODELS.get("nodule_unet"), small)
    real = MODELS.create("nodule_unet", **small)
    assert count == sum(p.numel() for p in real.parameters()) and all(p.device.type == "cpu" for p in real.parameters())
    monkeypatch.setenv(MAX_PARAMETERS_ENV, str(count - 1))
    with pytest.raises(ConfigError, match="exceed the limit of"):
        MODELS.create("nodule_unet", **small)
    monkeypatch.setenv(MAX_PARAMETERS_ENV, str(count))
    assert max_parameters() == count and MODELS.create("nodule_unet", **small) is not None
    for bad in ("lots", "-5", "0", "1e9"):
        monkeypatch.setenv(MAX_PARAMETERS_ENV, bad)
        with pytest.raises(ConfigError, match=MAX_PARAMETERS_ENV):
            max_parameters()


@pytest.mark.parametrize("name, params, reason", [
    ("nodule_unet", {"filters": (4, 8)}, "ValueError: nodule_unet needs 3 filter sizes, got [4, 8]"),
    ("compact_cnn", {"widths": (-4,)}, "RuntimeError: Trying to create tensor with negative dimension"),
    ("nodule_unet", {"filters": (0, 0, 0)}, "has no weights: a width or filter size of 0?"),
    ("compact_cnn", {"widths": (0, 8)}, "has no weights: a width or filter size of 0?"),
    ("resnet", {"depth": 7}, "ValueError: depth must be one of"),
    ("densenet", {"block_config": (10**6,)}, "block_config must list 1 to 8 dense blocks of 1 to 256 layers"),
    ("compact_cnn", {"widths": (4,) * 15}, "ValueError: widths must list 1 to 14 levels, got 15"),
    ("fusion_decision", {"modalities": ("T1", "PD"), "combine": "nope"}, "ValueError: combine must be one of"),
])  # fmt: skip
def test_parameters_a_network_cannot_be_built_from_are_one_line_naming_it(name, params, reason, recwarn):
    with pytest.raises(ConfigError) as caught:
        MODELS.create(name, **params)
    assert not [w for w in recwarn if "zero-element" in str(w.message)]  # torch's two-line warning for a width of 0
    text = str(caught.value)
    assert text.startswith(f"model {name!r} cannot be built from its parameters (") and reason in text
    assert "\n" not in text


def test_our_own_errors_pass_through_and_a_factory_without_torch_builds():
    def picky(width: int) -> int:
        raise InputError("width must be even")

    with pytest.raises(InputError, match="^width must be even$"):
        build_within_limits("picky", picky, {"width": 3})
    assert build_within_limits("plain", lambda width: width * 2, {"width": 3}) == 6  # no module: nothing to count


def test_unfit_file_names_its_file_for_an_error_that_names_none(tmp_path):
    with pytest.raises(ConfigError) as caught, unfit_file(tmp_path / "detector.json", "detector parameters"):
        MODELS.create("nodule_unet", **HUGE)
    assert str(caught.value).startswith(f"{tmp_path / 'detector.json'}: model 'nodule_unet'")
    with pytest.raises(InputError) as named, unfit_file(tmp_path / "detector.json", "detector parameters"):
        raise InputError("broken", tmp_path / "other.json")
    assert str(named.value) == f"{tmp_path / 'other.json'}: broken"


def test_a_saved_run_asking_for_a_huge_network_names_its_file(tmp_path):
    from medanomaly.detect.detector import SIDECAR_FILE, NoduleDetector

    run = tmp_path / "run"
    shutil.copytree(ROOT / "tests" / "fixtures" / "lung_detector", run)
    params = json.loads((run / SIDECAR_FILE).read_text())
    params["model_params"]["filters"] = list(HUGE["filters"])
    (run / SIDECAR_FILE).write_text(json.dumps(params))
    with pytest.raises(InputError) as caught:
        NoduleDetector.load(run)
    assert str(caught.value).startswith(f"{run / SIDECAR_FILE}: model 'nodule_unet': 20,736,200,001 parameters")


def test_training_a_huge_lung_network_stops_before_reading_any_scan(tmp_path, monkeypatch):
    """The lung task checks its network before minutes of reading and simulating (its sources are never loaded)."""
    from medanomaly.detect import task as lung_task
    from medanomaly.engine import train_run

    def no_reading(*_args, **_kwargs):
        raise AssertionError("the sources were read before the network was checked")

    monkeypatch.setattr(lung_task, "load_sources", no_reading)
    config = yaml.safe_load((ROOT / "configs" / "lung_nodule_tiny.yaml").read_text())
    config["model"]["params"]["filters"] = list(HUGE["filters"])
    path = tmp_path / "huge.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as caught:
        train_run(path, tmp_path / "run")
    assert str(caught.value).startswith(f"{path}: model 'nodule_unet': 20,736,200,001 parameters")
