"""The lung detector's image pyramid (issue 16): lesions larger than the trained ones are found at a coarser scale."""

from __future__ import annotations

import numpy as np
import pytest

from medanomaly.detect.infer import heatmap
from medanomaly.types import Volume

SPACING = (1.0, 1.0, 1.0)


def _small_blob_detector(x):  # noqa: ANN001, ANN202 - torch in, torch out
    """Logits of a 'network' that only knows discs 5-15 voxels across: it fires where a 5x5 window is
    filled and the 15x15 window around it is at most half filled (a disc of radius 10 fills it: not found)."""
    import torch.nn.functional as F

    x = (x > 0.5).float()  # soft tissue (windowed HU)
    inner = F.avg_pool3d(x, (1, 5, 5), stride=1, padding=(0, 2, 2))
    outer = F.avg_pool3d(x, (1, 15, 15), stride=1, padding=(0, 7, 7))
    return 40.0 * (inner - 0.9) - 80.0 * (outer - 0.5).clamp(min=0.0)


def _ct_with_discs() -> tuple[Volume, tuple[int, int], tuple[int, int]]:
    """Air (-1000 HU) with a small (radius 4 mm) and a large (radius 10 mm) soft-tissue cylinder along z."""
    hu = np.full((8, 64, 96), -1000.0, np.float32)
    yy, xx = np.mgrid[:64, :96]
    small, large = (32, 20), (32, 64)
    hu[:, (yy - small[0]) ** 2 + (xx - small[1]) ** 2 <= 16] = 40.0
    hu[:, (yy - large[0]) ** 2 + (xx - large[1]) ** 2 <= 100] = 40.0
    return Volume(hu, spacing=SPACING), small, large


@pytest.mark.parametrize("region", [None, "box"])
def test_pyramid_finds_the_lesion_too_large_for_the_network_and_keeps_the_small_one(region) -> None:  # noqa: ANN001
    ct, small, large = _ct_with_discs()
    search = None
    if region == "box":
        search = np.zeros(ct.shape, bool)
        search[:, 8:56, 8:88] = True
    kwargs = {"spacing": SPACING, "hu_window": (-1000.0, 400.0), "roi_size": (8, 64, 64), "region": search}
    plain = np.asarray(heatmap(_small_blob_detector, ct, **kwargs).array)
    pyramid = heatmap(_small_blob_detector, ct, **kwargs, scales=(1.0, 2.0))
    both = np.asarray(pyramid.array)
    assert pyramid.shape == ct.shape and pyramid.spacing == ct.spacing
    assert plain[4][small] > 0.9 and plain[4][large] < 0.1  # the network alone misses the large disc
    assert both[4][large] > 0.9  # at twice the spacing it is a 10-voxel disc, which the network knows
    assert both[4][small] >= plain[4][small] - 1e-6  # the maximum: nothing found at the detector scale is lost
    assert np.all(both >= plain - 1e-6)
    np.testing.assert_array_equal(np.asarray(heatmap(_small_blob_detector, ct, **kwargs, scales=(1.0,)).array), plain)


@pytest.mark.parametrize(("min_diameter_mm", "found"), [(10.0, True), (12.0, False)])
def test_coarse_filter_keeps_only_components_that_fill_a_ball_of_the_given_diameter(min_diameter_mm, found) -> None:  # noqa: ANN001
    from functools import partial

    from medanomaly.detect.infer import keep_large

    ct, small, large = _ct_with_discs()  # the coarse scale finds the large disc's core: 704 mm3 at >= 0.5
    kwargs = {"spacing": SPACING, "hu_window": (-1000.0, 400.0), "roi_size": (8, 64, 64), "scales": (1.0, 2.0)}
    prob = np.asarray(heatmap(_small_blob_detector, ct, **kwargs,
                              coarse_filter=partial(keep_large, min_diameter_mm=min_diameter_mm)).array)  # fmt: skip
    assert bool(prob[4][large] > 0.9) is found  # a 10 mm ball is 524 mm3, a 12 mm ball 905 mm3
    assert prob[4][small] > 0.9  # the detector scale is never filtered


def test_detector_saves_its_pyramid_and_an_older_run_loads_without_one(tmp_path) -> None:
    import json
    import shutil
    from pathlib import Path

    from medanomaly.detect.detector import SIDECAR_FILE, NoduleDetector

    fixture = Path(__file__).parents[2] / "fixtures" / "lung_detector"
    shutil.copytree(fixture, tmp_path / "run")
    sidecar = tmp_path / "run" / SIDECAR_FILE
    params = json.loads(sidecar.read_text())
    params.pop("scales", None)
    params.pop("coarse_min_diameter_mm", None)
    sidecar.write_text(json.dumps(params))
    assert NoduleDetector.load(tmp_path / "run").scales == (1.0,)  # older runs: the detector grid only
    sidecar.write_text(json.dumps({**params, "scales": [1.0, 2.0], "coarse_min_diameter_mm": 25.0}))
    det = NoduleDetector.load(tmp_path / "run")
    assert det.scales == (1.0, 2.0) and det.coarse_min_diameter_mm == 25.0
    assert det.get_params()["scales"] == (1.0, 2.0)


@pytest.mark.parametrize("scales", [[0.5], [1.0, 5.0], []])
def test_config_refuses_scales_outside_one_to_four(scales) -> None:  # noqa: ANN001
    from medanomaly.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="scales"):
        parse_config({"task": "lung_nodule", "infer": {"scales": scales}})


@pytest.mark.parametrize("edit", [{"scales": "x"}, {"bogus": 1}, {"scales": [1.0, None]}, {"split_depth": 0},
                                  {"split_depth": -1.0}, {"split_depth": "deep"}, {"grow_max_slice_rise": 0.5},
                                  {"grow_max_slice_rise": "steep"}, {"grow_min_hu": "dense"},
                                  {"grow_min_compactness": 7.0}, {"candidate_threshold": -1}, {"overlap": 1.5}])
def test_a_tampered_detector_sidecar_is_one_error_naming_it(tmp_path, edit) -> None:  # noqa: ANN001
    import json
    import shutil
    from pathlib import Path

    from medanomaly.detect.detector import SIDECAR_FILE, NoduleDetector
    from medanomaly.errors import InputError

    shutil.copytree(Path(__file__).parents[2] / "fixtures" / "lung_detector", tmp_path / "run")
    sidecar = tmp_path / "run" / SIDECAR_FILE
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), **edit}))
    with pytest.raises(InputError, match="detector.json.*detector parameters do not fit"):
        NoduleDetector.load(tmp_path / "run")


def test_an_out_of_bounds_value_is_named_in_the_error(tmp_path) -> None:  # noqa: ANN001
    import json
    import shutil
    from pathlib import Path

    from medanomaly.detect.detector import SIDECAR_FILE, NoduleDetector
    from medanomaly.errors import InputError

    shutil.copytree(Path(__file__).parents[2] / "fixtures" / "lung_detector", tmp_path / "run")
    sidecar = tmp_path / "run" / SIDECAR_FILE
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "grow_min_hu": "dense"}))
    with pytest.raises(InputError, match="grow_min_hu: Input should be a valid number"):
        NoduleDetector.load(tmp_path / "run")
