"""Simulated (SYNTHETIC) classification cohorts from ``medanomaly.synth``, as datasets.

``mammo_phantom``: the procedural mammography phantom of :mod:`medanomaly.synth.mammo`
(benign = circumscribed mass, uncertain = indistinct mass, malignant = spiculated mass or
calcification cluster), written once to a cache folder with its patient-level split and loaded
through the manifest loader. Every set returned here has ``synthetic=True``: reports say so.

Example:
    >>> from medanomaly.registry import DATASETS
    >>> "mammo_phantom" in DATASETS
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from medanomaly.data.arrays import LabelledImages
from medanomaly.registry import DATASETS


def synth_cache_dir() -> Path:
    """Where simulated cohorts are written: ``<data cache>/../synth``."""
    from medanomaly.data.sources import cache_dir

    return cache_dir().parent / "synth"


@DATASETS.register("mammo_phantom")
def load_mammo_phantom(
    n_patients: int = 300,
    size: int = 128,
    seed: int = 0,
    labels: Sequence[str] = ("benign", "uncertain", "malignant"),
    two_view_fraction: float = 0.5,
    split_fractions: Sequence[float] = (0.6, 0.2, 0.2),
    cache_dir: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    image_size: Sequence[int] = (128, 128),
    channels: int = 1,
) -> LabelledImages:
    """The SYNTHETIC mammography cohort (written once per parameter set, then read from cache).

    Args:
        n_patients: patients (one breast each, one or two views).
        size: rendered image side, pixels (field of view 120 mm).
        seed: cohort seed.
        labels: phantom classes to draw.
        two_view_fraction: fraction of patients with CC + MLO views.
        split_fractions: train / val / test patient fractions (stratified, by patient).
        cache_dir: folder for the cohort (default: :func:`synth_cache_dir`).
        class_names: class order (default: ``labels``).
        image_size, channels: model input.
    """
    from medanomaly.data.manifest import load_manifest
    from medanomaly.synth.mammo import write_dataset

    root = Path(cache_dir) if cache_dir is not None else synth_cache_dir()
    tag = f"mammo_n{n_patients}_s{size}_seed{seed}_{'-'.join(labels)}_tv{two_view_fraction:g}_" + "-".join(
        f"{f:g}" for f in split_fractions)
    folder = root / tag
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        tmp = root / (tag + ".partial")
        write_dataset(tmp, n_patients=n_patients, labels=tuple(labels), size=size, seed=seed,
                      two_view_fraction=two_view_fraction, split_fractions=tuple(split_fractions))
        folder.parent.mkdir(parents=True, exist_ok=True)
        if folder.exists():  # written concurrently by another process: keep theirs
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.rename(folder)
    return load_manifest(manifest, class_names=tuple(class_names or labels), image_size=image_size,
                         channels=channels, synthetic=True)
