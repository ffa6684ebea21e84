"""Fixtures of the detect tests: a toy chest phantom and one tiny detector trained on it (session)."""

from __future__ import annotations

import numpy as np
import pytest

from medanomaly.types import Volume

TINY = dict(
    model_params={"filters": [4, 8, 16]},
    spacing_mm=(2.5, 2.5, 5.0),
    patch_size=(4, 32, 32),
    batch_size=4,
    steps=12,
    roi_size=(8, 32, 32),
    threads=1,
    seed=0,
    precision="fp32",  # exact step and weight checks; bfloat16 has its own tests (it may skip a step)
)


def toy_chest(seed: int = 0) -> tuple[Volume, Volume]:
    """(CT in HU, lung mask 1=right/2=left): a 16 x 64 x 96 phantom at 2.5 x 2.5 x 5 mm."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[:16, :64, :96]
    ct = np.full((16, 64, 96), -1000.0)
    body = ((yy - 32) / 30) ** 2 + ((xx - 48) / 46) ** 2 <= 1
    ct[body] = 40.0
    lung = np.zeros(ct.shape, np.uint8)
    for label, cx in ((1, 26), (2, 70)):  # LPS: smaller x = patient right
        inside = (((yy - 32) / 22) ** 2 + ((xx - cx) / 16) ** 2 <= 1) & (zz >= 1) & (zz <= 14)
        lung[inside] = label
    ct[lung > 0] = -850.0
    for _ in range(12):  # vessels: short dense tubes along z
        y, x = rng.integers(14, 50), rng.choice([rng.integers(14, 38), rng.integers(58, 82)])
        ct[2:14, y, x] = -100.0
    ct += rng.normal(0, 20, ct.shape)
    meta = {"modality": "CT"}
    spacing = (2.5, 2.5, 5.0)
    return (
        Volume(ct.round().astype(np.int16), spacing=spacing, meta=meta),
        Volume(lung, spacing=spacing, meta=meta),
    )


@pytest.fixture(scope="session")
def toy_source():
    from medanomaly.detect.simulate import SourceScan, exclusion_zone

    ct, lung = toy_chest()
    lesion = np.zeros(ct.shape, np.uint8)
    lesion[7:9, 30:33, 20:23] = 1  # a pretend real lesion in the right lung
    lesion_vol = ct.with_array(lesion)
    return SourceScan("toy", ct, lung, exclude=exclusion_zone(lesion_vol, 10.0), lesion=lesion_vol)


@pytest.fixture(scope="session")
def tiny_detector(toy_source, tmp_path_factory):
    """A detector trained for a few steps on two simulated toy scans, saved and reloaded."""
    from medanomaly.detect.detector import NoduleDetector
    from medanomaly.detect.patches import to_grid_scan
    from medanomaly.detect.simulate import simulate_scan

    scans = []
    for k in range(2):
        sim = simulate_scan(toy_source, 1, 3, np.random.default_rng([0, k]), (6.0, 15.0))
        scans.append(to_grid_scan(sim, TINY["spacing_mm"], (-1000.0, 400.0)))
    det = NoduleDetector(**TINY).fit(scans, progress=False)
    run = tmp_path_factory.mktemp("tiny_run")
    det.save(run)
    return det, run
