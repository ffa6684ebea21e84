"""Malignancy on real LIDC ratings: mask and CT patches, labels from the median rating, patient splits."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from medanomaly.data import lidc_malignancy
from medanomaly.data.lidc_malignancy import load_lidc_malignancy, mask_patch
from medanomaly.data.lidc_shapes import load_library, malignancy_class
from medanomaly.errors import InputError
from medanomaly.registry import DATASETS
from medanomaly.synth.insert import SimpleShape

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "lung_malignancy_lidc.yaml"


def _check_splits(data) -> None:
    for pid in np.unique(data.patient_ids):
        assert len(set(data.splits[data.patient_ids == pid])) == 1


def test_mask_patch_keeps_physical_size_and_is_centred():
    ball = SimpleShape.ball(12.0, spacing_xyz=(0.7, 0.7, 2.5))
    patch = mask_patch(ball, patch_mm=40.0, size=(32, 32, 32))
    voxel = (40.0 / 32) ** 3
    assert patch.shape == (32, 32, 32) and 0.0 <= patch.min() and patch.max() <= 1.0
    assert patch.sum() * voxel == pytest.approx(ball.binary.sum() * 0.7 * 0.7 * 2.5, rel=0.03)
    centre = (np.argwhere(patch > 0) * patch[patch > 0][:, None]).sum(0) / patch.sum()
    assert np.allclose(centre, 15.5, atol=0.3)


def test_mask_input_labels_and_patient_splits():
    data = DATASETS.create("lidc_malignancy", input="mask", max_per_split=12)
    lib = load_library()
    assert len(data) == 36 and data.images.shape == (36, 1, 32, 32, 32)
    assert data.class_names == ("benign", "uncertain", "malignant") and not data.synthetic
    idx = [int(np.flatnonzero(lib.nodule_ids == k)[0]) for k in data.keys]
    expected = [malignancy_class(lib.rating("malignancy")[i]) for i in idx]
    assert [data.class_names[y] for y in data.labels] == expected
    assert list(data.splits) == list(lib.splits[idx]) and sorted(set(data.splits)) == ["test", "train", "val"]
    _check_splits(data)
    assert all(data.images[k].sum() > 0 for k in range(len(data)))


def test_binary_classes_drop_rating_three():
    data = load_lidc_malignancy(input="mask", class_names=("benign", "malignant"), max_per_split=10)
    lib = load_library()
    medians = [lib.rating("malignancy")[int(np.flatnonzero(lib.nodule_ids == k)[0])] for k in data.keys]
    assert set(data.labels.tolist()) <= {0, 1} and all(m != 3 for m in medians)
    assert all((m > 3) == bool(y) for m, y in zip(medians, data.labels, strict=True))


def test_bad_parameters_are_input_errors():
    with pytest.raises(InputError, match="unknown input"):
        load_lidc_malignancy(input="pet")
    with pytest.raises(InputError, match="3D, one channel"):
        load_lidc_malignancy(image_size=(32, 32))
    with pytest.raises(InputError, match="unknown class"):
        load_lidc_malignancy(class_names=("benign", "cancer"))
    with pytest.raises(InputError, match="no LIDC nodule left"):
        load_lidc_malignancy(min_diameter_mm=99.0)


@functools.lru_cache(maxsize=1)
def _slab_background():
    """Twelve slices of the real lung1 CT around its middle (its real nodule left out), prepared once."""
    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.io import read
    from medanomaly.preprocess.segment import lung_mask
    from medanomaly.synth.insert import prepare_background
    from medanomaly.types import Volume

    full = read(pyradiomics_case("lung1")[0])
    z0 = 16
    ct = Volume(np.asarray(full.array)[z0:z0 + 12], spacing=full.spacing, origin=full.index_to_physical([0, 0, z0]),
                direction=full.direction, meta={"modality": "CT"})
    return prepare_background(ct, lung=lung_mask(ct), name="lung1")


def test_ct_input_inserts_real_shapes_and_caches(tmp_path, monkeypatch):
    # the full lung masks take a while; a 12-slice slab of lung1 stands in for the background
    monkeypatch.setattr(lidc_malignancy, "_backgrounds", lambda sources: {s: _slab_background() for s in sources})
    kw = {"input": "ct", "sources": ("lung1",), "max_per_split": 3, "cache_dir": tmp_path}
    data = load_lidc_malignancy(**kw)
    assert data.synthetic and data.intensity == "ct_lung" and 1 <= len(data) <= 9
    _check_splits(data)
    centre = data.images[:, 0, 14:18, 14:18, 14:18].mean(axis=(1, 2, 3))
    lung_level = (-850 + 1000) / 1400  # aerated lung in the lung window
    assert np.all(centre > lung_level + 0.05)  # a nodule (> about -780 HU) sits at the centre of every patch
    assert len(list(tmp_path.glob("lidc_malignancy_ct_*.npz"))) == 1
    monkeypatch.setattr(lidc_malignancy, "_backgrounds", lambda sources: pytest.fail("cache not used"))
    again = load_lidc_malignancy(**kw)
    assert np.array_equal(again.images, data.images) and list(again.keys) == list(data.keys)


def test_the_config_feeds_the_classification_task():
    import yaml

    from medanomaly.classify.engine import load_data
    from medanomaly.config import parse_config

    raw = yaml.safe_load(CONFIG.read_text())
    assert raw["data"]["dataset"]["name"] == "lidc_malignancy"
    raw["data"]["dataset"]["params"] = {"input": "mask", "max_per_split": 15}
    data = load_data(parse_config(raw, CONFIG))
    assert len(data) == 45 and set(data.splits) == {"train", "val", "test"}
    _check_splits(data)
