"""Patient-level splits, k-fold and class-presence checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medanomaly.data.splits import check_classes_present, check_patient_splits, patient_kfold, patient_split
from medanomaly.errors import InputError


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 2)), min_size=1, max_size=120),
       st.integers(0, 5))
def test_data_split_never_puts_a_patient_in_two_splits(items, seed) -> None:
    pids = np.array([f"P{p}" for p, _ in items])
    labels = np.array([lab for _, lab in items])
    splits = patient_split(pids, labels, val=0.2, test=0.2, seed=seed)
    check_patient_splits(pids, splits)  # raises on leakage
    for pid in np.unique(pids):
        assert len(set(splits[pids == pid].tolist())) == 1


def test_data_split_is_stratified_and_deterministic() -> None:
    pids = np.repeat(np.arange(60), 2).astype(str)
    labels = np.repeat(np.arange(60) % 3, 2)
    a = patient_split(pids, labels, val=0.2, test=0.2, seed=1)
    np.testing.assert_array_equal(a, patient_split(pids, labels, val=0.2, test=0.2, seed=1))
    for split in ("val", "test"):
        counts = np.bincount(labels[a == split], minlength=3)
        assert counts.tolist() == [8, 8, 8]  # 4 patients x 2 images per class


def test_data_split_checks_reject_leaks_and_missing_classes() -> None:
    with pytest.raises(InputError, match="more than one split"):
        check_patient_splits(np.array(["a", "a"]), np.array(["train", "test"]))
    with pytest.raises(InputError, match=r"\['b'\] have no samples in the 'val' split"):
        check_classes_present(np.array([0, 1, 0]), np.array(["train", "train", "val"]), ("a", "b"))
    with pytest.raises(InputError, match="fractions"):
        patient_split(np.array(["a"]), np.array([0]), val=0.6, test=0.5)


def test_data_kfold_folds_are_disjoint_by_patient() -> None:
    pids = np.repeat(np.arange(20), 3).astype(str)
    labels = np.repeat(np.arange(20) % 2, 3)
    seen = []
    for train, val in patient_kfold(pids, labels, k=4, seed=0):
        assert not set(pids[train]) & set(pids[val])
        seen.extend(val.tolist())
    assert sorted(seen) == list(range(60))
    with pytest.raises(InputError):
        next(patient_kfold(pids, labels, k=50))
