"""BMAD's and MVTec AD's folder layouts read as our own tree is (MVTec AD's at the end). BMAD's layout (Benchmarks for
Medical Anomaly Detection: train/good, valid/good, valid/Ungood, test/good,
test/Ungood, with img/ and label/ in its pixel-level sets) read as our own tree is: the same images and masks, written
here in exactly that layout from the 2D fixture (real MNI152 slices, SYNTHETIC lesions); valid/Ungood's labelled
anomalies are never used; a lesion image in train is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from medanomaly.data.image_folders import load_normal_images
from medanomaly.errors import InputError

from .test_anomaly_2d_cli import write_folder


def _as_bmad(ours: Path, root: Path, pixel_level: bool) -> Path:
    """Our tree copied into BMAD's layout (pixel-level: each part's images in img/, masks in test/Ungood/label)."""
    where = {"train/normal": "train/good", "val/normal": "valid/good", "test/normal": "test/good",
             "test/abnormal": "test/Ungood"}  # fmt: skip
    for part, bmad in where.items():
        target = root / bmad / ("img" if pixel_level else "")
        shutil.copytree(ours / part, target)
    if pixel_level:
        shutil.copytree(ours / "test/masks", root / "test/Ungood/label")
        shutil.copytree(ours / "test/abnormal", root / "valid/Ungood/img")  # labelled anomalies: must stay unused
    return root


@pytest.mark.parametrize("pixel_level", [True, False])
def test_a_bmad_tree_reads_as_our_own(tmp_path, pixel_level) -> None:
    ours = load_normal_images(write_folder(tmp_path / "ours"))
    bmad = load_normal_images(_as_bmad(tmp_path / "ours", tmp_path / "bmad", pixel_level))
    assert bmad.layout == "bmad" and bmad.excluded == (5 if pixel_level else 0) and not bmad.skipped
    for part in ("train", "val", "test"):
        a, b = getattr(ours, part), getattr(bmad, part)
        assert [(i.name, i.abnormal) for i in a] == [(i.name, i.abnormal) for i in b]
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x.array, y.array)
            if not pixel_level:  # image-level sets have no label/ folder
                assert y.mask is None
            elif x.mask is None:
                assert y.mask is None
            else:
                np.testing.assert_array_equal(x.mask, y.mask)
    assert all("Ungood" not in str(i.path) for i in bmad.val)


def test_a_lesion_image_in_bmads_train_is_refused(tmp_path) -> None:
    root = _as_bmad(write_folder(tmp_path / "ours"), tmp_path / "bmad", pixel_level=True)
    shutil.copytree(root / "test/Ungood/img", root / "train/Ungood/img")
    with pytest.raises(InputError, match="train/Ungood/ holds images: train must be normal images only"):
        load_normal_images(root)
    shutil.rmtree(root / "train/Ungood")
    shutil.rmtree(root / "valid/good")
    with pytest.raises(InputError, match=r"no images in valid/good/ \(BMAD layout"):
        load_normal_images(root)


def _as_mvtec(ours: Path, root: Path) -> Path:
    """Our tree copied into MVTec AD's layout: train/good (train and val together), test/good, test/<kind>/ and
    ground_truth/<kind>/<stem>_mask.png; the abnormal images split over two kinds, their file names repeated."""
    (root / "train" / "good").mkdir(parents=True)
    for part in ("train/normal", "val/normal"):
        for f in sorted((ours / part).iterdir()):
            shutil.copy(f, root / "train" / "good" / f"{part.split('/')[0]}_{f.name}")
    shutil.copytree(ours / "test/normal", root / "test/good")
    for k, f in enumerate(sorted((ours / "test/abnormal").iterdir())):
        kind = ("bright", "dark")[k % 2]
        (root / "test" / kind).mkdir(parents=True, exist_ok=True)
        (root / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, root / "test" / kind / f"{k // 2:03d}.png")
        shutil.copy(ours / "test/masks" / f.name, root / "ground_truth" / kind / f"{k // 2:03d}_mask.png")
    return root


def test_an_mvtec_tree_reads_with_a_normal_validation_split_from_train(tmp_path) -> None:
    """MVTec AD's layout (anomalib's) has no validation split: every fifth training image is held out as normal
    validation, never a test image; test images are named by their kind, masks found by <stem>_mask."""
    ours = load_normal_images(write_folder(tmp_path / "ours"))
    mvtec = load_normal_images(_as_mvtec(tmp_path / "ours", tmp_path / "mvtec"))
    n_train_good = len(ours.train) + len(ours.val)
    assert mvtec.layout == "mvtec" and len(mvtec.val) == n_train_good // 5
    assert len(mvtec.train) + len(mvtec.val) == n_train_good
    assert {i.path.parent.name for i in mvtec.val} == {"good"} and all("test" not in i.path.parts for i in mvtec.val)
    abnormal = [i for i in mvtec.test if i.abnormal]
    assert sorted(i.name for i in abnormal) == ["bright/000.png", "bright/001.png", "bright/002.png", "dark/000.png",
                                                "dark/001.png"]
    truth = {i.name: i for i in ours.test if i.abnormal}
    for k, name in enumerate(sorted(truth)):
        mine = next(i for i in abnormal if i.name == f"{('bright', 'dark')[k % 2]}/{k // 2:03d}.png")
        np.testing.assert_array_equal(mine.array, truth[name].array)
        np.testing.assert_array_equal(mine.mask, truth[name].mask)
    shutil.copytree(tmp_path / "mvtec" / "test" / "dark", tmp_path / "mvtec" / "train" / "dark")
    with pytest.raises(InputError, match="train/dark/ holds images: train must be normal images only"):
        load_normal_images(tmp_path / "mvtec")
