"""A real lesion is found only by a finding that overlaps it AND is centred on it (not by any touching blob)."""

from __future__ import annotations

import numpy as np

from medanomaly.detect.evaluation import hits_lesion, rank_on_lesion
from medanomaly.types import Finding, Volume


def _grid_volume(array: np.ndarray) -> Volume:
    return Volume(array.astype(np.uint8), spacing=(1.0, 1.0, 2.0), origin=(-10.0, 5.0, 100.0))


def _finding(mask: np.ndarray, score: float, ref: Volume) -> Finding:
    zyx = np.argwhere(mask).mean(axis=0)
    centre = ref.index_to_physical(zyx[::-1])
    return Finding(center_mm=tuple(centre), bbox_mm=(tuple(centre), tuple(centre)), score=score,
                   mask=ref.with_array(mask.astype(np.uint8)))


def test_detect_hit_needs_overlap_and_centre_on_lesion() -> None:
    shape = (20, 60, 60)
    lesion = np.zeros(shape, bool)
    lesion[8:12, 20:26, 20:26] = True
    ref = _grid_volume(lesion)
    on_target = np.zeros(shape, bool)
    on_target[9:11, 21:25, 21:25] = True
    huge = np.zeros(shape, bool)
    huge[:, 20:60, 20:60] = True  # overlaps, but its centre is ~17 mm away from the lesion box
    elsewhere = np.zeros(shape, bool)
    elsewhere[2:4, 50:55, 50:55] = True

    assert hits_lesion(_finding(on_target, 0.5, ref), ref)
    assert not hits_lesion(_finding(huge, 0.9, ref), ref)
    assert not hits_lesion(_finding(elsewhere, 0.8, ref), ref)

    findings = [_finding(huge, 0.9, ref), _finding(elsewhere, 0.8, ref), _finding(on_target, 0.5, ref)]
    assert rank_on_lesion(findings, ref) == (3, 0.5, 2)
    assert rank_on_lesion(findings[:2], ref) == (None, None, 2)
