"""Heatmap components split at probability valleys (issue 16): a nodule touching another candidate keeps its
own finding and centre instead of being averaged into its neighbour's."""

from __future__ import annotations

import numpy as np
import pytest

from medanomaly.detect.infer import findings_from_heatmap, split_at_valleys
from medanomaly.types import Volume

SPACING = (1.0, 1.0, 2.0)


def _two_touching_blobs(bridge: float) -> tuple[Volume, Volume, list[tuple[int, int, int]]]:
    """A probability map of two Gaussian peaks (0.95 and 0.8) joined by a ridge of ``bridge`` probability,
    the CT a soft-tissue ball under each peak (mm: 1 x 1 x 2 voxels)."""
    z, y, x = np.mgrid[:8, :32, :48].astype(np.float32)
    peaks = [(4, 16, 12), (4, 16, 36)]
    prob = np.zeros(z.shape, np.float32)
    hu = np.full(z.shape, -850.0, np.float32)
    for (cz, cy, cx), top in zip(peaks, (0.95, 0.8), strict=True):
        r2 = ((z - cz) * 2.0) ** 2 + (y - cy) ** 2 + (x - cx) ** 2
        prob = np.maximum(prob, top * np.exp(-r2 / (2 * 3.0**2)))
        hu[r2 <= 16] = 30.0
    prob[3:6, 15:18, 12:37] = np.maximum(prob[3:6, 15:18, 12:37], bridge)
    return Volume(prob, spacing=SPACING), Volume(hu, spacing=SPACING), peaks


def _centre_index(finding, prob: Volume) -> np.ndarray:  # noqa: ANN001
    return np.asarray(prob.physical_to_index(np.array(finding.center_mm)))[::-1]


def test_two_candidates_joined_by_a_ridge_are_one_finding_without_splitting_and_two_with_it() -> None:
    prob, ct, peaks = _two_touching_blobs(bridge=0.3)
    region = np.ones(prob.shape, bool)
    whole = findings_from_heatmap(prob, ct, region)
    assert len(whole) == 1
    assert abs(_centre_index(whole[0], prob)[2] - 24) < 6  # averaged between the two peaks: on neither
    split = findings_from_heatmap(prob, ct, region, split_depth=0.3)
    assert len(split) == 2
    assert [round(f.score, 2) for f in split] == [0.95, 0.8]
    for f, peak in zip(split, peaks, strict=True):
        assert np.abs(_centre_index(f, prob) - np.array(peak)).max() < 1.5
        assert f.measurements.volume_ml < 0.5  # each keeps its own mask, not the ridge to the other


def test_a_shallow_valley_leaves_the_component_whole() -> None:
    prob, ct, _ = _two_touching_blobs(bridge=0.7)  # 0.8 - 0.7: shallower than the depth asked
    assert len(findings_from_heatmap(prob, ct, np.ones(prob.shape, bool), split_depth=0.3)) == 1


def test_a_noisy_plateau_is_not_fragmented() -> None:
    rng = np.random.default_rng(0)
    p = np.zeros((6, 40, 40))
    p[1:5, 8:32, 8:32] = 0.97 + 0.03 * rng.random((4, 24, 24))  # a large lesion's saturated core
    labels, n = split_at_valleys(p, (p > 0.15).astype(np.int32), 0.1)
    assert n == 1 and np.array_equal(labels > 0, p > 0.15)


def test_splitting_keeps_every_voxel_and_numbers_components_from_one() -> None:
    prob, _, _ = _two_touching_blobs(bridge=0.3)
    p = np.asarray(prob.array)
    from scipy import ndimage

    labels, _ = ndimage.label(p > 0.15)
    labels[0, 0, 0] = 0
    split, n = split_at_valleys(p, labels, 0.3)
    assert n == 2 and set(np.unique(split)) == {0, 1, 2}
    assert np.array_equal(split > 0, labels > 0)


def test_detector_saves_its_split_depth_and_an_older_run_loads_without_it(tmp_path) -> None:  # noqa: ANN001
    import json
    import shutil
    from pathlib import Path

    from medanomaly.detect.detector import SIDECAR_FILE, NoduleDetector

    shutil.copytree(Path(__file__).parents[2] / "fixtures" / "lung_detector", tmp_path / "run")
    sidecar = tmp_path / "run" / SIDECAR_FILE
    params = json.loads(sidecar.read_text())
    params.pop("split_depth", None)
    sidecar.write_text(json.dumps(params))
    assert NoduleDetector.load(tmp_path / "run").split_depth is None  # older runs: whole components
    sidecar.write_text(json.dumps({**params, "split_depth": 0.3}))
    assert NoduleDetector.load(tmp_path / "run").split_depth == 0.3


@pytest.mark.parametrize("depth", [0.0, 1.5, "deep"])
def test_config_refuses_a_split_depth_outside_zero_to_one(depth) -> None:  # noqa: ANN001
    from medanomaly.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="split_depth"):
        parse_config({"task": "lung_nodule", "infer": {"split_depth": depth}})


def test_the_generic_heatmap_detector_takes_the_split_depth_from_its_config() -> None:
    from pathlib import Path

    import yaml

    from medanomaly.config import parse_config
    from medanomaly.detect.generic import HeatmapDetector

    raw = yaml.safe_load((Path(__file__).parents[3] / "configs" / "breast_us_detect_tiny.yaml").read_text())
    assert HeatmapDetector.from_config(parse_config(raw)).split_depth is None
    raw.setdefault("infer", {})["split_depth"] = 0.25
    det = HeatmapDetector.from_config(parse_config(raw))
    assert det.split_depth == 0.25 and det.get_params()["split_depth"] == 0.25
