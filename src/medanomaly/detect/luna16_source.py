"""The LUNA16 recipe: train the lung-nodule detector on LUNA16's annotated nodules, test on a held-out fold.

A ``lung_nodule`` config with a ``luna16:`` section (``configs/luna16.yaml``) reads the challenge
folder with :class:`medanomaly.data.luna16.Luna16` instead of simulating nodules:

* **Folds**: ``Luna16.split(test_fold, val_fold)``: test = ``subset<test_fold>``, validation = the
  next fold present (or ``val_fold``), training = the other subsets. A scan is in one fold only.
* **Training targets**: each training scan is resampled to the detector grid exactly as the
  simulated scans are (:func:`medanomaly.detect.grid.to_grid`, the recorded detection recipe);
  its target is a **sphere of the annotated diameter** at each ``annotations.csv`` world centre
  (LPS mm, the MetaImage's physical space), rendered on that grid (a voxel is in when its centre
  is within ``diameter / 2``; the voxel holding the centre always is, so a 3 mm nodule on 2.5 mm
  slices is never empty). Patch centres: the lungs grown by ``infer.lung_margin_mm`` (juxtapleural
  nodules) and the target voxels. At most ``max_train_scans`` training scans are loaded, drawn by
  the run's seed, and held in memory (11 bytes per grid voxel plus the patch sampler's index of the
  lung voxels: an estimated 150-200 MB per LUNA16 scan at 1.25 x 1.25 x 2.5 mm, not measured on LUNA16).
* **Evaluation**: the detector searches both lungs of each scan of the split; every finding is a
  CAD mark (its centre, its score as probability), written as a LUNA16 submission CSV
  (``luna16_<split>_results.csv``: ``seriesuid,coordX,coordY,coordZ,probability``) and scored with
  the challenge's rules (:func:`medanomaly.evaluate.luna16.evaluate_cad`: hit within the radius,
  ``annotations_excluded.csv`` ignored, FROC linearly interpolated, CPM, bootstrap CIs over scans).

These are real CT scans and real radiologists' annotations (not synthetic): metrics say so.

Example:
    >>> Luna16Section(root="/data/LUNA16", test_fold=0).max_train_scans
    64
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from medanomaly.detect.detection_config import Finite
from medanomaly.jsonio import read_json

__all__ = ["Luna16Section", "evaluate_luna16", "luna16_grid_scan", "sphere_target", "train_luna16"]


class Luna16Section(Finite):
    """Where the LUNA16 data is and how it is split (the ``luna16:`` section of a ``lung_nodule`` config).

    Attributes:
        root: the folder holding ``subset0..9/`` and ``annotations.csv``.
        test_fold / val_fold: the held-out subsets (``val_fold`` None = the next fold present).
        max_train_scans: training scans loaded into memory (drawn by the seed from the training folds).
        max_eval_scans: scans evaluated per split (the first ones by series UID; the FP-per-scan
            denominator is the scans evaluated).
        n_bootstrap: bootstrap resamples of the scans for the CIs (0 = none).
    """

    root: Path
    test_fold: int = Field(0, ge=0, le=9)
    val_fold: int | None = Field(None, ge=0, le=9)
    max_train_scans: int = Field(64, ge=1, le=10_000)
    max_eval_scans: int = Field(10_000, ge=1, le=10_000)
    n_bootstrap: int = Field(1000, ge=0, le=100_000)


# ------------------------------------------------------------------------------------ targets
def sphere_target(grid: Any, nodules: Sequence[tuple[Sequence[float], float]]) -> np.ndarray:
    """uint8 mask (z, y, x) on ``grid`` (a Volume) of spheres ``(centre (x, y, z) mm LPS, diameter mm)``.

    A voxel is inside when its centre lies within ``diameter / 2`` of the sphere's centre; the voxel
    holding the centre is always inside. Nodules whose centre lies outside the grid are skipped.
    """
    out = np.zeros(grid.shape, np.uint8)
    spacing = np.asarray(grid.spacing, float)  # x, y, z
    size = np.asarray(grid.size_xyz)
    for centre, diameter in nodules:
        c_idx = np.asarray(grid.physical_to_index(np.asarray(centre, float)), float)  # x, y, z
        nearest = np.rint(c_idx).astype(int)
        if np.any(nearest < 0) or np.any(nearest >= size):
            continue
        reach = np.ceil(diameter / 2.0 / spacing).astype(int) + 1
        lo, hi = np.maximum(nearest - reach, 0), np.minimum(nearest + reach + 1, size)
        xs, ys, zs = (np.arange(a, b) for a, b in zip(lo, hi, strict=True))
        zz, yy, xx = np.meshgrid(zs, ys, xs, indexing="ij")
        pts = grid.index_to_physical(np.stack([xx.ravel(), yy.ravel(), zz.ravel()], 1).astype(float))
        inside = (np.linalg.norm(pts - np.asarray(centre, float), axis=1) <= diameter / 2.0).reshape(zz.shape)
        box = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
        out[box] |= inside.astype(np.uint8)
        out[nearest[2], nearest[1], nearest[0]] = 1
    return out


def luna16_grid_scan(ct: Any, nodules: Sequence[Any], cfg: Any, name: str) -> Any:
    """A LUNA16 CT with its annotated nodules as a training :class:`~medanomaly.detect.patches.GridScan`
    on the detector grid of ``cfg`` (a :class:`~medanomaly.detect.config.LungNoduleConfig`)."""
    from medanomaly.detect.grid import lung_region, to_grid, window
    from medanomaly.detect.infer import grid_region
    from medanomaly.detect.patches import GridScan

    spacing = cfg.grid.spacing_mm
    grid = to_grid(ct, spacing)
    hu = np.asarray(grid.array, np.float32)
    allowed = grid_region(lung_region(ct), spacing, None, cfg.infer.lung_margin_mm)
    if allowed.shape != hu.shape:
        raise ValueError(f"lung region {allowed.shape} is not on the detector grid {hu.shape}")
    target = sphere_target(grid, [(tuple(n.center_mm), float(n.diameter_mm)) for n in nodules])
    return GridScan(name=name, image=window(hu, *cfg.grid.hu_window), target=target, allowed=allowed,
                    exclude=np.zeros(hu.shape, bool), hu=hu)  # fmt: skip


def _training_uids(section: Luna16Section, split: dict[str, list[str]], seed: int) -> list[str]:
    uids = list(split["train"])
    if len(uids) > section.max_train_scans:
        pick = np.random.default_rng([seed, 16]).choice(len(uids), section.max_train_scans, replace=False)
        uids = [uids[i] for i in sorted(pick)]
    return uids


def _iterate(items: list[Any], progress: bool, what: str) -> Any:
    if not progress:
        return items
    from rich.progress import track

    return track(items, description=what)


# ------------------------------------------------------------------------------------ train
def train_luna16(config: Any, run_dir: Path, out_dir: Path | None = None, progress: bool = True) -> Path:
    """Train the detector on the LUNA16 training folds' annotated nodules, save it, evaluate the test fold."""
    from medanomaly.data.luna16 import Luna16
    from medanomaly.detect.detector import WEIGHTS_FILE, NoduleDetector
    from medanomaly.detect.model import run_info
    from medanomaly.engine.run import write_run_info
    from medanomaly.errors import InputError
    from medanomaly.jsonio import write_json

    section = config.luna16
    data = Luna16(section.root)
    split = data.split(section.test_fold, section.val_fold)
    uids = _training_uids(section, split, config.seed)
    if not uids:
        raise InputError("no training scan: every subset here is the test or validation fold", section.root)
    scans = [luna16_grid_scan(data.read(uid), data.nodules(uid), config, uid)
             for uid in _iterate(uids, progress, "read LUNA16 training scans + lung masks")]  # fmt: skip
    detector = NoduleDetector.from_config(config).fit(scans, progress=progress)
    run_dir = Path(run_dir)
    detector.save(run_dir)
    write_run_info(run_dir, run_info(detector, WEIGHTS_FILE).model_copy(update={"synthetic": False}))
    n_nodules = sum(len(data.nodules(u)) for u in uids)
    write_json(run_dir / "train_history.json",
               {"loss": detector.history_, "n_train_scans": len(scans), "n_train_nodules": n_nodules,
                "synthetic": False, "test_fold": section.test_fold,
                "train_scans": uids,
                "note": "trained on LUNA16 annotations (spheres of the annotated diameter)"})  # fmt: skip
    evaluate_luna16(run_dir, config, "test", out_dir, progress)
    return run_dir


