"""The atlas's ``mirror`` match on a real normal brain (ITK's T1, skull-stripped by its labels)."""

from __future__ import annotations

import numpy as np
import pytest

from medanomaly.anomaly.atlas import AtlasMethod
from medanomaly.errors import ConfigError


def test_mirror_expectation_of_a_one_sided_spot_is_the_normal_other_side():
    from medanomaly.anomaly.atlas import _rank_in
    from medanomaly.anomaly.data import _brain, load_brain_only
    from medanomaly.anomaly.mirror import mirror_expectation

    vol = load_brain_only("itk_t1")
    brain = _brain(vol)
    ranks = _rank_in(np.asarray(vol.array, np.float32), brain)
    z, y, x = (int(np.median(a)) for a in np.nonzero(brain))
    x_side = x + (np.nonzero(brain[z, y])[0].max() - x) // 2  # halfway to the brain's edge on one side
    spot = np.zeros_like(brain)
    spot[z - 1 : z + 2, y - 3 : y + 4, x_side - 3 : x_side + 4] = True
    ranks[spot] = 1.0  # a bright one-sided lesion
    expected, log = mirror_expectation(vol.with_array(ranks), brain, np.full_like(ranks, 0.5))
    assert log["mirror_covered_fraction"] > 0.85  # the mirror registration overlaps the brain with itself
    assert abs(log["mirror_rotation_deg"]) < 15
    assert np.median(expected[spot]) < 0.9  # the spot's mirror place is ordinary brain ...
    assert np.median(np.abs(ranks - expected)[brain & ~spot]) < 0.2  # ... and the rest mirrors closely


def test_mirror_is_a_candidate_only_when_listed():
    assert AtlasMethod().matches == ("conditional", "rank")
    assert AtlasMethod(matches=("conditional", "rank", "mirror")).matches[-1] == "mirror"
    with pytest.raises(ConfigError, match="intensity match"):
        AtlasMethod(matches=("conditional", "mirrored"))
