"""LUNA16: the loader on a fixture in the exact layout (real CT crops with real LIDC shapes inserted),
the 10-fold split, and the challenge's CPM checked against a FROC worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from medanomaly.data.luna16 import (ANNOTATION_COLUMNS, CANDIDATE_COLUMNS, Luna16, read_annotations,
                                    read_candidates, write_csv, write_scan)
from medanomaly.errors import InputError
from medanomaly.evaluate.luna16 import (FP_RATES, ScanOutcome, evaluate_cad, froc_curve, match_scan,
                                        read_results, sensitivities)
from medanomaly.types import Volume

UID = "1.3.6.1.4.1.14519.5.2.1.6279.6001.90000000000000000000000000{:02d}"


def _slab(case: str, z0: int, n: int = 8) -> tuple[Volume, Volume]:
    """``n`` slices of a real pyradiomics CT, cropped in-plane to its lungs, and the lung mask."""
    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.io import read
    from medanomaly.preprocess.segment import lung_mask

    full = read(pyradiomics_case(case)[0])
    arr = np.asarray(full.array)[z0:z0 + n]
    ct = Volume(arr, spacing=full.spacing, origin=full.index_to_physical([0, 0, z0]), direction=full.direction,
                meta={"modality": "CT"})
    lung = np.asarray(lung_mask(ct).array)
    ys, xs = np.nonzero(lung.any(axis=0))
    y0, y1, x0, x1 = ys.min() - 8, ys.max() + 9, xs.min() - 8, xs.max() + 9
    origin = ct.index_to_physical([x0, y0, 0])
    crop = lambda a: Volume(a[:, y0:y1, x0:x1], spacing=ct.spacing, origin=origin, direction=ct.direction,  # noqa: E731
                            meta={"modality": "CT"})
    return crop(arr), crop(lung)


@pytest.fixture(scope="module")
def luna_root(tmp_path_factory):
    """Three scans in subset0-2 (two of lung1 with different nodules, one of lung2; their real lesions
    left out), 5 inserted
    real LIDC test-split shapes, annotations.csv and candidates.csv exactly as LUNA16 lays them out."""
    from medanomaly.data.lidc_shapes import load_library
    from medanomaly.synth.insert import insert_shapes, prepare_background

    root = tmp_path_factory.mktemp("luna16")
    lib = load_library()
    pool = lib.indices("test", min_diameter_mm=5.0, max_diameter_mm=16.0)
    rng = np.random.default_rng(0)
    ann, cand, truth = [], [], {}
    slabs = {case: _slab(case, z0) for case, z0 in (("lung1", 14), ("lung2", 36))}
    backgrounds = {case: prepare_background(ct, lung=lung, name=case) for case, (ct, lung) in slabs.items()}
    for k, (case, n_nod) in enumerate([("lung1", 2), ("lung2", 2), ("lung1", 1)]):
        lung, bg = slabs[case][1], backgrounds[case]
        shapes = [lib[int(i)] for i in rng.choice(pool, n_nod, replace=False)]
        out, labels, recs = insert_shapes(bg, shapes, rng)
        uid = UID.format(k)
        write_scan(out, root, fold=k, seriesuid=uid)
        truth[uid] = (out, labels, recs)
        for r in recs:
            ann.append((uid, *r.center_mm, round(r.diameter_mm, 3)))
            cand.append((uid, *(np.asarray(r.center_mm) + rng.normal(0, 0.5, 3)), 1))
        far = np.argwhere(np.asarray(lung.array) > 0)[rng.choice(int((np.asarray(lung.array) > 0).sum()), 4)]
        cand += [(uid, *out.index_to_physical(v[::-1].astype(float)), 0) for v in far]
    write_csv(root / "annotations.csv", ANNOTATION_COLUMNS, ann)
    write_csv(root / "candidates.csv", CANDIDATE_COLUMNS, cand)
    return root, truth


# ----------------------------------------------------------------------------------- the loader
def test_loader_reads_the_layout_and_world_coordinates_hit_the_nodules(luna_root):
    root, truth = luna_root
    data = Luna16(root)
    assert len(data) == 3 and data.folds == {UID.format(k): k for k in range(3)}
    for uid, (out, labels, recs) in truth.items():
        ct = data.read(uid)
        assert ct.modality == "CT" and ct.same_grid(out)
        assert np.array_equal(ct.array, out.array)
        nods = data.nodules(uid)
        assert len(nods) == len(recs)
        for nod, rec in zip(nods, recs, strict=True):
            idx = np.rint(ct.physical_to_index(nod.center_mm)).astype(int)  # (x, y, z)
            assert labels.array[idx[2], idx[1], idx[0]] > 0  # the world centre lies in the inserted nodule
            assert nod.diameter_mm == pytest.approx(rec.diameter_mm, abs=1e-3)
        labels_of = [c.label for c in data.candidates[uid]]
        assert labels_of.count(1) == len(recs) and labels_of.count(0) == 4


def test_folds_are_subsets(luna_root):
    data = Luna16(luna_root[0])
    split = data.split(test_fold=1)
    assert split == {"test": [UID.format(1)], "val": [UID.format(2)], "train": [UID.format(0)]}
    assert data.split(test_fold=2)["val"] == [UID.format(0)]  # wraps round to the first fold present
    tested = [uid for s in data.cross_validation() for uid in s["test"]]
    assert sorted(tested) == sorted(data.scans)
    with pytest.raises(InputError, match="test fold 7 has no scan"):
        data.split(test_fold=7)
    with pytest.raises(InputError, match="must differ"):
        data.split(test_fold=1, val_fold=1)


def test_bad_layouts_are_input_errors(tmp_path, luna_root):
    with pytest.raises(InputError, match="not found"):
        Luna16(tmp_path / "nowhere")
    with pytest.raises(InputError, match="no subset"):
        Luna16(tmp_path)
    ct = Volume(np.zeros((2, 4, 4), np.int16), meta={"modality": "CT"})
    write_scan(ct, tmp_path, 0, "1.2.3")
    with pytest.raises(InputError, match="annotations.csv: file not found"):
        Luna16(tmp_path)
    (tmp_path / "annotations.csv").write_text("seriesuid,coordX,coordY,coordZ\n")
    with pytest.raises(InputError, match="diameter_mm missing"):
        Luna16(tmp_path)
    (tmp_path / "annotations.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n1.2.3,1,2,x,4\n")
    with pytest.raises(InputError, match="line 2"):
        Luna16(tmp_path)
    (tmp_path / "annotations.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n")
    data = Luna16(tmp_path)
    assert data.nodules("1.2.3") == []
    (tmp_path / "subset0" / "1.2.3.raw").unlink()
    with pytest.raises(InputError, match="1.2.3.raw is missing"):
        data.read("1.2.3")
    with pytest.raises(InputError, match="not in any subset"):
        data.read("9.9")
    write_scan(ct, tmp_path, 1, "1.2.3")
    with pytest.raises(InputError, match="two subsets"):
        Luna16(tmp_path)
    (tmp_path / "c.csv").write_text("seriesuid,coordX,coordY,coordZ,class\n1.2.3,0,0,0,2\n")
    with pytest.raises(InputError, match="class must be 0 or 1"):
        read_candidates(tmp_path / "c.csv")
    with pytest.raises(InputError, match="digits and dots"):
        write_scan(ct, tmp_path, 0, "../evil")


def test_cpm_on_the_fixture(luna_root):
    root, _ = luna_root
    data = Luna16(root)
    scans = sorted(data.scans)
    # a perfect system: the nodule candidates first; a system ranking everything backwards
    perfect = {u: [(c.center_mm, 0.2 + 0.7 * c.label) for c in cs] for u, cs in data.candidates.items()}
    worst = {u: [(c.center_mm, 0.9 - 0.7 * c.label) for c in cs] for u, cs in data.candidates.items()}
    good = evaluate_cad(data.annotations, perfect, scans, n_bootstrap=200)
    bad = evaluate_cad(data.annotations, worst, scans, n_bootstrap=0)
    assert good.n_nodules == 5 and good.n_detected == 5 and good.n_false_positives == 12
    assert good.cpm == 1.0 and good.cpm_ci == (1.0, 1.0)
    # backwards: all 12 FPs (4 per scan) come first, so every nodule costs 4 FP/scan or more
    assert bad.sensitivity[2.0] == 0.0 and bad.sensitivity[8.0] == 1.0 and bad.cpm < good.cpm
    assert evaluate_cad(data.annotations, {}, scans, n_bootstrap=0).cpm == 0.0


# ----------------------------------------------------------------------------------- CPM by hand
def _hand_case():
    nodules = {"A": [((0, 0, 0), 10.0), ((50, 0, 0), 6.0)], "B": [((0, 0, 0), 8.0)]}
    excluded = {"B": [((30, 30, 30), -1.0)]}  # a negative diameter counts as 10 mm
    marks = {
        "A": [((1, 1, 0), 0.9),     # hits nodule A1
              ((2, 0, 0), 0.6),     # second hit on A1: ignored
              ((50, 2.9, 0), 0.5),  # hits A2 (2.9 < 3 mm)
              ((20, 0, 0), 0.8),    # FP
              ((50, 3.5, 0), 0.95)],  # FP: 3.5 mm > radius 3 mm
        "B": [((0, 0, 3.9), 0.3),   # hits B1 (3.9 < 4 mm)
              ((100, 0, 0), 0.7),   # FP
              ((31, 30, 30), 0.99),  # on the excluded finding: ignored
              ((0, 0, 4.0), 0.85)],  # FP: exactly on the radius is not a hit
    }
    return nodules, marks, excluded


def test_cpm_matches_a_froc_worked_out_by_hand():
    nodules, marks, excluded = _hand_case()
    res = evaluate_cad(nodules, marks, ["A", "B", "C"], excluded=excluded, n_bootstrap=0)
    # Ranked: .95 FP, .9 TP, .85 FP, .8 FP, .7 FP, .5 TP, .3 TP over 3 scans (C has no marks) and 3 nodules:
    # (FP/scan, sens) = (0,0) (1/3,0) (1/3,1/3) (2/3,1/3) (1,1/3) (4/3,1/3) (4/3,2/3) (4/3,1)
    assert np.allclose(res.fps_per_scan, [0, 1 / 3, 1 / 3, 2 / 3, 1, 4 / 3, 4 / 3, 4 / 3])
    assert np.allclose(res.sens, [0, 0, 1 / 3, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 1])
    expected = {0.125: 0.0, 0.25: 0.0, 0.5: 1 / 3, 1.0: 1 / 3, 2.0: 1.0, 4.0: 1.0, 8.0: 1.0}
    assert res.sensitivity == pytest.approx(expected)
    assert res.cpm == pytest.approx(11 / 21)
    assert (res.n_detected, res.n_false_positives, res.n_ignored) == (3, 4, 2)


def test_sensitivity_by_size_matches_the_hand_case():
    """The same case by diameter band: 6-10 mm holds A2 (6 mm, hit at 0.5) and B1 (8 mm, 0.3), under all four false
    positives (0.95 ... 0.7), so none is reached by 1 FP/scan; 10 mm or more holds A1, hit at 0.9 after one false
    positive. A1's mark is neither a hit nor a false positive for the 6-10 mm band."""
    nodules, marks, excluded = _hand_case()
    res = evaluate_cad(nodules, marks, ["A", "B", "C"], excluded=excluded, n_bootstrap=0)
    rows = [(b["band_mm"], b["n"], b["found"], b["sensitivity"]) for b in res.by_size]
    assert rows == [([6.0, 10.0], 2, 2, 0.0), ([10.0, None], 1, 1, 1.0)]
    assert res.to_json()["sensitivity_by_size"] == res.by_size


