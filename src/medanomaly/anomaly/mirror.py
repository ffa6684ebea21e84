"""The test brain's own mirror image as its expected intensity (the atlas method's ``match: mirror``).

A classical asymmetry cue: most brain lesions are one-sided, while the brain's normal structures and
many scan effects (a region whose contrast differs from the templates', the partial volume of a
thick top slice, a bias field that varies slowly) are nearly symmetric. The brain's ranks are
flipped left-right on the volume's own grid and rigidly registered back onto the brain
(SimpleITK, Mattes mutual information, centre-of-mass start), so the mid-sagittal plane need not be
the array's middle; each voxel's expected rank is then the rank of its mirror voxel. A lesion shows
at its own place and, as an opposite-signed ghost, at its mirror place; the map kind (``bright``
sees only one of the two for a bright lesion) and whether the mirror is used at all are chosen by
the atlas validation on SYNTHETIC lesions, never on the test. Voxels whose mirror falls outside the
brain keep the ``fallback`` expectation (the atlas's).

Example (a real brain: ``tests/unit/anomaly/test_anomaly_mirror.py``; a toy phantom is too plain for the
mutual-information registration)::

    >>> expected, log = mirror_expectation(ranks, brain, fallback)          # doctest: +SKIP
    >>> log["mirror_covered_fraction"]  # brain voxels whose mirror place is brain   # doctest: +SKIP
    0.92
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medanomaly.types import Volume

__all__ = ["mirror_expectation"]


def mirror_expectation(ranks: Volume, brain: np.ndarray, fallback: np.ndarray, seed: int = 0,
                       iterations: int = 100) -> tuple[np.ndarray, dict[str, Any]]:  # fmt: skip
    """Each brain voxel's expected rank = the rank at its mirror place (see the module docstring).

    Args:
        ranks: the test's brain ranks (0..1 in the brain, 0 outside) on its own grid.
        brain: the test's brain mask on that grid.
        fallback: the expectation kept where the mirror place is not brain (the atlas's).
        seed: the registration's sampling seed.
        iterations: optimiser iterations per resolution level.

    Returns:
        (expected ranks on the grid, log: the rigid transform's rotation (degrees) and the fraction of the
        brain whose mirror place is brain).
    """
    from medanomaly.preprocess.registration import register, resample_to

    values = np.asarray(ranks.array, np.float32)
    flipped = ranks.with_array(np.ascontiguousarray(values[..., ::-1]))
    result = register(ranks, flipped, stages=("rigid",), metric="mattes", sampling=0.25, iterations=iterations,
                      seed=seed, init="moments")  # fmt: skip
    mirrored = np.asarray(resample_to(ranks, flipped, result.transform).array, np.float32)
    flipped_brain = ranks.with_array(np.ascontiguousarray(brain[..., ::-1]).astype(np.float32))
    mirror_brain = np.asarray(resample_to(ranks, flipped_brain, result.transform).array) > 0.5
    inside = brain & mirror_brain
    expected = np.where(inside, mirrored, np.asarray(fallback, np.float32)).astype(np.float32)
    angles = _rotation_degrees(result.transform)
    return expected, {"mirror_rotation_deg": angles, "mirror_covered_fraction": round(float(inside.sum() / max(brain.sum(), 1)), 4)}


def _rotation_degrees(transform: Any) -> float:
    """The rotation angle (degrees) of a rigid transform's matrix (0 when it has none)."""
    try:
        matrix = np.asarray(transform.GetMatrix(), np.float64).reshape(3, 3)
    except (AttributeError, RuntimeError):
        return 0.0
    cos = float(np.clip((np.trace(matrix) - 1.0) / 2.0, -1.0, 1.0))
    return round(float(np.degrees(np.arccos(cos))), 2)
