"""The nodule detector: training, persistence, whole-volume inference, findings and patches."""

from __future__ import annotations

import numpy as np
import pytest

from medanomaly.detect.detector import NoduleDetector
from medanomaly.detect.infer import findings_from_heatmap, region_box
from medanomaly.detect.patches import GridScan, PatchSampler
from medanomaly.detect.simulate import exclusion_zone, simulate_scan
from medanomaly.errors import InputError
from medanomaly.types import Volume

# One worker builds the session-scoped tiny detector once (CI runs `-n 2 --dist loadgroup`).
pytestmark = pytest.mark.xdist_group("lung_tiny_detector")


def test_detect_fit_records_finite_loss(tiny_detector) -> None:
    det, _ = tiny_detector
    assert len(det.history_) == det.steps
    assert np.isfinite(det.history_).all()


def test_detect_save_load_roundtrip_gives_identical_heatmap(tiny_detector, toy_source) -> None:
    det, run = tiny_detector
    assert (run / "model.safetensors").is_file() and (run / "detector.json").is_file()
    loaded = NoduleDetector.load(run)
    region = det.region(toy_source.lung)
    a = det.heatmap(toy_source.ct, region).array
    b = loaded.heatmap(toy_source.ct, region).array
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert loaded.get_params() == {**det.get_params(), "spacing_mm": loaded.spacing_mm}


def test_detect_findings_schema_and_order(tiny_detector, toy_source) -> None:
    det, _ = tiny_detector
    det_low = NoduleDetector.load(_save(det))
    det_low.candidate_threshold = 0.0  # an untrained-ish net: take whatever it finds
    findings = det_low.detect(toy_source.ct, toy_source.lung, side=2)
    assert findings, "with threshold 0 the search region must give at least one component"
    scores = [f.score for f in findings]
    assert scores == sorted(scores, reverse=True)
    assert len(findings) <= det_low.max_findings
    left_x = toy_source.ct.index_to_physical((48, 0, 0))[0]
    for f in findings:
        row = f.to_json()
        for key in ("center_mm", "bbox_mm", "score", "volume_ml", "partial_volume_ml", "max_diameter_mm", "mean_hu"):
            assert key in row
        assert row["partial_volume_ml"] >= 0.0
        assert f.mask is not None and f.mask.same_grid(toy_source.ct)
        assert f.measurements.n_voxels == int(np.count_nonzero(f.mask.array))
        lo, hi = np.array(f.bbox_mm)
        assert np.all(lo <= hi)
        assert f.center_mm[0] > left_x - 10  # side=2 searches the left lung (larger LPS x) only


def _save(det: NoduleDetector):
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp())
    det.save(path)
    return path


def test_detect_heatmap_is_zero_outside_search_box(tiny_detector, toy_source) -> None:
    det, _ = tiny_detector
    region = det.region(toy_source.lung, side=1)
    prob = det.heatmap(toy_source.ct, region).array
    box = region_box(region, det.roi_size)
    outside = np.ones(prob.shape, bool)
    outside[box] = False
    assert prob[outside].max() == 0.0
    assert 0.0 <= prob.min() and prob.max() <= 1.0


def test_detect_region_box_is_divisible_and_covers_region() -> None:
    region = np.zeros((20, 50, 70), bool)
    region[3:11, 7:30, 13:61] = True
    box = region_box(region, (8, 32, 32))
    sizes = [s.stop - s.start for s in box]
    assert sizes[0] % 2 == 0 and sizes[1] % 4 == 0 and sizes[2] % 4 == 0
    inside = np.zeros_like(region)
    inside[box] = True
    assert inside[region].all()