def test_ties_interpolate_along_the_diagonal():
    # one nodule and one FP with the same probability: the curve jumps from (0, 0) to (1, 1)
    res = evaluate_cad({"s": [((0, 0, 0), 6.0)]}, {"s": [((0, 0, 0), 0.5), ((40, 0, 0), 0.5)]}, ["s"],
                       n_bootstrap=0)
    assert res.sensitivity == pytest.approx({0.125: 0.125, 0.25: 0.25, 0.5: 0.5, 1.0: 1.0, 2.0: 1.0, 4.0: 1.0,
                                             8.0: 1.0})
    assert res.cpm == pytest.approx((0.125 + 0.25 + 0.5 + 4) / 7)


def test_official_roc_formulation_agrees_on_random_cases():
    """The challenge computes the curve with sklearn's roc_curve and rescales it; so do we here."""
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(0)
    for _ in range(20):
        outcomes = [ScanOutcome(tuple(float(p) if rng.random() < 0.7 else None for p in rng.random(rng.integers(1, 4))),
                                tuple(rng.random(rng.integers(0, 6)).round(2))) for _ in range(5)]
        fps, sens, _ = froc_curve(outcomes)
        ours = sensitivities(fps, sens)
        gt = [1] * sum(p is not None for o in outcomes for p in o.nodule_probs) + [0] * sum(len(o.fp_probs) for o in outcomes)
        prob = [p for o in outcomes for p in o.nodule_probs if p is not None] + [p for o in outcomes for p in o.fp_probs]
        n_total, n_det, n_fp = sum(len(o.nodule_probs) for o in outcomes), sum(gt), len(gt) - sum(gt)
        if n_det == 0 or n_fp == 0:
            continue
        fpr, tpr, _ = roc_curve(gt, prob)
        ref = {r: float(np.interp(r, fpr * n_fp / len(outcomes), tpr * n_det / n_total)) for r in FP_RATES}
        assert ours == pytest.approx(ref)


