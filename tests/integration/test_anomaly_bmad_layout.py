"""BMAD's folder layout (Benchmarks for Medical Anomaly Detection: train/good, valid/good, valid/Ungood, test/good,
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
