"""The normal-only 2D image loader (folder tree and MedMNIST-style .npz) on small files written here."""

from __future__ import annotations

import numpy as np
import pytest

from medanomaly.data.image_folders import load_normal_images, to_grey
from medanomaly.errors import InputError
from medanomaly.io import write
from medanomaly.types import Volume


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    write(Volume(np.asarray(array, np.uint8)[None]), path)


def _tree(root, n=3):
    rng = np.random.default_rng(0)
    for part in ("train/normal", "val/normal", "test/normal", "test/abnormal"):
        for i in range(n):
            _png(root / part / f"img{i}.png", rng.integers(0, 200, (12, 10)))
    _png(root / "test/masks/img0.png", np.pad(np.full((2, 2), 255), ((5, 5), (4, 4))))
    return root


def test_folder_tree_with_masks(tmp_path):
    images = load_normal_images(_tree(tmp_path))
    assert images.layout == "folders" and (len(images.train), len(images.val), len(images.test)) == (3, 3, 6)
    assert not any(im.abnormal for im in images.train + images.val)
    abnormal = [im for im in images.test if im.abnormal]
    assert len(abnormal) == 3 and abnormal[0].mask is not None and abnormal[0].mask.sum() == 4
    assert abnormal[1].mask is None and images.train[0].array.shape == (12, 10)


def test_folder_tree_refusals(tmp_path):
    root = _tree(tmp_path / "a")
    _png(root / "train/abnormal/x.png", np.zeros((12, 10)))
    with pytest.raises(InputError, match="train/abnormal/ holds images"):
        load_normal_images(root)
    root = _tree(tmp_path / "b")
    for f in (root / "val/normal").iterdir():
        f.unlink()
    with pytest.raises(InputError, match="no images in val/normal"):
        load_normal_images(root)
    with pytest.raises(InputError, match="not found"):
        load_normal_images(tmp_path / "missing")


def test_a_file_that_cannot_be_used_is_reported_and_left_out_as_in_a_batch(tmp_path, caplog):
    """A 3D volume, an empty or a non-image file, or a mask of another size stopped the whole run at the first one
    (one run per bad file to find them all); each is now one logged line, listed in the set, and the rest load. A
    part left with no usable image is still refused."""
    root = _tree(tmp_path / "c")
    write(Volume(np.zeros((4, 12, 10), np.float32)), root / "train/normal/volume.nii.gz")
    (root / "train/normal/empty.png").write_bytes(b"")
    (root / "val/normal/text.png").write_text("not a picture")
    _png(root / "val/normal/row.png", np.zeros((1, 10)))  # was resized up to the grid and trained on
    spot = np.full((1, 12, 10), 90.0)
    spot[0, 3, 3] = np.nan  # became an all-zero image, trained on without a word
    write(Volume(spot), root / "train/normal/spot.nrrd")
    _png(root / "test/masks/img1.png", np.zeros((6, 6)))
    from PIL import Image  # an abnormal image stored mirrored (EXIF 2) whose mask has no tag: mask left out

    exif = Image.Exif()
    exif[0x0112] = 2
    Image.fromarray(np.full((12, 10), 90, np.uint8)).save(root / "test/abnormal/img9.png", exif=exif)
    _png(root / "test/masks/img9.png", np.zeros((12, 10)))
    with caplog.at_level("WARNING", logger="medanomaly.data.image_folders"):
        images = load_normal_images(root)
    assert (len(images.train), len(images.val), len(images.test)) == (3, 3, 7)
    assert images.skipped == ("train/normal/empty.png: empty file",
                              "train/normal/spot.nrrd: image has 1 NaN/infinite voxels; fill or crop them first",
                              "train/normal/volume.nii.gz: a 3D image (4 slices) in a 2D image folder",
                              "val/normal/row.png: image too small: 1 x 10 pixels (a model takes at least 4 along "
                              "each axis)",
                              "val/normal/text.png: not a readable png image (corrupt or truncated)",
                              "test/masks/img1.png: mask (6, 6) and image (12, 10) differ in size",
                              "test/masks/img9.png: the image is turned by EXIF orientation 2 and the mask by 1 (1: "
                              "as stored): which way the mask was drawn is unknown; save both with one orientation")
    assert [r.getMessage() for r in caplog.records] == [f"skipped {line}" for line in images.skipped]
    assert next(im for im in images.test if im.name == "img1.png" and im.abnormal).mask is None  # kept, unmasked
    for f in (root / "val/normal").glob("img*.png"):
        f.write_bytes(b"")
    with pytest.raises(InputError, match=r"no usable image in val/normal/ \(10 file\(s\) skipped: train/normal/empty"):
        load_normal_images(root)


def test_medmnist_style_npz(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in (("train", 6), ("val", 4), ("test", 5)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(-1, 1)
    arrays["test_masks"] = np.ones((5, 8, 8), np.uint8)
    np.savez(tmp_path / "set.npz", **arrays)
    images = load_normal_images(tmp_path / "set.npz", normal_label=0)
    assert (len(images.train), len(images.val), len(images.test)) == (3, 2, 5)
    assert images.excluded == 5  # 3 + 2 training/validation images of label 1 left out
    assert images.grey_from_rgb == 10 and images.test[1].abnormal and images.test[1].mask.all()
    assert images.test[0].mask is None
    arrays["train_images"] = rng.integers(0, 255, (6, 4, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "set3d.npz", **arrays)
    with pytest.raises(InputError, match="3D images"):
        load_normal_images(tmp_path / "set3d.npz")


def test_rgb_to_grey_uses_luma_weights():
    rgb = np.zeros((1, 2, 2, 3), np.uint8)
    rgb[..., 0] = 100  # pure red
    grey, colour = to_grey(rgb)
    assert colour and grey[0, 0] == pytest.approx(29.9, abs=1e-3)
    grey, colour = to_grey(np.full((1, 2, 2), 7))
    assert not colour and grey.shape == (2, 2)
    with pytest.raises(InputError, match="3D image"):
        to_grey(np.zeros((3, 5, 6)))