def test_detect_findings_from_heatmap_two_blobs() -> None:
    prob = np.zeros((6, 30, 30), np.float32)
    prob[2:4, 3:7, 3:7] = 0.6
    prob[2:4, 18:24, 18:24] = 0.95
    heat = Volume(prob, spacing=(2.0, 2.0, 5.0))
    ct = Volume(np.full(prob.shape, -800, np.int16), spacing=(2.0, 2.0, 5.0))
    found = findings_from_heatmap(heat, ct, np.ones(prob.shape, bool), candidate_threshold=0.3)
    assert [round(f.score, 2) for f in found] == [0.95, 0.6]
    assert found[0].center_mm == pytest.approx((41.0, 41.0, 12.5))  # voxels 18..23 x 2 mm
    assert found[0].measurements.volume_ml == pytest.approx(6 * 6 * 2 * 20 / 1000)
    assert findings_from_heatmap(heat, ct, np.zeros(prob.shape, bool)) == []


def test_detect_patches_never_touch_the_exclusion_zone() -> None:
    shape = (8, 64, 64)
    image = np.full(shape, 0.5, np.float32)
    exclude = np.zeros(shape, bool)
    exclude[:, 20:40, 20:40] = True
    image[exclude] = 1.0
    target = np.zeros(shape, np.uint8)
    target[3:5, 5:9, 5:9] = 1
    scan = GridScan("t", image, target, ~exclude, exclude, np.where(exclude, 0.0, -850.0).astype(np.float32))
    x, y = PatchSampler([scan], (4, 16, 16), 0.5, 0.2).sample(np.random.default_rng(0), 64)
    assert x.shape == (64, 1, 4, 16, 16)
    assert x.max() < 0.9  # no excluded voxel ever appears in a patch
    assert y.sum() > 0  # positives are drawn


def test_detect_simulation_respects_side_and_exclusion(toy_source) -> None:
    sim = simulate_scan(toy_source, 1, 4, np.random.default_rng(5), (4.0, 8.0))
    assert sim.truths
    labels = np.asarray(sim.labels.array) > 0
    lung = np.asarray(toy_source.lung.array)
    assert (lung[labels] != 2).all()  # never in the held-out (left) lung
    assert not (labels & (np.asarray(toy_source.exclude.array) > 0)).any()
    assert sim.ct.meta.get("synthetic") is True


def test_detect_exclusion_zone_grows_by_margin_in_mm() -> None:
    lesion = np.zeros((5, 41, 41), np.uint8)
    lesion[2, 20, 20] = 1
    zone = np.asarray(exclusion_zone(Volume(lesion, spacing=(1.0, 1.0, 5.0)), 10.0).array)
    assert zone[2, 20, 30] == 1 and zone[2, 20, 31] == 0  # 10 mm in-plane
    assert zone[4, 20, 20] == 1 and zone[2, 20, 20] == 1  # 10 mm = 2 slices of 5 mm


def test_detect_load_rejects_a_folder_without_weights(tmp_path) -> None:
    with pytest.raises(InputError, match="not a trained lung_nodule run"):
        NoduleDetector.load(tmp_path)


def test_detect_tiny_detector_weights_are_contiguous_after_channels_last_training(tiny_detector) -> None:
    det, _ = tiny_detector  # fit trains in channels-last 3D on the CPU, then hands back the usual layout
    convs = [p for p in det.model_.parameters() if p.dim() == 5]
    assert convs and all(p.is_contiguous() for p in det.model_.parameters())


@pytest.mark.parametrize("where", ["inside", "at_the_border"])
def test_detect_finding_measured_on_its_crop_equals_measured_on_the_whole_ct(where) -> None:
    from dataclasses import asdict

    from medanomaly.detect.infer import finding_from_mask
    from medanomaly.quantify.measure import measure

    rng = np.random.default_rng(0)
    hu = rng.normal(-700, 200, (12, 40, 40)).round().astype(np.int16)
    ct = Volume(hu, spacing=(0.8, 0.8, 2.5), origin=(-12.0, 30.0, 100.0))
    mask = np.zeros(hu.shape, bool)
    if where == "inside":
        mask[4:8, 10:19, 12:20] = True
        mask[5, 19:22, 15] = True  # an irregular part
    else:
        mask[0:3, 35:40, 0:4] = True  # touches three faces of the volume
    f = finding_from_mask((0.0, 0.0, 0.0), 0.9, "nodule", mask, ct)
    whole = measure(ct.with_array(mask.astype(np.uint8)), ct)
    assert f.measurements.volume_ml == pytest.approx(whole.volume_ml, rel=1e-12)
    got, want = asdict(f.measurements), asdict(whole)
    assert got.pop("intensity_unit") == want.pop("intensity_unit") == "HU"
    assert got == pytest.approx(want, rel=1e-9, abs=1e-9, nan_ok=True)
    assert np.array_equal(np.asarray(f.mask.array) > 0, mask)


