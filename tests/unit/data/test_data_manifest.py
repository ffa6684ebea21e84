"""Manifest and MedMNIST loaders: content and the clear errors a user sees before training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medanomaly.data.arrays import to_model_array
from medanomaly.data.manifest import load_manifest
from medanomaly.data.medmnist import load_medmnist
from medanomaly.errors import InputError


@pytest.fixture
def pngs(tmp_path: Path) -> Path:
    import SimpleITK as sitk

    for i in range(3):
        arr = np.full((12, 10), 40 * i, np.uint8)
        arr[3:6, 3:6] = 250
        sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / f"im{i}.png"))
    return tmp_path


def _csv(folder: Path, rows: list[str], header: str = "path,label,patient_id,split") -> Path:
    path = folder / "m.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_data_manifest_loads_labels_splits_and_size(pngs: Path) -> None:
    csv = _csv(pngs, ["im0.png,normal,P1,train", "im1.png,abnormal,P2,val", "im2.png,normal,P3,test"])
    data = load_manifest(csv, image_size=(8, 8))
    assert data.class_names == ("abnormal", "normal")
    assert data.labels.tolist() == [1, 0, 1]
    assert data.splits.tolist() == ["train", "val", "test"]
    assert data.images.shape == (3, 1, 8, 8)
    assert 0.0 <= data.images.min() and data.images.max() <= 1.0


@pytest.mark.parametrize(
    ("rows", "header", "match"),
    [
        (["im0.png,cancer,P1,train"], None, "unknown label 'cancer'"),
        (["missing.png,normal,P1,train"], None, "do not exist: missing.png"),
        (["im0.png,normal,P1,holdout"], None, "unknown split 'holdout'"),
        (["im0.png,normal"], "path,label", r"lacks column\(s\) \['patient_id'\]"),
        (["im0.png,,P1,train"], None, "empty 'label'"),
    ],
)
def test_data_manifest_bad_input_is_a_clear_error(pngs: Path, rows, header, match) -> None:
    csv = _csv(pngs, rows, header or "path,label,patient_id,split")
    with pytest.raises(InputError, match=match):
        load_manifest(csv, class_names=("normal", "abnormal"), image_size=(8, 8))


def test_data_manifest_wrong_channel_count_is_a_clear_error(pngs: Path) -> None:
    csv = _csv(pngs, ["im0.png,normal,P1,train"])
    with pytest.raises(InputError, match=r"im0\.png: image has 1 channel\(s\), the config expects 3"):
        load_manifest(csv, image_size=(8, 8), channels=3)  # the file is named: the manifest may list thousands
    with pytest.raises(InputError, match="has 3 channel"):
        to_model_array(np.zeros((1, 8, 8, 3)), (4, 4), channels=1)


def test_data_manifest_image_too_small_is_named(pngs: Path) -> None:
    """A 1 x 10 picture was resized up to the model's grid and trained on without a word."""
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((1, 10), np.uint8)), str(pngs / "row.png"))
    csv = _csv(pngs, ["im0.png,normal,P1,train", "row.png,abnormal,P2,train"])
    with pytest.raises(InputError, match=r"row\.png: image too small: 1 x 10 pixels"):
        load_manifest(csv, image_size=(8, 8))


def test_data_manifest_image_with_nan_or_values_float32_cannot_hold_is_named(pngs: Path) -> None:
    """A NaN image's percentiles were NaN and it became an all-zero image, trained on without a word; one of values
    up to 1e300 overflowed float32 (numpy's warning) and became one too."""
    from medanomaly.io import write
    from medanomaly.types import Volume

    for name, bad, why in (("nan.nrrd", np.nan, "1 NaN/infinite voxels"), ("huge.nrrd", 1e300, "1 voxels beyond float32")):
        image = np.random.default_rng(0).random((1, 8, 8))
        image[0, 2, 2] = bad
        write(Volume(image), pngs / name)
        csv = _csv(pngs, ["im0.png,normal,P1,train", f"{name},abnormal,P2,train"])
        with pytest.raises(InputError, match=rf"{name}: image has {why}"):
            load_manifest(csv, image_size=(8, 8))


def test_data_to_model_array_refuses_dimension_mismatch() -> None:
    with pytest.raises(InputError, match="cannot feed a 3D model"):
        to_model_array(np.zeros((8, 8)), (4, 4, 4))
    with pytest.raises(InputError, match="cannot feed a 2D model"):
        to_model_array(np.zeros((3, 8, 8)), (4, 4))
    assert to_model_array(np.zeros((3, 8, 8)), (4, 4, 4)).shape == (1, 4, 4, 4)


def test_data_medmnist_rejects_foreign_and_multilabel_files(tmp_path: Path) -> None:
    rgb = tmp_path / "pathmnist.npz"
    np.savez(rgb, **{f"{s}_images": np.zeros((2, 28, 28, 3), np.uint8) for s in ("train", "val", "test")},
             **{f"{s}_labels": np.zeros((2, 1), np.uint8) for s in ("train", "val", "test")})
    with pytest.raises(InputError, match=r"pathmnist\.npz: image has 3 channel"):
        load_medmnist(rgb, image_size=(28, 28), channels=1)
    bad = tmp_path / "x.npz"
    np.savez(bad, images=np.zeros((2, 4, 4)))
    with pytest.raises(InputError, match="missing arrays"):
        load_medmnist(bad)
    multi = tmp_path / "chestmnist.npz"
    np.savez(multi, **{f"{s}_images": np.zeros((2, 28, 28), np.uint8) for s in ("train", "val", "test")},
             **{f"{s}_labels": np.zeros((2, 14), np.uint8) for s in ("train", "val", "test")})
    with pytest.raises(InputError, match="multi-label"):
        load_medmnist(multi)


def test_data_ct_window_keeps_absolute_hu() -> None:
    from medanomaly.data.arrays import map_intensity

    ggo, solid = np.full((4, 4), -500.0), np.full((4, 4), 40.0)
    assert map_intensity(ggo, "ct_lung").mean() < map_intensity(solid, "ct_lung").mean()
    np.testing.assert_allclose(map_intensity(np.array([-1000.0, 400.0, 2000.0]), "ct_lung"), [0.0, 1.0, 1.0])
    with pytest.raises(InputError, match="unknown intensity mode"):
        map_intensity(ggo, "ct_bone")


def test_a_manifest_whose_arrays_would_not_fit_in_memory_is_refused_before_reading(tmp_path, monkeypatch):
    """Each row becomes a float32 model array; a million rows at 224 x 224 (400 GB) would have been read until the
    kernel stopped the process. The estimate is checked first, against what the machine has available."""
    from medanomaly.data import manifest
    from medanomaly.errors import InputError

    def no_reading(*_args, **_kwargs):
        raise AssertionError("an image was read before the memory check")

    csv_path = tmp_path / "m.csv"
    csv_path.write_text("path,label,patient_id\n" + "".join(f"i{k}.nrrd,a,P{k}\n" for k in range(3)))
    for k in range(3):
        (tmp_path / f"i{k}.nrrd").write_bytes(b"")
    monkeypatch.setattr("medanomaly.io.read", no_reading)
    monkeypatch.setattr("medanomaly.io.limits.available_memory_bytes", lambda: 1_000_000)
    with pytest.raises(InputError) as caught:
        manifest.load_manifest(csv_path, image_size=(224, 224), channels=3)
    assert str(caught.value) == (f"{csv_path}: 3 images of 224 x 224 x 3 need about 3.445 MiB of memory but "
                                 "976.6 KiB is available: use fewer rows or a smaller data.image_size")  # fmt: skip
