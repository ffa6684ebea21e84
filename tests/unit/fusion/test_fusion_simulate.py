"""Two-contrast lesion simulation: one mask, modality-specific contrast, reproducible, synthetic."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medanomaly.errors import InputError
from medanomaly.fusion.simulate import (
    SimulatedLesion,
    insert_lesion,
    load_brain_pair,
    simulate_pairs,
    write_manifest,
)


def test_fusion_simulate_real_pair_is_registered():
    t1, pd, mask = load_brain_pair()
    assert t1.shape == pd.shape == mask.shape == (217, 181)
    # same subject on the same grid: multi-modal registration finds (almost) the identity
    from medanomaly.fusion.registration import register
    from medanomaly.types import Volume

    result = register(Volume(pd), Volume(t1))
    assert abs(result.rigid.angles_deg[0]) < 1.0
    assert np.abs(result.rigid.translation_mm).max() < 1.0


def test_fusion_simulate_pairs_shapes_labels_and_reproducible():
    data = simulate_pairs(30, "train", seed=4)
    again = simulate_pairs(30, "train", seed=4)
    other = simulate_pairs(30, "test", seed=4)
    assert data.synthetic and data.modalities == ("T1", "PD")
    assert data.images.shape == (30, 2, 64, 64) and data.images.dtype == np.float32
    assert np.array_equal(data.images, again.images) and not np.array_equal(data.images, other.images)
    assert set(np.unique(data.labels)) <= {0, 1}
    for label, mask, lesion in zip(data.labels, data.masks, data.lesions, strict=True):
        assert (label == 1) == (lesion is not None) == bool(mask.any())
    assert set(data.visible_in) <= {"none", "T1", "PD", "both"}
    with pytest.raises(InputError, match="split"):
        simulate_pairs(4, "holdout")


@settings(max_examples=20, deadline=None)
@given(kind=st.sampled_from(["T1", "PD"]), strong=st.floats(0.3, 1.0), weak=st.floats(0.0, 0.05))
def test_fusion_simulate_contrast_is_modality_specific(kind, strong, weak):
    flat = {"T1": np.full((32, 32), 0.5, np.float32), "PD": np.full((32, 32), 0.5, np.float32)}
    other = "PD" if kind == "T1" else "T1"
    lesion = SimulatedLesion((16.0, 16.0), (5.0, 4.0), 30.0, kind, ((kind, strong), (other, weak)))
    out, mask = insert_lesion(flat, lesion)
    inside = mask.astype(bool)
    assert inside.sum() > 30
    shown = out[kind][inside] / 0.5 - 1
    hidden = out[other][inside] / 0.5 - 1
    assert shown.max() == pytest.approx(strong, rel=0.05)  # the full contrast at the centre
    assert np.abs(hidden).max() <= weak + 1e-6  # never more than the weak contrast in the other
    assert np.all(out[kind][~inside] >= 0.5)  # one mask: the change sits where the mask is


def test_fusion_simulate_write_manifest_round_trip(tmp_path):
    from medanomaly.fusion.data import load_paired_dataset

    data = simulate_pairs(6, "val", seed=1, size=32)
    samples, problems = load_paired_dataset(write_manifest(data, tmp_path))
    assert problems == [] and [s.label for s in samples] == data.labels.tolist()
    assert np.allclose(samples[0].volumes["T1"].array[0], data.images[0, 0])
    assert samples[0].volumes["PD"].meta.get("modality") == "MR"