def test_detect_mirrored_averages_every_flip_and_is_plain_without_axes() -> None:
    from medanomaly.detect.infer import mirrored

    image = np.random.default_rng(0).random((3, 4, 5))
    ramp = np.arange(5.0)  # a run that is not mirror-symmetric: it adds a left-to-right ramp

    def run(a):
        return a + ramp

    assert np.array_equal(mirrored(run, image), run(image))
    np.testing.assert_allclose(mirrored(run, image, ["x"]), image + ramp.mean(), rtol=1e-6)
    both = mirrored(run, image, ["y", "x"])
    np.testing.assert_allclose(both, image + ramp.mean(), rtol=1e-6)  # y flips do not touch the ramp
    calls = []
    mirrored(lambda a: calls.append(a.shape) or a, image, ["x", "y", "z"])
    assert len(calls) == 8


def test_detect_mirror_axes_reach_the_heatmap_and_survive_save_load(tiny_detector, toy_source) -> None:
    det, _ = tiny_detector
    loaded = NoduleDetector.load(_save(det))
    region = loaded.region(toy_source.lung, side=1)
    loaded.mirror_axes = ()
    plain = loaded.heatmap(toy_source.ct, region).array
    loaded.mirror_axes = ("x",)
    flipped = loaded.heatmap(toy_source.ct, region).array
    again = NoduleDetector.load(_save(loaded))
    assert again.mirror_axes == ("x",)
    np.testing.assert_array_equal(again.heatmap(toy_source.ct, region).array, flipped)
    assert not np.array_equal(plain, flipped)  # a trained (asymmetric) network changes under the flip


def test_detect_a_run_saved_before_mirroring_loads_with_one_pass(tiny_detector) -> None:
    import json

    det, _ = tiny_detector
    path = _save(det)
    params = json.loads((path / "detector.json").read_text())
    del params["mirror_axes"]
    (path / "detector.json").write_text(json.dumps(params))
    assert NoduleDetector.load(path).mirror_axes == () and NoduleDetector().mirror_axes == ("x",)


def test_detect_threads_auto_keeps_a_timed_count_and_saves_it(toy_source, tmp_path, monkeypatch) -> None:
    """On a CPU machine (a GPU machine trains on the GPU and does not probe: test_thread_probe)."""
    import torch

    from medanomaly.detect.patches import to_grid_scan
    from medanomaly.detect.simulate import simulate_scan
    from medanomaly.train.thread_probe import thread_candidates

    from .conftest import TINY

    sim = simulate_scan(toy_source, 1, 3, np.random.default_rng(0), (6.0, 15.0))
    scans = [to_grid_scan(sim, TINY["spacing_mm"], (-1000.0, 400.0))]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    det = NoduleDetector(**{**TINY, "threads": "auto"}).fit(scans, progress=False)
    assert det.threads in thread_candidates() and det.fit_.threads == det.threads
    if len(thread_candidates()) > 1:  # a one-CPU machine has nothing to time
        assert set(det.fit_.to_json()["thread_probe_step_seconds"]) == {str(c) for c in thread_candidates()}
    det.save(tmp_path)
    assert NoduleDetector.load(tmp_path).threads == det.threads  # an int: inference never sees "auto"
