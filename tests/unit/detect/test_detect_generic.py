"""The generic heatmap detector (2D), its search-region plug-ins, FROC per image, BI-RADS-like summary."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medanomaly.errors import ConfigError, InputError
from medanomaly.types import Volume


def _blob_image(seed: int, size: int = 48) -> tuple[Volume, np.ndarray, tuple[int, int]]:
    rng = np.random.default_rng(seed)
    a = rng.normal(0.3, 0.03, (size, size)).astype(np.float32)
    cy, cx = (int(v) for v in rng.integers(10, size - 10, 2))
    yy, xx = np.mgrid[:size, :size]
    mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= 9
    a[mask] += 0.5
    return Volume(a[None], spacing=(0.5, 0.5, 1.0), meta={"modality": "MG"}), mask, (cx, cy)


@pytest.fixture(scope="module")
def trained() -> object:
    import torch

    from medanomaly.detect.generic import HeatmapDetector

    torch.set_num_threads(1)
    det = HeatmapDetector(model_params={"filters": [4, 8, 16]}, region="none", patch_size=(1, 16, 16), steps=30,
                          batch_size=4, roi_size=(1, 48, 48), lr=1e-2, hard_negative_fraction=0.0, seed=0)
    scans = [det.grid_scan(v, m[None], f"s{i}") for i, (v, m, _) in enumerate(_blob_image(s) for s in range(4))]
    return det.fit(scans, progress=False)


def test_2d_detector_finds_a_bright_blob(trained: object) -> None:
    image, mask, (cx, cy) = _blob_image(99)
    findings = trained.detect(image)  # type: ignore[attr-defined]
    assert findings, "no finding on a bright blob"
    best = findings[0]
    x, y, _ = image.physical_to_index(np.array([best.center_mm]))[0]
    assert abs(x - cx) <= 2 and abs(y - cy) <= 2
    assert best.mask is not None and best.mask.shape == image.shape
    assert np.asarray(best.mask.array)[0][mask].mean() > 0.5  # the mask covers the blob
    assert best.measurements is not None and 2.5 < best.measurements.long_axis_mm < 6.5  # blob: 7 px * 0.5 mm


def test_2d_detector_refuses_a_3d_volume(trained: object) -> None:
    with pytest.raises(InputError, match="2D image"):
        trained.detect(Volume(np.zeros((4, 48, 48), np.float32)))  # type: ignore[attr-defined]


def test_detector_save_load_gives_the_same_heatmap(trained: object, tmp_path) -> None:
    from medanomaly.detect.generic import HeatmapDetector

    trained.save(tmp_path)  # type: ignore[attr-defined]
    again = HeatmapDetector.load(tmp_path)
    image = _blob_image(7)[0]
    a = trained.heatmap(image, None).array  # type: ignore[attr-defined]
    np.testing.assert_allclose(again.heatmap(image, None).array, a, atol=1e-6)
    saved = (tmp_path / "heatmap_detector.json").read_text()
    (tmp_path / "heatmap_detector.json").write_text('{"spatial_dims": 2, "model_params": {"filters": [8, 16, 32]}}')
    with pytest.raises(InputError, match="do not fit"):
        HeatmapDetector.load(tmp_path)
    for edit in ({"candidate_threshold": 2.0}, {"overlap": "half"}, {"mask_threshold": -0.5}):
        (tmp_path / "heatmap_detector.json").write_text(json.dumps({**json.loads(saved), **edit}))
        with pytest.raises(InputError, match="heatmap_detector.json.*do not fit"):  # checked on load, not at detect time
            HeatmapDetector.load(tmp_path)


def test_recorded_preprocessing_replays_the_detector_input(trained: object) -> None:
    from medanomaly.preprocess.pipeline import Pipeline

    image = _blob_image(3)[0]
    steps = trained.preprocessing_steps()  # type: ignore[attr-defined]
    assert [s["name"] for s in steps] == ["cast", "resample", "window"]
    replay = Pipeline.from_config(steps)(image).volume
    np.testing.assert_array_equal(replay.array, trained.prepare(image).array)  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- regions
def test_region_plugins_none_breast_and_refusals() -> None:
    from medanomaly.detect.regions import SEARCH_REGIONS, region_mask, search_region
    from medanomaly.synth.mammo import render_mammogram

    assert {"lung", "breast", "body", "none"} <= set(SEARCH_REGIONS.names())
    mg = render_mammogram(["malignant"], view="MLO", size=96, seed=1)
    everything = np.asarray(region_mask("none", mg.image).array)
    breast = np.asarray(region_mask("breast", mg.image).array)[0] > 0
    assert everything.all()
    assert 0.1 < breast.mean() < 0.95  # the breast, not the background
    assert breast[mg.instance_map() > 0].mean() > 0.9  # the lesion lies inside the searched breast
    grown, core = search_region("breast", mg.image, (1.25, 1.25, 1.0), 3.0)
    assert grown.sum() > core.sum() > 0
    ct = Volume(np.full((1, 64, 64), -1000, np.int16), meta={"modality": "CT"})
    with pytest.raises(InputError, match="CT"):
        region_mask("breast", ct)
    with pytest.raises(InputError):
        region_mask("lung", mg.image)
    with pytest.raises(ConfigError):
        region_mask("kidney", mg.image)


# ----------------------------------------------------------------------------- FROC per image
def test_froc_per_image_and_its_bootstrap() -> None:
    from medanomaly.detect.breast_eval import froc_bootstrap
    from medanomaly.evaluate.froc import ScanMarks, froc

    marks = [ScanMarks([0.9, 0.8, 0.7], [0, -1, -1], 2), ScanMarks([0.6], [-1], 0), ScanMarks([0.95], [0], 1)]
    out = froc_bootstrap(marks, n_bootstrap=200, seed=3)
    res = out["result"]
    assert res.n_scans == 3 and res.n_lesions == 3
    # thresholds 0.95, 0.9 hit (2 of 3 lesions, 0 FP); then 3 FP over 3 images = 1 FP per image
    assert res.sensitivity_at(0.125) == pytest.approx(2 / 3)
    assert res.fps_per_scan[-1] == pytest.approx(1.0)
    rng = np.random.default_rng(3)
    cpms = []
    for _ in range(200):
        sample = [marks[i] for i in rng.integers(0, 3, 3)]
        if sum(m.n_lesions for m in sample):
            cpms.append(froc(sample).cpm)
    lo, hi = np.percentile(cpms, [2.5, 97.5])
    assert out["json"]["cpm"]["ci_low"] == pytest.approx(lo) and out["json"]["cpm"]["ci_high"] == pytest.approx(hi)
    assert out["json"]["n_images"] == 3 and "1" in out["json"]["sensitivity_at_fp_per_image"]


def test_image_marks_hit_by_distance_to_the_lesion() -> None:
    from medanomaly.data.lesions2d import LesionImage, lesion_from_mask
    from medanomaly.detect.breast_eval import image_marks
    from medanomaly.types import Finding

    img = Volume(np.zeros((1, 40, 40), np.float32), spacing=(0.5, 0.5, 1.0))
    m = np.zeros((40, 40), bool)
    m[10:20, 10:20] = True
    item = LesionImage(img, (lesion_from_mask(img, m, "malignant", "mass"),))
    centre = item.lesions[0].to_finding(img).center_mm
    near = Finding(centre, (centre, centre), 0.9)
    far = Finding((centre[0] + 8.0, centre[1], 0.0), (centre, centre), 0.8)
    marks = image_marks(item, [near, far], min_radius_mm=2.0)
    assert list(marks.lesion_ids) == [0, -1] and marks.n_lesions == 1


def test_birads_like_categories() -> None:
    from medanomaly.detect.detection_task import birads_like

    assert birads_like(None, False, 0.0) == "1"
    assert birads_like("benign", False, 0.1) == "2"
    assert birads_like("uncertain", False, 0.3) == "3"
    assert birads_like("malignant", False, 0.6) == "4"
    assert birads_like("malignant", False, 0.95) == "5"
    assert birads_like("malignant", True, 0.95) == "0"  # abstained: needs further evaluation


def test_detection_config_checks() -> None:
    from pydantic import ValidationError

    from medanomaly.detect.detection_config import DetectionConfig

    cfg = DetectionConfig(data={"source": "us_phantom"})
    assert cfg.input_modality == "US" and cfg.spatial_dims == 2
    with pytest.raises(ValidationError, match="data.root"):
        DetectionConfig(data={"source": "inbreast"})
    with pytest.raises(ValidationError, match="z = 1"):
        DetectionConfig(train={"patch_size": [4, 32, 32]})