# ------------------------------------------------------------------------------------ evaluate
def _previous(path: Path) -> dict[str, Any]:
    """The other split's LUNA16 entry of an earlier ``metrics.json`` (kept beside the new one)."""

    try:
        old = read_json(path)
    except (OSError, ValueError):
        return {}
    return old.get("luna16", {}) if isinstance(old, dict) and isinstance(old.get("luna16"), dict) else {}


def detect_marks(detector: Any, data: Any, uids: Sequence[str], progress: bool = True
                 ) -> tuple[dict[str, list[Any]], list[str]]:
    """CAD marks ``((x, y, z) mm, probability)`` per series (every finding of the detector, both lungs),
    and the series where no lungs were found: they get no mark (their nodules count as missed)."""
    from medanomaly.errors import InputError

    marks: dict[str, list[Any]] = {}
    no_lungs: list[str] = []
    for uid in _iterate(list(uids), progress, "detect on LUNA16 scans"):
        ct = data.read(uid)
        try:
            findings = detector.detect(ct)
        except InputError:  # the lung mask failed on this scan: no search, no mark
            no_lungs.append(uid)
            findings = []
        marks[uid] = [(tuple(float(c) for c in f.center_mm), float(f.score)) for f in findings]
    return marks, no_lungs


def evaluate_luna16(run_dir: Path, config: Any, split: str = "test", out_dir: Path | None = None,
                    progress: bool = True) -> dict[str, Any]:
    """Detect on the ``split`` fold ("test" or "val"), write its marks CSV, the challenge's CPM with
    bootstrap CIs into ``metrics.json`` (key ``luna16`` -> split) and ``report.html``.

    Raises:
        InputError: an unknown split, no validation fold, or no reference nodule in the split's scans.
    """
    from medanomaly.data.luna16 import Luna16, write_csv
    from medanomaly.detect.detector import NoduleDetector
    from medanomaly.errors import InputError
    from medanomaly.evaluate.luna16 import RESULT_COLUMNS, evaluate_cad
    from medanomaly.evaluate.luna16_report import plot_cad_froc, write_luna16_report
    from medanomaly.jsonio import write_json

    if split not in ("test", "val"):
        raise InputError(f"the LUNA16 recipe has the splits 'test' and 'val', got {split!r}")
    section = config.luna16
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    data = Luna16(section.root)
    uids = data.split(section.test_fold, section.val_fold)[split][: section.max_eval_scans]
    if not uids:
        raise InputError(f"no scan in the {split} fold", section.root)
    detector = NoduleDetector.load(run_dir, device="auto")  # a GPU when present
    marks, no_lungs = detect_marks(detector, data, uids, progress)
    csv_path = write_csv(out_dir / f"luna16_{split}_results.csv", RESULT_COLUMNS,
                         [(u, *c, p) for u in uids for c, p in marks[u]])  # fmt: skip
    result = evaluate_cad(data.annotations, marks, uids, excluded=data.excluded, n_bootstrap=section.n_bootstrap,
                          seed=config.seed)  # fmt: skip
    fold = section.test_fold if split == "test" else sorted({data.folds[u] for u in uids})[0]
    entry = {**result.to_json(), "split": split, "fold": fold, "marks_csv": csv_path.name,
             "scans_without_lungs": no_lungs, "synthetic": False, "froc_plot": f"luna16_{split}_froc.png",
             "note": "LUNA16 CT and annotations (real); the challenge's CPM (medanomaly.evaluate.luna16)"}  # fmt: skip
    plot_cad_froc(result, out_dir / entry["froc_plot"], f"LUNA16 fold {fold} ({split})")
    luna = {**_previous(out_dir / "metrics.json"), split: entry}
    metrics = {"luna16": luna}
    write_json(out_dir / "metrics.json", metrics)
    write_luna16_report(out_dir / "report.html", luna)
    return metrics
