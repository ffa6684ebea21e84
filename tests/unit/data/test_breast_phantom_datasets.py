"""The SYNTHETIC breast datasets in the registry: lesion sets cached once, classification views."""

from __future__ import annotations

import numpy as np
import pytest

from medanomaly.errors import InputError
from medanomaly.registry import DATASETS


def test_mammo_phantom_lesions_are_written_once_and_read_back(tmp_path):
    first = DATASETS.create("mammo_phantom_lesions", n_patients=6, size=64, seed=3, cache_dir=tmp_path)
    folders = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(folders) == 1 and folders[0].name.startswith("mammo_lesions_v2_")
    assert (folders[0] / "README.txt").read_text().startswith("SYNTHETIC")
    stamp = (folders[0] / "images.csv").stat().st_mtime_ns
    again = DATASETS.create("mammo_phantom_lesions", n_patients=6, size=64, seed=3, cache_dir=tmp_path)
    assert (folders[0] / "images.csv").stat().st_mtime_ns == stamp  # read from the cache, not redrawn
    assert first.synthetic and again.synthetic and first.source == "mammo_phantom"
    assert [it.key for it in first] == [it.key for it in again]
    for a, b in zip(first, again, strict=True):
        assert a.image.meta["synthetic"] is True and a.image.modality == "MG"
        assert [les.box_px for les in a.lesions] == [les.box_px for les in b.lesions]
    pids = {}
    for it in first:
        pids.setdefault(it.patient_id, set()).add(it.split)
    assert all(len(s) == 1 for s in pids.values())


def test_us_phantom_lesions_and_classification_view(tmp_path):
    lesions = DATASETS.create("us_phantom_lesions", n_patients=9, size=[64, 64], seed=1, normal_fraction=0.0,
                              cache_dir=tmp_path)
    assert lesions.synthetic and all(it.image.modality == "US" for it in lesions)
    assert all(len(it.lesions) == 1 for it in lesions)
    data = DATASETS.create("us_phantom", n_patients=9, size=[64, 64], seed=1, cache_dir=tmp_path,
                           image_size=(32, 32), channels=1)
    assert data.synthetic and data.class_names == ("benign", "uncertain", "malignant")
    assert data.images.shape == (len(lesions), 1, 32, 32)
    by_key = {it.key: it for it in lesions}
    for key, label, split in zip(data.keys, data.labels, data.splits, strict=True):
        assert data.class_names[label] == by_key[key].label and split == by_key[key].split
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 1  # the classification view reuses the cohort


def test_mammo_phantom_classification_cache_carries_the_phantom_version(tmp_path):
    data = DATASETS.create("mammo_phantom", n_patients=9, size=48, seed=2, two_view_fraction=0.0,
                           cache_dir=tmp_path, image_size=(48, 48))
    assert data.synthetic and len(data) == 9 and sorted(set(data.labels.tolist())) == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()][0].startswith("mammo_v2_")
    assert np.all(np.isin(data.splits, ("train", "val", "test")))


def test_lesion_crops_of_the_phantom_keep_classes():
    from medanomaly.data.lesion_samples import lesion_crops
    from medanomaly.synth.mammo import make_lesion_cohort

    cohort = make_lesion_cohort(n_patients=6, size=96, seed=5, normal_fraction=0.0, two_view_fraction=0.0)
    crops = lesion_crops(cohort, (24, 24))
    n = sum(len(it.lesions) for it in cohort)
    assert len(crops) == n and crops.synthetic
    assert [crops.class_names[i] for i in crops.labels] == [les.label for it in cohort for les in it.lesions]
    with pytest.raises(InputError, match="no lesions"):
        lesion_crops(cohort.split("nothing"))
