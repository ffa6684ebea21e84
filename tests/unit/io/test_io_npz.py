"""MedMNIST-format .npz archives (fixtures written in the real key layout)."""

from __future__ import annotations

import numpy as np
import pytest

from medanomaly.errors import InputError
from medanomaly.io import read
from medanomaly.io.npz import load_medmnist


def medmnist(path, shape, n=(6, 2, 3), label_cols=1, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n, strict=True):
        arrays[f"{split}_images"] = rng.integers(0, 256, (count, *shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (count, label_cols), dtype=np.uint8)
    np.savez_compressed(path, **arrays)
    return arrays


def test_io_npz_2d_grey(tmp_path):
    arrays = medmnist(tmp_path / "pneumoniamnist.npz", (28, 28))
    vol = read(tmp_path / "pneumoniamnist.npz")
    np.testing.assert_array_equal(vol.array, arrays["train_images"])
    assert vol.shape == (6, 28, 28) and vol.meta["n_frames"] == 6
    test = read(tmp_path / "pneumoniamnist.npz", split="test")
    np.testing.assert_array_equal(test.array, arrays["test_images"])
    splits = load_medmnist(tmp_path / "pneumoniamnist.npz")
    assert set(splits) == {"train", "val", "test"}
    np.testing.assert_array_equal(splits["val"].labels, arrays["val_labels"])


def test_io_npz_colour_and_3d(tmp_path):
    medmnist(tmp_path / "dermamnist.npz", (28, 28, 3))
    vol = read(tmp_path / "dermamnist.npz")
    assert vol.n_components == 3 and vol.shape == (6, 28, 28)
    arrays = medmnist(tmp_path / "nodulemnist3d.npz", (28, 28, 28))
    vol3d = read(tmp_path / "nodulemnist3d.npz")
    assert vol3d.shape == (28, 28, 28)
    np.testing.assert_array_equal(vol3d.array, arrays["train_images"][0])
    assert load_medmnist(tmp_path / "nodulemnist3d.npz")["train"].is_3d


def test_io_npz_bad_archives(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(InputError, match="no MedMNIST keys"):
        read(tmp_path / "other.npz")
    np.savez(tmp_path / "nolabels.npz", train_images=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(InputError, match="without 'train_labels'"):
        read(tmp_path / "nolabels.npz")
    np.savez(tmp_path / "mismatch.npz", train_images=np.zeros((2, 4, 4), np.uint8), train_labels=np.zeros((3, 1)))
    with pytest.raises(InputError, match="do not match"):
        read(tmp_path / "mismatch.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(InputError, match="junk.npz: not a readable .npz"):
        read(tmp_path / "junk.npz")
    np.savez(tmp_path / "pickled.npz", train_images=np.array([{"a": 1}], dtype=object), train_labels=np.zeros((1, 1)))
    with pytest.raises(InputError, match="pickled.npz"):
        read(tmp_path / "pickled.npz")


def test_io_npz_damaged_archive(tmp_path):
    """A compressed member with damaged bytes (zlib error) is one InputError naming the file."""
    import random

    medmnist(tmp_path / "m.npz", (28, 28), n=(50, 2, 2))
    data = (tmp_path / "m.npz").read_bytes()
    rng = random.Random(1)
    raised = 0
    for _trial in range(40):
        damaged = bytearray(data)
        start = rng.randrange(len(damaged))
        for i in range(start, min(len(damaged), start + 50)):
            damaged[i] = rng.randrange(256)
        (tmp_path / "d.npz").write_bytes(bytes(damaged))
        try:
            read(tmp_path / "d.npz")
        except InputError as exc:
            raised += 1
            assert "d.npz" in str(exc)
    assert raised > 5
