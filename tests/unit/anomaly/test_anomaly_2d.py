"""The 2D (folder2d) anomaly pieces on small arrays: config, the 2D/3D refusal, a map on the picture's grid."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from medanomaly.errors import InputError
from medanomaly.types import Volume

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "anomaly_2d_folder.yaml"


def test_folder2d_config_needs_a_folder():
    from pydantic import ValidationError

    from medanomaly.anomaly.config import AnomalyConfig
    from medanomaly.config import load_config

    config = load_config(CONFIG)
    assert config.data.domain == "folder2d" and config.data.folder and config.method.name == "normative"
    with pytest.raises(ValidationError, match="needs data.folder"):
        AnomalyConfig(data={"domain": "folder2d"})


def _fitted_normative(size: int = 16):
    from medanomaly.anomaly.images2d import stack_images
    from medanomaly.anomaly.methods import METHODS
    from medanomaly.data.image_folders import Image2D

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:20, :24]
    normal = [Image2D(f"n{i}", (100 + 50 * np.sin(xx / 4.0) + rng.normal(0, 2, (20, 24))).astype(np.float32))
              for i in range(6)]  # fmt: skip
    pixels = np.concatenate([im.array.ravel() for im in normal])
    window = [float(np.percentile(pixels, 0.5)), float(np.percentile(pixels, 99.5))]  # data.intensity: dataset
    train = stack_images(normal, size, window)
    method = METHODS.get("normative")(z_bins=1)
    method.fit(train, train, {})
    return method, normal[0].array, window


def test_predict_image_maps_a_lesion_on_the_picture_grid_and_reads_rgb():
    from medanomaly.anomaly.images2d import predict_image

    method, clean, window = _fitted_normative()
    lesion = clean.copy()
    lesion[6:12, 8:14] = 400.0
    rgb = np.repeat(lesion[None, ..., None], 3, axis=-1)
    rgb[..., 2] *= 0.5  # really colour: converted with luma weights
    amap, score, _, _ = predict_image(method, Volume(rgb, spacing=(0.5, 0.5, 1.0)), 16, 0.0, window)
    assert amap.is_2d and amap.shape == (1, 20, 24) and amap.spacing[:2] == (0.5, 0.5)
    assert "grey" in amap.meta["description"]
    values = np.asarray(amap.array)[0]
    assert values[7:11, 9:13].mean() > 3 * values[15:, :].mean()
    _, clean_score, _, _ = predict_image(method, Volume(clean[None]), 16, 0.0, window)
    assert score > clean_score
    with pytest.raises(InputError, match="got a 3D volume"):
        predict_image(method, Volume(np.zeros((3, 20, 24), np.float32)), 16, 0.0)


def test_2d_model_refuses_a_3d_volume_in_one_line():
    from medanomaly.anomaly.model import AnomalyModel
    from medanomaly.engine.run import RunInfo

    info = RunInfo(task="anomaly", class_names=("anomaly",), input={"spatial_dims": 2, "modality": "any"})
    model = AnomalyModel(info, ".", method=None)
    with pytest.raises(InputError, match="trained on 2D images, got a 3D volume") as err:
        model.check_input(Volume(np.zeros((4, 8, 8), np.float32)), "scan.nii.gz")
    assert "\n" not in str(err.value)
    model.check_input(Volume(np.zeros((1, 8, 8, 3), np.uint8)))  # a colour picture is accepted (made grey)


def test_folder_training_image_with_a_mask_beside_it_is_refused(tmp_path):
    from medanomaly.anomaly.config import AnomalyConfig
    from medanomaly.anomaly.images2d import folder_split, image_set
    from medanomaly.io import write

    for part in ("train/normal", "val/normal"):
        (tmp_path / part).mkdir(parents=True)
        for name in ("a.png", "b.png"):
            write(Volume(np.full((1, 8, 8), 50, np.uint8)), tmp_path / part / name)
    data = AnomalyConfig(data={"domain": "folder2d", "folder": str(tmp_path), "size": 16}).data
    assert folder_split(data, "train")["images"].shape == (2, 16, 16)
    write(Volume(np.zeros((1, 8, 8), np.uint8)), tmp_path / "train/normal/b_mask.png")
    image_set.cache_clear()
    with pytest.raises(InputError, match="mask"):
        folder_split(data, "train")


def _write_folders(root: Path, train: dict[str, np.ndarray]) -> Path:
    from PIL import Image

    rng = np.random.default_rng(1)
    for part in ("train/normal", "val/normal", "test/normal", "test/abnormal"):
        (root / part).mkdir(parents=True)
    base = (rng.random((24, 24)) * 200).astype(np.uint8)
    for part in ("val/normal", "test/normal", "test/abnormal"):
        Image.fromarray(base).save(root / part / "x.png")
    for name, array in train.items():
        Image.fromarray(array).save(root / "train" / "normal" / name)
    return root


def test_dataset_window_refuses_a_training_image_on_another_grey_scale_by_name(tmp_path):
    """A 16-bit picture among 8-bit ones would squash every other image into a few grey levels."""
    from types import SimpleNamespace

    from medanomaly.anomaly.images2d import image_set, intensity_range

    rng = np.random.default_rng(2)
    eight = {f"n{i}.png": (rng.random((24, 24)) * 200).astype(np.uint8) for i in range(4)}
    ok = _write_folders(tmp_path / "ok", {**eight, "dark.png": (rng.random((24, 24)) * 10).astype(np.uint8)})
    data = SimpleNamespace(intensity="dataset", folder=str(ok), normal_label=0)
    low, high = intensity_range(data)  # a darker 8-bit image is accepted
    assert 0 <= low < high <= 200
    sixteen = (rng.random((24, 24)) * 200 * 257).astype(np.uint16)
    bad = _write_folders(tmp_path / "bad", {**eight, "deep.png": sixteen})
    image_set.cache_clear()
    with pytest.raises(InputError, match="deep.png reaches grey value .* typically reach"):
        intensity_range(SimpleNamespace(intensity="dataset", folder=str(bad), normal_label=0))
    assert intensity_range(SimpleNamespace(intensity="image", folder=str(bad), normal_label=0)) is None


def test_window_flags_an_image_far_outside_the_training_grey_window():
    from medanomaly.anomaly.images2d import window_flags

    rng = np.random.default_rng(3)
    eight_bit = rng.random((32, 32)) * 255
    assert window_flags(eight_bit, [0.0, 255.0]) == ()
    lesion = eight_bit.copy()
    lesion[:8, :8] = 2000.0  # a bright lesion on 6 % of the image is not a scale change
    assert window_flags(lesion, [0.0, 255.0]) == ()
    ct_hu = rng.random((32, 32)) * 2000 - 1000  # a CT slice in HU against an 8-bit window
    assert window_flags(ct_hu, [0.0, 255.0]) == ("intensity_outside_training_window",)
    assert window_flags(ct_hu, None) == ()


@pytest.mark.parametrize(("domain", "words"), [
    ({"name": "folder2d", "intensity_range": [0.0]}, "intensity_range must be finite [low, high], got [0.0]"),
    ({"name": "folder2d", "intensity_range": "x"}, "intensity_range must be finite [low, high]"),
    ({"name": "folder2d", "intensity_range": [float("nan"), 255.0]}, "intensity_range must be finite"),
    ({"name": "folder2d", "intensity_range": [255.0, 0.0]}, "intensity_range must be finite [low, high]"),
    ({"name": "folder2d", "intensity_range": [0.0, 0.0]}, "intensity_range must be finite [low, high]"),
    ({"name": "chest_ct", "window": "x"}, "unknown recorded CT window 'x'"),
])  # fmt: skip
def test_recorded_domain_values_a_prediction_reads_are_checked_at_load(tmp_path, domain, words):
    """A 2D folder run's recorded ``intensity_range`` of ``[0]``, ``None`` entries or text was a traceback at the first
    image, NaN or ``[0, 0]`` a NaN map after SciPy warnings; a chest CT run's unknown window a KeyError. One line
    naming model.json when the run is loaded."""
    from medanomaly.anomaly.model import check_recorded_settings
    from medanomaly.engine.run import RunInfo

    info = RunInfo(task="anomaly", class_names=("anomaly",), thresholds={"decision": 1.0, "pixel": 1.0, "sigma": 0.0},
                   extra={"size": 32, "method": {"name": "normative", "params": {}}, "domain": domain})
    with pytest.raises(InputError, match=re.escape(words)) as err:
        check_recorded_settings(info, tmp_path / "model.json")
    assert err.value.path == tmp_path / "model.json"
    check_recorded_settings(info.model_copy(update={"extra": {**info.extra, "domain": {
        "name": "folder2d", "intensity_range": [0, 255]}}}), tmp_path / "model.json")  # a good one passes