def test_duplicates_excluded_and_mark_limit():
    out = match_scan([((0, 0, 0), 10.0)], [((0, 0, 0), 0.2), ((1, 0, 0), 0.9), ((2, 0, 0), 0.5)])
    assert out.nodule_probs == (0.9,) and out.fp_probs == () and out.n_ignored == 2
    many = [((100.0 + i, 0, 0), 0.001 * i) for i in range(150)] + [((0, 0, 0), 0.05)]
    kept = match_scan([((0, 0, 0), 10.0)], many, max_marks=100)
    assert kept.nodule_probs == (None,)  # 100 FPs of higher probability push the hit out
    assert len(kept.fp_probs) == 100 and min(kept.fp_probs) == pytest.approx(0.05)
    assert match_scan([((0, 0, 0), 10.0)], many, max_marks=0).nodule_probs == (0.05,)


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    nodules, marks, excluded = _hand_case()
    a = evaluate_cad(nodules, marks, ["A", "B", "C"], excluded=excluded, n_bootstrap=300, seed=1)
    b = evaluate_cad(nodules, marks, ["A", "B", "C"], excluded=excluded, n_bootstrap=300, seed=1)
    assert a.cpm_ci == b.cpm_ci and a.cpm_ci[0] <= a.cpm <= a.cpm_ci[1] and a.cpm_ci[0] < a.cpm_ci[1]
    assert set(a.to_json()["sensitivity_ci"]) == {str(r) for r in FP_RATES}


