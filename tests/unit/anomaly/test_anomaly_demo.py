"""The ``anomaly`` demo step's config: the strict registered atlas with the per-volume robust map scale,
tested on brain1/brain2 (the step itself trains for minutes and is run by ``make demo``)."""

from __future__ import annotations

from medanomaly.anomaly.demo import DEMO_CONFIG, DEMO_EDGE_HEADS, DEMO_MAX_SIGMA_MM, demo_config
from medanomaly.config import load_config


def test_demo_step_trains_the_strict_atlas_with_robust_thresholds():
    cfg = demo_config()
    assert DEMO_CONFIG.name == "anomaly_brain_atlas.yaml" and cfg.name == "demo_anomaly"
    assert cfg.method.name == "atlas" and cfg.method.params["map_scale"] == "robust"
    assert cfg.method.params.get("val_lesions", "mixed") == "mixed"  # not the hindsight-informed prior
    assert tuple(cfg.evaluate.cases) == ("brain1", "brain2") and cfg.evaluate.n_bootstrap == 500
    assert cfg.train.threads == 1
    shipped = load_config(DEMO_CONFIG)
    assert list(shipped.method.params["edge_heads"]) == ["ch2", "itk_t1"]  # the demo cuts the edge heads ...
    wide = [s for s in shipped.threshold.sigmas if s > DEMO_MAX_SIGMA_MM]
    assert wide == [12.0, 16.0] and list(cfg.threshold.sigmas) == [s for s in shipped.threshold.sigmas if s not in wide]
    assert list(cfg.method.params["edge_heads"]) == DEMO_EDGE_HEADS == ["ch2"]  # ... and the widest smoothings only
    rest = {k: v for k, v in cfg.method.params.items() if k != "edge_heads"}
    assert rest == {k: v for k, v in shipped.method.params.items() if k != "edge_heads"}


def test_demo_summary_prints_the_slice_auroc_ci_the_case_study_writes():
    from medanomaly.demo.anomaly import _summary

    got = _summary({"pixel_auroc": 0.8114, "slice_auroc": {"value": 0.527, "ci95": [0.32, 0.72]}})
    assert got == "pixel AUROC 0.811, slice AUROC 0.527 [0.320, 0.720]"


def test_map_findings_are_the_thresholded_regions_above_min_volume_scored_by_their_peak():
    import numpy as np

    from medanomaly.anomaly.model import map_findings
    from medanomaly.types import Volume

    values = np.zeros((10, 30, 30), np.float32)
    values[2:6, 5:15, 5:15] = 4.0  # 400 voxels of 1 x 1 x 2 mm = 0.8 mL
    values[4, 10, 10] = 9.0
    values[8, 25, 25] = 5.0  # 1 voxel = 0.002 mL, below 0.1 mL
    image = Volume(np.ones_like(values), spacing=(1.0, 1.0, 2.0))
    amap = image.with_array(values)
    found = map_findings(amap, values > 3.0, image)
    assert len(found) == 1 and found[0].label == "anomaly" and found[0].score == 9.0
    assert abs(found[0].measurements.volume_ml - 0.8) < 1e-6
    assert map_findings(amap, values > 3.0, image, min_ml=0.0)[1].score == 5.0
    assert map_findings(amap, values > 99.0, image) == ()
