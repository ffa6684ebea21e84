"""Case study: do Grad-CAM and occlusion point at real lung lesions? (``python -m medanomaly.detect.explain_study``)

1. The lung-nodule detector (a trained ``lung_nodule`` run given with ``--run``, else trained here
   with :class:`~medanomaly.detect.detector.NoduleDetector` on simulated nodules inserted into the
   **right** lungs of lung1 and lung2, the real lesions excluded with a 20 mm margin).
2. **Real lesions**: for lung1 and lung2, a detector patch centred on the real lesion (expert mask)
   is explained with each method; the map's peak must fall inside the real lesion.
3. **Held-out simulated lesions** (synthetic): nodules inserted into the **left** lungs (never used
   for training); the pointing-game score is reported with its count.

Writes ``casestudy.json`` and the overlays of the real lesions into ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.jsonio import write_text_atomic
from medanomaly.types import Volume


#: Pointing-game tolerance also reported (mm): about one 5 mm slice.
TOLERANCE_MM = 5.0


def _mask_on(mask: Volume, view: Volume) -> Volume:
    from medanomaly.preprocess.resample import mask_onto_grid

    m = mask_onto_grid(mask, view)
    return m.with_array((np.asarray(m.array) >= 0.5).astype(np.uint8))


def _centre_mm(mask: Volume) -> tuple[float, float, float]:
    zyx = np.argwhere(np.asarray(mask.array) > 0).mean(0)
    return tuple(float(v) for v in mask.index_to_physical(zyx[::-1]))  # type: ignore[return-value]


def train_detector(steps: int = 300, seed: int = 0, scans_per_source: int = 3) -> Any:
    """A detector trained on synthetic nodules in the right lungs of lung1/lung2 (real lesions excluded)."""
    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.detect.detector import NoduleDetector
    from medanomaly.detect.patches import to_grid_scan
    from medanomaly.detect.simulate import load_source, simulate_scan

    det = NoduleDetector(model_params={"filters": [8, 16, 32]}, steps=steps, seed=seed, threads=2)
    rng = np.random.default_rng(seed)
    scans = []
    for case in ("lung1", "lung2"):
        image, mask = pyradiomics_case(case)
        source = load_source(case, image, mask)
        for k in range(scans_per_source):
            sim = simulate_scan(source, side=1, n_nodules=8, rng=rng, name=f"{case}-train{k}")
            scans.append(to_grid_scan(sim, det.spacing_mm, det.hu_window))
    return det.fit(scans, progress=True)


#: Occlusion on a 16 x 96 x 96 detector patch: a 4 x 24 x 24 occluder (20 x 30 x 30 mm), 125 positions.
OPTIONS = {"occlusion": {"mask_size": (4, 24, 24), "overlap": 0.25}}


def run(out_dir: Path, run_dir: Path | None = None, steps: int = 300, methods: tuple[str, ...] = ("gradcam", "occlusion"),
        n_heldout_scans: int = 2, seed: int = 1, scans_per_source: int = 3) -> dict[str, Any]:  # fmt: skip
    """Explain the real lesions of lung1/lung2 and held-out simulated nodules; returns the summary."""
    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.detect.detector import NoduleDetector
    from medanomaly.detect.simulate import load_source, simulate_scan
    from medanomaly.detect.model import detector_explainable
    from medanomaly.explain.findings import explain_findings_detailed
    from medanomaly.io import read
    from medanomaly.types import Finding

    out_dir.mkdir(parents=True, exist_ok=True)
    if run_dir is not None:
        det = NoduleDetector.load(run_dir)
    else:
        det = train_detector(steps=steps, scans_per_source=scans_per_source)
        det.save(out_dir / "detector")
    ex = detector_explainable(det)
    summary: dict[str, Any] = {"detector": str(run_dir) if run_dir else "trained here (synthetic nodules)",
                               "real_lesions": {}, "heldout_synthetic": {}}  # fmt: skip
    for case in ("lung1", "lung2"):
        image_path, mask_path = pyradiomics_case(case)
        ct, lesion = read(image_path).with_meta(modality="CT"), read(mask_path)
        finding = Finding(center_mm=_centre_mm(lesion), bbox_mm=((0, 0, 0), (0, 0, 0)), score=1.0,
                          label="real lesion", mask=lesion)  # fmt: skip
        for method in methods:
            (res,) = explain_findings_detailed(ex, ct, [finding], out_dir, method=method, stem=f"{case}_{method}",
                                               **OPTIONS.get(method, {}))  # fmt: skip
            summary["real_lesions"][f"{case}/{method}"] = {"peak_in_lesion": res.peak_in_mask, "png": str(res.png)}
            print(f"{case} {method}: peak inside the real lesion = {res.peak_in_mask}")
    # held-out synthetic nodules in the left lungs
    rng = np.random.default_rng(seed)
    from medanomaly.explain.faithfulness import pointing_game

    hits = {m: [] for m in methods}
    near = {m: [] for m in methods}
    for case in ("lung1", "lung2"):
        image_path, mask_path = pyradiomics_case(case)
        source = load_source(case, image_path, mask_path)
        for k in range(n_heldout_scans):
            sim = simulate_scan(source, side=2, n_nodules=4, rng=rng, name=f"{case}-heldout{k}")
            ct = sim.ct.with_meta(modality="CT")
            for j, truth in enumerate(sim.truths):
                mask = sim.labels.with_array((np.asarray(sim.labels.array) == j + 1).astype(np.uint8))
                finding = Finding(center_mm=truth.center_mm, bbox_mm=((0, 0, 0), (0, 0, 0)), score=1.0,
                                  label="synthetic nodule", mask=mask)  # fmt: skip
                for method in methods:
                    res = explain_findings_detailed(ex, ct, [finding], None, method=method, write_png=False,
                                                    **OPTIONS.get(method, {}))  # fmt: skip
                    if res and res[0].peak_in_mask is not None:
                        hits[method].append(bool(res[0].peak_in_mask))
                        near[method].append(pointing_game(res[0].map, _mask_on(mask, res[0].view), TOLERANCE_MM))
    for method, h in hits.items():
        n5 = near[method]
        summary["heldout_synthetic"][method] = {"pointing_game": float(np.mean(h)) if h else None,
                                                "hits": int(sum(h)), "count": len(h),
                                                f"hits_within_{TOLERANCE_MM:g}mm": int(sum(n5)),
                                                "synthetic": True}  # fmt: skip
        print(f"held-out synthetic nodules, {method}: pointing game {sum(h)}/{len(h)} "
              f"({sum(n5)}/{len(n5)} within {TOLERANCE_MM:g} mm)")
    write_text_atomic(out_dir / "casestudy.json", json.dumps(summary, indent=2))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/explain-casestudy"))
    parser.add_argument("--run", type=Path, default=None, help="a trained lung_nodule run directory")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--heldout-scans", type=int, default=2, help="held-out scans per source (4 nodules each)")
    parser.add_argument("--train-scans", type=int, default=3, help="training scans per source (8 nodules each)")
    args = parser.parse_args()
    run(args.out, args.run, args.steps, n_heldout_scans=args.heldout_scans, scans_per_source=args.train_scans)


if __name__ == "__main__":
    main()