def test_results_csv_and_errors(tmp_path):
    path = tmp_path / "results.csv"
    write_csv(path, ("seriesuid", "coordX", "coordY", "coordZ", "probability"), [("A", 1, 1, 0, 0.9)])
    assert read_results(path) == {"A": [((1.0, 1.0, 0.0), 0.9)]}
    path.write_text("seriesuid,coordX,coordY,coordZ\nA,1,1,0\n")
    with pytest.raises(InputError, match="probability missing"):
        read_results(path)
    for bad in ("nan", "inf", "-inf"):  # float() takes them; no probability or coordinate is one
        path.write_text(f"seriesuid,coordX,coordY,coordZ,probability\nA,1,1,0,0.9\nA,1,1,0,{bad}\n")
        with pytest.raises(InputError, match="line 3: .* must be finite numbers"):
            read_results(path)
        (tmp_path / "ann.csv").write_text(f"seriesuid,coordX,coordY,coordZ,diameter_mm\nA,1,{bad},0,5\n")
        with pytest.raises(InputError, match="line 2: .* must be finite numbers"):
            read_annotations(tmp_path / "ann.csv")
    with pytest.raises(InputError, match="no scan"):
        evaluate_cad({}, {}, [])
    with pytest.raises(InputError, match="has a reference nodule"):
        evaluate_cad({}, {"A": []}, ["A"])
    with pytest.raises(InputError, match="file not found"):
        read_annotations(tmp_path / "none.csv")


def test_reference_diameters_must_be_positive_excluded_ones_need_not(tmp_path):
    path = tmp_path / "ann.csv"
    for bad in ("0", "-1", "-0.5"):
        path.write_text(f"seriesuid,coordX,coordY,coordZ,diameter_mm\nA,1,1,0,5\nA,1,1,0,{bad}\n")
        with pytest.raises(InputError, match=f"line 3: diameter_mm must be positive, got '{bad}'"):
            read_annotations(path)
        assert read_annotations(path, excluded=True)["A"][1].diameter_mm == float(bad)  # LUNA16 writes -1 there


def test_docstring_examples():
    import doctest

    import medanomaly.data.luna16
    import medanomaly.detect.luna16_source
    import medanomaly.evaluate.luna16
    import medanomaly.evaluate.luna16_report

    for mod in (medanomaly.data.luna16, medanomaly.evaluate.luna16, medanomaly.detect.luna16_source,
                medanomaly.evaluate.luna16_report):
        result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0


# ----------------------------------------------------------------------------------- the recipe
def test_sphere_targets_have_the_annotated_size():
    from medanomaly.detect.luna16_source import sphere_target

    grid = Volume(np.zeros((20, 40, 40), np.float32), spacing=(1.0, 1.0, 2.0), origin=(-20.0, -20.0, -20.0))
    sphere = 4 / 3 * np.pi * 5.0**3  # mm3 of a 10 mm nodule
    big = sphere_target(grid, [((0.0, 0.0, 0.0), 10.0)])
    assert abs(big.sum() * 2.0 - sphere) / sphere < 0.15 and big[10, 20, 20] == 1
    zs = np.nonzero(big.any(axis=(1, 2)))[0]
    assert (zs.min(), zs.max()) == (8, 12)  # +-5 mm at 2 mm slices: z = -4 .. +4 mm
    small = sphere_target(grid, [((0.3, 10.0, 6.0), 1.0), ((500.0, 0.0, 0.0), 8.0)])
    assert small.sum() == 1 and small[13, 30, 20] == 1  # thinner than a voxel: its centre voxel; outside: none


