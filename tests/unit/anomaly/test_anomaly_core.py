"""Unit tests of the anomaly task's pieces on small arrays (fast; no training data read)."""

from __future__ import annotations

import numpy as np
import pytest

from medanomaly.anomaly.data import maps_to_volume, refuse_lesion_image, to_common
from medanomaly.anomaly.methods import METHODS, pixel_auroc
from medanomaly.anomaly.synthetic import make_synthetic
from medanomaly.errors import InputError
from medanomaly.types import Volume


def _head(seed: int = 0, lesion: bool = False) -> Volume:
    """A synthetic 'head': an ellipsoid brain with smooth texture (values 100..200), optional bright blob."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:12, :40, :40]
    brain = ((z - 6) / 6.5) ** 2 + ((y - 20) / 15) ** 2 + ((x - 20) / 13) ** 2 < 1
    arr = np.where(brain, 150 + 30 * np.sin(x / 3.0) + rng.normal(0, 2, brain.shape), 0).astype(np.float32)
    if lesion:
        arr[5:8, 14:20, 22:28] = 400
    return Volume(arr, spacing=(2.0, 2.0, 3.0), meta={"modality": "MR"})


def _split(volumes: list[Volume]) -> dict[str, np.ndarray]:
    commons = [to_common(v, size=24) for v in volumes]
    return {"images": np.concatenate([c.images for c in commons]), "masks": np.concatenate([c.masks for c in commons]),
            "rel_z": np.concatenate([c.rel_z for c in commons])}


def test_common_grid_round_trip_lands_on_input_grid():
    head = _head()
    common = to_common(head, size=24)
    assert common.images.shape[1:] == (24, 24) and 0 <= common.images.min() and common.images.max() <= 1
    back = maps_to_volume(common, np.ones_like(common.images), head)
    assert back.same_grid(head)
    inside = np.asarray(back.array) > 0
    assert inside.sum() > 0.8 * (head.array > 0).sum()  # the brain comes back, outside stays 0
    assert not inside[head.array == 0].any()


#: Small networks for the method tests.
SMALL = {"padim": {"channels": (4, 8, 8), "num_res_units": 0},
         "draem": {"channels": (4, 8, 8), "disc_channels": (8, 16), "num_res_units": 0}}  # fmt: skip


@pytest.mark.parametrize("name", ["normative", "padim", "draem"])
def test_methods_score_an_inserted_lesion_above_normal_brain(name):
    train = _split([_head(s) for s in range(3)])
    val_images, lesions = make_synthetic(train["images"], train["masks"], seed=1)
    val = {**train, "images": val_images, "lesions": lesions}
    params = SMALL.get(name, {})
    method = METHODS.get(name)(**params)
    method.fit(train, val, {"epochs": 2, "batch_size": 8, "eval_every": 1, "seed": 0})
    test = to_common(_head(9, lesion=True), size=24)
    clean = to_common(_head(9), size=24)
    maps = method.score(test.images, test.masks, test.rel_z)
    assert maps.shape == test.images.shape and np.isfinite(maps).all()
    restored = METHODS.get(name)(**params)
    restored.load_state(method.state())
    np.testing.assert_allclose(restored.score(test.images, test.masks, test.rel_z), maps, rtol=1e-4, atol=1e-5)
    if name == "normative":  # the classical z-score must see a 400-vs-150 blob
        lesion_px = np.abs(test.images - clean.images) > 0.2  # where the blob changed the ranks
        assert lesion_px.any()
        assert pixel_auroc(maps, lesion_px, test.masks) > 0.9


def test_autoencoder_selects_an_evaluated_epoch():
    train = _split([_head(s) for s in range(2)])
    images, lesions = make_synthetic(train["images"], train["masks"], seed=2)
    method = METHODS.get("autoencoder")(channels=(4, 8, 8), num_res_units=0)
    log = method.fit(train, {**train, "images": images, "lesions": lesions},
                     {"epochs": 3, "batch_size": 8, "eval_every": 1, "seed": 0})
    assert log["selected_epoch"] in {h["epoch"] for h in log["history"]}
    assert log["synthetic_val_pixel_auroc"] == max(h["synthetic_val_pixel_auroc"] for h in log["history"]) or \
        abs(log["synthetic_val_pixel_auroc"] - max(h["synthetic_val_pixel_auroc"] for h in log["history"])) < 1e-3


def test_draem_learns_to_segment_its_training_anomalies():
    """Trained 40 epochs on three small heads, the discriminator finds new blobs of its training family (an
    untrained one is at chance, 0.51-0.56 on these); the selected epoch is one the validation scored."""
    import torch

    from medanomaly.anomaly.synthetic import make_blobs

    torch.set_num_threads(1)
    train = _split([_head(s) for s in range(3)])
    images, lesions = make_synthetic(train["images"], train["masks"], seed=1)
    torch.manual_seed(0)
    method = METHODS.get("draem")(**SMALL["draem"])
    log = method.fit(train, {**train, "images": images, "lesions": lesions},
                     {"epochs": 40, "batch_size": 8, "eval_every": 20, "seed": 0, "lr": 5e-3})  # fmt: skip
    assert log["selected_epoch"] in {20, 40}
    blobs, where = make_blobs(train["images"], train["masks"], np.random.default_rng(5))
    maps = method.score(blobs, train["masks"], train["rel_z"])
    assert 0 <= maps.min() and maps.max() <= 1 and not maps[~train["masks"]].any()
    assert pixel_auroc(maps, where, train["masks"]) > 0.68


def test_training_blobs_change_only_brain_pixels_and_mark_what_changed():
    from medanomaly.anomaly.synthetic import make_blobs

    train = _split([_head(0), _head(1)])
    blobs, where = make_blobs(train["images"], train["masks"], np.random.default_rng(0))
    moved = np.abs(blobs - train["images"]) > 1e-6
    assert where.any() and 0 <= blobs.min() and blobs.max() <= 1
    assert not moved[~train["masks"]].any()  # never outside the brain
    assert (np.abs(blobs - train["images"])[where] > 0.05).all()  # marked = changed by more than 0.05
    assert 0.005 < where[train["masks"]].mean() < 0.1
    same, none = make_blobs(train["images"], train["masks"], np.random.default_rng(0), fraction=0.0)
    np.testing.assert_array_equal(same, train["images"])
    assert not none.any()


def test_synthetic_lesions_change_only_masked_slices():
    train = _split([_head(0)])
    images, lesions = make_synthetic(train["images"], train["masks"], seed=3, fraction=0.5)
    assert lesions.any()
    untouched = ~lesions.any(axis=(1, 2))
    np.testing.assert_array_equal(images[untouched], train["images"][untouched])


def test_lesion_cases_and_masks_are_refused_as_training_data(tmp_path):
    with pytest.raises(InputError, match="lesion case"):
        refuse_lesion_image(tmp_path / "brain1_image.nrrd")
    with pytest.raises(InputError, match="lesion mask"):
        refuse_lesion_image(tmp_path / "scan_label.nii.gz")
    (tmp_path / "subject.nii.gz").write_bytes(b"")
    (tmp_path / "subject_mask.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match="lesion mask beside it"):
        refuse_lesion_image(tmp_path / "subject.nii.gz")
    refuse_lesion_image(tmp_path / "healthy.nii.gz")  # no mask: accepted
    (tmp_path / "Subject_T1.nii.gz").write_bytes(b"")  # mixed case: the mask beside it is still found
    (tmp_path / "subject_t1_seg.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match="subject_t1_seg.nii.gz"):
        refuse_lesion_image(tmp_path / "Subject_T1.nii.gz")
    refuse_lesion_image(tmp_path / "missing" / "scan.nii.gz")  # no folder to list: reading it will say so


def test_a_missing_normal_brain_file_is_one_input_error(tmp_path):
    from medanomaly.anomaly.data import load_normal

    with pytest.raises(InputError, match="no such file, and not a normal brain name"):
        load_normal(str(tmp_path / "missing.nii.gz"))


def test_model_refuses_other_dimensionality_and_modality():
    from medanomaly.anomaly.model import AnomalyModel
    from medanomaly.engine.run import RunInfo

    info = RunInfo(task="anomaly", class_names=("anomaly",), input={"spatial_dims": 3, "modality": "MR"})
    model = AnomalyModel(info, ".", method=None)
    with pytest.raises(InputError, match="2D"):
        model.check_input(Volume(np.zeros((1, 8, 8), np.float32)))
    with pytest.raises(InputError, match="modality CT"):
        model.check_input(Volume(np.zeros((4, 8, 8), np.float32), meta={"modality": "CT"}))
    with pytest.raises(InputError, match=r"cine.mr: a 3D model needs slices in space, got a cine loop of 4 frames"):
        model.check_input(Volume(np.zeros((4, 8, 8), np.float32), meta={"frame_axis": "time"}), "cine.mr")
    model.check_input(_head())


def test_chest_exclusion_zone_grows_by_margin_in_mm():
    from medanomaly.anomaly.chest import exclusion_zone

    lesion = np.zeros((9, 41, 41), bool)
    lesion[4, 20, 20] = True
    zone = exclusion_zone(lesion, (1.0, 1.0, 5.0), 10.0)  # spacing x, y, z (mm)
    assert zone[4, 20, 30] and not zone[4, 20, 31]  # 10 mm in-plane = 10 voxels
    assert zone[6, 20, 20] and not zone[7, 20, 20]  # 10 mm along z = 2 slices of 5 mm


def test_chest_config_refuses_unknown_case_and_test_on_training_ct():
    from pydantic import ValidationError

    from medanomaly.anomaly.config import AnomalyConfig

    base = {"data": {"domain": "chest_ct", "train": ["lung1"], "val": ["lung1"]}, "evaluate": {"cases": ["lung2"]}}
    assert AnomalyConfig(**base).data.window == "lung"
    with pytest.raises(ValidationError, match="leave-one-patient-out"):
        AnomalyConfig(**{**base, "evaluate": {"cases": ["lung1"]}})
    with pytest.raises(ValidationError, match="chest_ct cases"):
        AnomalyConfig(**{**base, "evaluate": {"cases": ["brain1"]}})
    with pytest.raises(ValidationError, match="unknown CT window"):
        AnomalyConfig(data={"domain": "chest_ct", "train": ["lung1"], "window": "nope"})
    assert AnomalyConfig().data.domain == "brain_mr"  # the brain path is the default
    for domain in ({}, base["data"]):  # no test scan: evaluate, after the training, had nothing to concatenate
        with pytest.raises(ValidationError, match="evaluate.cases is empty: name the"):
            AnomalyConfig(data=domain, evaluate={"cases": []})
    assert AnomalyConfig(data={"domain": "folder2d", "folder": "f"}, evaluate={"cases": []})  # 2D: its test folder


def test_masked_normative_ignores_excluded_pixels():
    images = np.full((4, 6, 6), 0.3, np.float32)
    masks = np.ones((4, 6, 6), bool)
    images[0, :3] = 0.0  # an excluded zone, zeroed
    masks[0, :3] = False
    train = {"images": images, "masks": masks, "rel_z": np.zeros(4, np.float32)}
    method = METHODS.get("normative")(z_bins=1, masked=True)
    method.fit(train, train, {})
    np.testing.assert_allclose(method.mean[0], 0.3, atol=1e-6)
    plain = METHODS.get("normative")(z_bins=1)
    plain.fit(train, train, {})
    assert plain.mean[0, 0, 0] < 0.25  # the unmasked statistics would count the zeros


def test_chest_model_refuses_mr_and_non_hu_values():
    from medanomaly.anomaly.model import AnomalyModel
    from medanomaly.engine.run import RunInfo

    info = RunInfo(task="anomaly", class_names=("anomaly",), input={"spatial_dims": 3, "modality": "CT"})
    model = AnomalyModel(info, ".", method=None)
    with pytest.raises(InputError, match="trained on CT, got modality MR"):
        model.check_input(_head())
    with pytest.raises(InputError, match="not HU"):
        model.check_input(Volume(np.asarray(_head().array), spacing=(2.0, 2.0, 3.0)))
    ct = np.full((4, 8, 8), -1000.0, np.float32)
    model.check_input(Volume(ct, meta={"modality": "CT"}))


def test_ssim_map_is_the_local_ssim_with_border_windows_cut_at_the_image():
    """The float64 NumPy map equals the textbook local SSIM computed independently with torch's
    average pooling (padding not counted), borders included; identical images map to 1."""
    import torch
    import torch.nn.functional as F

    from medanomaly.anomaly.methods import residual_map, ssim_map

    rng = np.random.default_rng(1)
    x, y = rng.random((2, 20, 17)), rng.random((2, 20, 17))

    def pool(t: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(t[:, None])
        return F.avg_pool2d(t, 7, stride=1, padding=3, count_include_pad=False)[:, 0].numpy()

    mx, my = pool(x), pool(y)
    vx, vy, cxy = pool(x * x) - mx**2, pool(y * y) - my**2, pool(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    expected = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    assert np.abs(ssim_map(x, y) - expected).max() < 1e-12
    assert np.allclose(ssim_map(x, x), 1.0) and np.abs(residual_map(x, x, 0.5)).max() < 1e-6


def test_residual_map_is_stable_in_flat_tissue():
    """A reconstruction that moves by 3e-6 (float32 rounding between engines) moves the map well
    under the 1e-4 export limit on flat grey tissue: 2.3e-5 in float64, where the float32 local SSIM
    (torch average pooling) moved it by 2.3e-4 on these same arrays."""
    from medanomaly.anomaly.methods import residual_map

    rng = np.random.default_rng(2)
    x = (0.6 + 0.002 * rng.standard_normal((4, 96, 96))).astype(np.float32)
    rec = (x + 0.01 * rng.standard_normal(x.shape)).astype(np.float32)
    moved = rec + np.float32(3e-6) * rng.choice([-1, 1], size=x.shape).astype(np.float32)
    assert np.abs(residual_map(x, rec, 0.5) - residual_map(x, moved, 0.5)).max() < 5e-5


@pytest.mark.parametrize("name, params, words", [
    ("normative", {"z_bins": 0}, "normative z_bins must be a whole number in 1..256, got 0"),
    ("normative", {"z_bins": 100_000_000}, "z_bins must be a whole number in 1..256"),
    ("normative", {"z_bins": 2.5}, "z_bins must be a whole number"),
    ("normative", {"floor": float("nan")}, "normative floor must be a number above 0 and up to 1, got nan"),
    ("normative", {"floor": 0}, "floor must be a number above 0"),
    ("autoencoder", {"ssim_weight": 7}, "autoencoder ssim_weight must be a number in 0..1, got 7"),
    ("autoencoder", {"channels": []}, "channels must list 1 to 6 levels, got []"),
    ("autoencoder", {"channels": 5}, "channels must list 1 to 6 levels, got 5"),
    ("autoencoder", {"channels": [16, -4]}, "channels must be a whole number in 1..4096, got -4"),
    ("padim", {"eps": -1}, "padim eps must be a number above 0 and up to 100, got -1"),
    ("padim", {"num_res_units": True}, "num_res_units must be a whole number"),
    ("draem", {"disc_channels": []}, "draem disc_channels must list 1 to 6 levels, got []"),
    ("draem", {"channels": [8, 0]}, "draem channels must be a whole number in 1..4096, got 0"),
    ("draem", {"ssim_weight": -1}, "draem ssim_weight must be a number in 0..1, got -1"),
])  # fmt: skip
def test_method_parameters_out_of_range_are_one_config_error(name, params, words):
    """z_bins 0 was an IndexError in training, z_bins 1e8 a 381 GiB allocation; a NaN floor failed at the threshold,
    an ssim_weight of 7 or a negative PaDiM eps made nonsense maps silently."""
    from medanomaly.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        METHODS.create(name, **params)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_the_draem_brain_config_is_the_measured_recipe():
    """configs/anomaly_brain_draem.yaml is what docs/anomaly.md measured with the bench: anomaly_brain.yaml's data,
    draem's defaults, 300 epochs; its networks take the grid."""
    from pathlib import Path

    from medanomaly.config import load_config

    root = Path(__file__).resolve().parents[3] / "configs"
    draem, base = load_config(root / "anomaly_brain_draem.yaml"), load_config(root / "anomaly_brain.yaml")
    assert draem.data == base.data and draem.threshold == base.threshold and draem.evaluate == base.evaluate
    assert draem.train.epochs == 300 and draem.train.eval_every == base.train.eval_every and draem.seed == base.seed
    method = METHODS.create(draem.method.name, **draem.method.params)
    assert (method.ssim_weight, method.net.channels, method.net.disc_channels) == (0.5, (16, 32, 64), (16, 32, 64))
    method.check_grid(draem.data.size)
