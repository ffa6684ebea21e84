"""A small deterministic stand-in for a loaded detection model (engine contract: task, class_names,
info, predict), used by the batch, Ray and kill -9 tests. Not a test module (no ``test_`` prefix).

``predict`` finds "lesions" as the voxels above ``threshold_hu`` inside the central block of the
volume (real tissue of the copied real scans), measures them with medanomaly.quantify and scores
each by its mean HU; it appends the series UID of each call to ``calls_log`` when given, so a test
can count how often each series was predicted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medanomaly.types import Finding, Prediction, Volume


@dataclass(frozen=True)
class FakeInfo:
    task: str = "lung_nodule"
    class_names: tuple[str, ...] = ()
    synthetic: bool = True
    version: str = "fake-1"


class FakeDetector:
    """Deterministic detector: findings = bright voxels of the central block."""

    def __init__(self, threshold_hu: float = -300.0, calls_log: str | None = None, delay_s: float = 0.0,
                 fail_on: str | None = None, version: str = "fake-1") -> None:  # fmt: skip
        self.info = FakeInfo(version=version)
        self.task = self.info.task
        self.class_names = self.info.class_names
        self.threshold_hu = threshold_hu
        self.calls_log = calls_log
        self.delay_s = delay_s
        self.fail_on = fail_on

    def predict(self, volume: Volume) -> Prediction:
        from medanomaly.quantify.measure import measure_lesions

        uid = str(volume.meta.get("series_uid", "?"))
        if self.calls_log:
            with open(self.calls_log, "a") as fh:
                fh.write(uid + "\n")
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_on and uid == self.fail_on:
            raise RuntimeError("planted model failure")
        array = np.asarray(volume.array, dtype=np.float32)
        z, y, x = array.shape
        block = np.zeros(array.shape, bool)
        block[z // 4 : z - z // 4 or z, y // 3 : y - y // 3, x // 3 : x - x // 3] = True
        mask = (array > self.threshold_hu) & block
        findings: list[Finding] = []
        if mask.any():
            found = measure_lesions(volume.with_array(mask.astype(np.uint8)), volume, label="nodule", min_voxels=3)
            findings = [Finding(f.center_mm, f.bbox_mm, float(1 / (1 + np.exp(-f.measurements.mean / 100.0))),
                                f.label, f.mask, f.measurements) for f in found[:3]]  # fmt: skip
        score_map = volume.with_array(np.clip((array + 1000.0) / 1400.0, 0, 1).astype(np.float32))
        return Prediction(scores=(), class_names=(), label="lesion" if findings else "none",
                          findings=tuple(findings), anomaly_map=score_map)  # fmt: skip


def load_fake(**kwargs) -> FakeDetector:
    """Factory for Ray workers and subprocesses."""
    return FakeDetector(**kwargs)


HERE = Path(__file__).resolve().parent