def test_a_scan_without_lungs_gets_no_marks_and_is_listed(luna_root):
    from medanomaly.detect.luna16_source import detect_marks

    class Stub:  # finds one mark per scan, and no lungs in the second scan
        def detect(self, ct):
            if ct.shape[0] and np.asarray(ct.array).flat[0] == self.bad:
                raise InputError("no lungs found")
            return [type("F", (), {"center_mm": (1.0, 2.0, 3.0), "score": 0.7})()]

    data = Luna16(luna_root[0])
    uids = sorted(data.scans)
    stub = Stub()
    stub.bad = np.asarray(data.read(uids[1]).array).flat[0]
    assert np.asarray(data.read(uids[0]).array).flat[0] != stub.bad
    marks, no_lungs = detect_marks(stub, data, uids[:2], progress=False)
    assert no_lungs == [uids[1]] and marks == {uids[0]: [((1.0, 2.0, 3.0), 0.7)], uids[1]: []}


@pytest.mark.slow  # ~20 s on 2 busy cores: train 3 steps, detect on two folds
def test_luna16_recipe_trains_on_annotations_and_scores_the_test_fold(luna_root, tmp_path):
    """`medanomaly train` on a config with a luna16: section: trained on fold 0's annotated nodules,
    marks written for the test fold (1) and scored with the challenge's CPM; then the val fold (2)."""
    import json

    from medanomaly.config import parse_config
    from medanomaly.engine.verbs import evaluate_run, train_run

    root, truth = luna_root
    cfg = parse_config({
        "task": "lung_nodule", "seed": 0, "luna16": {"root": str(root), "test_fold": 1, "n_bootstrap": 50},
        "grid": {"spacing_mm": [2.5, 2.5, 5.0]}, "model": {"name": "nodule_unet", "params": {"filters": [4, 8, 16]}},
        "train": {"steps": 3, "batch_size": 2, "patch_size": [4, 32, 32], "threads": 1},
        "infer": {"roi_size": [8, 64, 64], "explain_top": 0, "candidate_threshold": 0.51, "max_findings": 12,
                  "grow": False, "mirror_axes": []},
    })  # 3 steps: the map is ~0.5 everywhere; at 0.51 it falls apart into many marks (plumbing, not accuracy;
    # one pass: mirroring would average the untrained map's noise under 0.51)
    run = train_run(cfg, tmp_path / "run")
    history = json.loads((run / "train_history.json").read_text())
    assert history["n_train_scans"] == 1 and history["train_scans"] == [UID.format(0)]
    assert history["n_train_nodules"] == len(truth[UID.format(0)][2]) and history["synthetic"] is False
    assert json.loads((run / "model.json").read_text())["synthetic"] is False
    marks = read_results(run / "luna16_test_results.csv")
    assert set(marks) == {UID.format(1)} and len(marks[UID.format(1)]) >= 1
    test = json.loads((run / "metrics.json").read_text())["luna16"]["test"]
    assert (test["fold"], test["n_scans"], test["n_nodules"]) == (1, 1, len(truth[UID.format(1)][2]))
    data = Luna16(root)
    again = evaluate_cad(data.annotations, marks, [UID.format(1)], n_bootstrap=0)
    assert test["cpm"] == pytest.approx(again.cpm) and 0.0 <= test["cpm"] <= 1.0 and test["n_bootstrap"] == 50
    assert test["n_detected"] + test["n_false_positives"] + test["n_ignored"] == sum(len(m) for m in marks.values())
    evaluate_run(run, "val")
    both = json.loads((run / "metrics.json").read_text())["luna16"]
    assert set(both) == {"test", "val"} and both["val"]["fold"] == 2 and both["test"]["scans_without_lungs"] == []
    html = (run / "report.html").read_text()
    assert "fold 1 (1 scans" in html and "fold 2 (1 scans" in html and (run / "luna16_val_froc.png").is_file()
    assert sum(b["n"] for b in test["sensitivity_by_size"]) == test["n_nodules"]
    assert html.count("found at any score") == 2  # the per-size table of each fold
