"""Patient-level splits: every image of a patient lands in one split, and that is checked.

Images of one patient are correlated (same anatomy, same scanner), so a split by image leaks the
test set into training and inflates every metric. These functions split by patient, stratified by
each patient's most severe (highest-index) label where scikit-learn can, and
:func:`check_patient_splits` refuses any overlap.

Example:
    >>> import numpy as np
    >>> pids = np.array(["a", "a", "b", "c", "d", "e", "f", "g", "h", "i"])
    >>> labels = np.array([0, 0, 1, 0, 1, 0, 1, 0, 1, 0])
    >>> s = patient_split(pids, labels, val=0.2, test=0.2, seed=0)
    >>> check_patient_splits(pids, s)
    >>> sorted(set(s.tolist()))
    ['test', 'train', 'val']
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from medanomaly.errors import InputError


def _patient_table(patient_ids: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique patients, their stratum (max label) and the inverse index image -> patient."""
    uniq, inverse = np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)
    strata = np.zeros(len(uniq), dtype=np.int64)
    np.maximum.at(strata, inverse, np.asarray(labels, dtype=np.int64))
    return uniq, strata, inverse


def _take(rng: np.random.Generator, patients: np.ndarray, strata: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask over ``patients`` choosing about ``fraction`` of each stratum (at least one
    per stratum when the stratum has two or more patients and fraction > 0)."""
    chosen = np.zeros(len(patients), dtype=bool)
    if fraction <= 0:
        return chosen
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        members = members[rng.permutation(len(members))]
        k = int(round(fraction * len(members)))
        if k == 0 and len(members) >= 2:
            k = 1
        chosen[members[:k]] = True
    return chosen


def patient_split(
    patient_ids: np.ndarray,
    labels: np.ndarray,
    val: float = 0.15,
    test: float = 0.15,
    seed: int = 0,
) -> np.ndarray:
    """Assign each image to "train", "val" or "test" so that no patient is in two splits.

    Patients are stratified by their highest label, so every class with enough patients appears in
    every split. Deterministic for a given ``seed``.

    Args:
        patient_ids: (N,) patient id per image.
        labels: (N,) class index per image.
        val, test: fractions of patients in the validation and test splits.
        seed: random seed.

    Returns:
        (N,) array of split names.
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise InputError(f"split fractions val={val}, test={test} must be in [0, 1) and sum below 1")
    rng = np.random.default_rng(seed)
    uniq, strata, inverse = _patient_table(patient_ids, labels)
    is_test = _take(rng, uniq, strata, test)
    rest = np.flatnonzero(~is_test)
    is_val_rest = _take(rng, uniq[rest], strata[rest], val / (1 - test) if test < 1 else 0.0)
    names = np.full(len(uniq), "train", dtype="<U5")
    names[is_test] = "test"
    names[rest[is_val_rest]] = "val"
    return names[inverse]


def check_patient_splits(patient_ids: np.ndarray, splits: np.ndarray) -> None:
    """Raise :class:`InputError` when any patient has images in two splits (ids are not printed)."""
    pids = np.asarray(patient_ids).astype(str)
    sp = np.asarray(splits).astype(str)
    per_patient: dict[str, set[str]] = {}
    for p, s in zip(pids, sp, strict=True):
        per_patient.setdefault(p, set()).add(s)
    leaking = [p for p, s in per_patient.items() if len(s) > 1]
    if leaking:
        raise InputError(
            f"{len(leaking)} patient(s) have images in more than one split; splits must be by patient"
        )


def check_classes_present(labels: np.ndarray, splits: np.ndarray, class_names: tuple[str, ...],
                          required: tuple[str, ...] = ("train", "val")) -> None:
    """Raise :class:`InputError` when a class has no sample in one of the ``required`` splits."""
    labels = np.asarray(labels)
    for split in required:
        counts = np.bincount(labels[np.asarray(splits) == split], minlength=len(class_names))
        missing = [c for c, n in zip(class_names, counts, strict=True) if n == 0]
        if missing:
            raise InputError(
                f"class(es) {missing} have no samples in the {split!r} split "
                f"(counts {dict(zip(class_names, counts.tolist(), strict=True))}); "
                "add data or change the split fractions"
            )


def patient_kfold(patient_ids: np.ndarray, labels: np.ndarray, k: int = 5,
                  seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (train_index, val_index) for k folds by patient, stratified where possible.

    Uses scikit-learn's ``StratifiedGroupKFold`` (groups = patients).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    pids = np.asarray(patient_ids).astype(str)
    n_patients = len(np.unique(pids))
    if k < 2 or k > n_patients:
        raise InputError(f"k-fold needs 2 <= k <= number of patients ({n_patients}), got k={k}")
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    yield from cv.split(np.zeros(len(pids)), np.asarray(labels), groups=pids)
