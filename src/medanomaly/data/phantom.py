"""Simulated (SYNTHETIC) cohorts from ``medanomaly.synth``, as datasets.

* ``mammo_phantom`` (classification, :class:`~medanomaly.data.arrays.LabelledImages`): the
  procedural mammography phantom of :mod:`medanomaly.synth.mammo`, one lesion per image
  (benign = circumscribed mass or coarse calcifications, uncertain = indistinct mass or amorphous
  calcifications, malignant = spiculated mass or fine pleomorphic calcifications), written once
  to a cache folder with its patient-level split and loaded through the manifest loader.
* ``mammo_phantom_lesions`` and ``us_phantom_lesions`` (detection,
  :class:`~medanomaly.data.lesions2d.LesionSet`): mammograms with 0-2 lesions, and breast
  ultrasounds (:mod:`medanomaly.synth.ultrasound`) with 0-1 lesion, each lesion with its box,
  mask and class; patient-level splits; cached with :func:`~medanomaly.data.lesions2d.write_lesion_set`.
* ``us_phantom`` (classification): one sample per ultrasound image, labelled with its lesion's
  class (``normal`` when none).

Every set returned here has ``synthetic=True``: reports say so. Cache folder names carry the
phantom version, so a change of the drawing rules never reuses an old cohort.

Example:
    >>> from medanomaly.registry import DATASETS
    >>> "mammo_phantom" in DATASETS and "us_phantom_lesions" in DATASETS
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from medanomaly.data.arrays import LabelledImages
from medanomaly.data.bounds import Channels, Fraction, ImageSize, Patients, Seed, Side, checked
from medanomaly.data.lesions2d import CLASSES, LesionSet
from medanomaly.registry import DATASETS


def _split(fractions: tuple[float, float, float]) -> tuple[float, float, float]:
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"train / val / test fractions must add up to 1, got {list(fractions)}")
    return fractions


Split = Annotated[tuple[Fraction, Fraction, Fraction], AfterValidator(_split)]


def synth_cache_dir() -> Path:
    """Where simulated cohorts are written: ``<data cache>/../synth``."""
    from medanomaly.data.sources import cache_dir

    return cache_dir().parent / "synth"


@DATASETS.register("mammo_phantom")
@checked
def load_mammo_phantom(
    n_patients: Patients = 300,
    size: Side = 128,
    seed: Seed = 0,
    labels: Sequence[str] = ("benign", "uncertain", "malignant"),
    two_view_fraction: Fraction = 0.5,
    split_fractions: Split = (0.6, 0.2, 0.2),
    cache_dir: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    image_size: ImageSize = (128, 128),
    channels: Channels = 1,
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
    from medanomaly.synth.mammo import PHANTOM_VERSION
    from medanomaly.synth.mammo_cohort import write_dataset

    root = Path(cache_dir) if cache_dir is not None else synth_cache_dir()
    tag = f"mammo_v{PHANTOM_VERSION}_n{n_patients}_s{size}_seed{seed}_{'-'.join(labels)}_tv{two_view_fraction:g}_" + "-".join(
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


def _cached_lesion_set(tag: str, cache_dir: str | Path | None, make: Callable[[], LesionSet]) -> LesionSet:
    """Read the cohort ``tag`` from the cache, or make it, write it (atomically) and read it back."""
    from medanomaly.data.lesion_store import read_lesion_set, write_lesion_set
    from medanomaly.errors import InputError

    root = Path(cache_dir) if cache_dir is not None else synth_cache_dir()
    folder = root / tag
    if not (folder / "dataset.json").is_file():
        root.mkdir(parents=True, exist_ok=True)
        try:
            write_lesion_set(make(), folder)
        except (InputError, OSError):
            if not (folder / "dataset.json").is_file():  # not written concurrently by another process
                raise
    return read_lesion_set(folder)


def _tag(name: str, version: str, params: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return "-".join(fmt(x) for x in v) if isinstance(v, (tuple, list)) else f"{v:g}" if isinstance(v, float) else str(v)

    return f"{name}_v{version}_" + "_".join(f"{k}{fmt(v)}" for k, v in params.items())


@DATASETS.register("mammo_phantom_lesions")
@checked
def load_mammo_phantom_lesions(
    n_patients: Patients = 60,
    size: Side = 256,
    seed: Seed = 0,
    two_view_fraction: Fraction = 0.5,
    normal_fraction: Fraction = 0.2,
    max_lesions: Annotated[int, Field(ge=0, le=20)] = 2,
    mass_fraction: Fraction = 0.6,
    val: Fraction = 0.2,
    test: Fraction = 0.2,
    class_names: Sequence[str] = CLASSES,
    cache_dir: str | Path | None = None,
) -> LesionSet:
    """SYNTHETIC mammograms with annotated lesions (see :func:`medanomaly.synth.mammo.make_lesion_cohort`);
    written to the cache once per parameter set, then read from it."""
    from medanomaly.synth.mammo import PHANTOM_VERSION, make_lesion_cohort

    params = {"n": n_patients, "s": size, "seed": seed, "tv": float(two_view_fraction), "nf": float(normal_fraction),
              "ml": max_lesions, "mf": float(mass_fraction), "val": float(val), "test": float(test),
              "c": tuple(class_names)}
    return _cached_lesion_set(_tag("mammo_lesions", PHANTOM_VERSION, params), cache_dir, lambda: make_lesion_cohort(
        n_patients, size, seed, two_view_fraction, normal_fraction, max_lesions, mass_fraction, tuple(class_names),
        val, test))


@DATASETS.register("us_phantom_lesions")
@checked
def load_us_phantom_lesions(
    n_patients: Patients = 60,
    size: Side | tuple[Side, Side] = (256, 256),
    seed: Seed = 0,
    two_plane_fraction: Fraction = 0.5,
    normal_fraction: Fraction = 0.2,
    val: Fraction = 0.2,
    test: Fraction = 0.2,
    class_names: Sequence[str] = CLASSES,
    cache_dir: str | Path | None = None,
) -> LesionSet:
    """SYNTHETIC breast ultrasounds with annotated lesions (see
    :func:`medanomaly.synth.ultrasound.make_us_cohort`); cached like ``mammo_phantom_lesions``."""
    from medanomaly.synth.ultrasound import PHANTOM_VERSION, make_us_cohort

    shape = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    params = {"n": n_patients, "s": shape, "seed": seed, "tp": float(two_plane_fraction), "nf": float(normal_fraction),
              "val": float(val), "test": float(test), "c": tuple(class_names)}
    return _cached_lesion_set(_tag("us_lesions", PHANTOM_VERSION, params), cache_dir, lambda: make_us_cohort(
        n_patients, shape, seed, two_plane_fraction, normal_fraction, tuple(class_names), val, test))


@DATASETS.register("us_phantom")
@checked
def load_us_phantom(
    n_patients: Patients = 200,
    size: Side | tuple[Side, Side] = (256, 256),
    seed: Seed = 0,
    normal_fraction: Fraction = 0.0,
    class_names: Sequence[str] | None = None,
    image_size: ImageSize = (128, 128),
    channels: Channels = 1,
    cache_dir: str | Path | None = None,
) -> LabelledImages:
    """SYNTHETIC breast-ultrasound images for whole-image classification (benign / uncertain /
    malignant, plus ``normal`` when ``normal_fraction`` > 0 and it is in ``class_names``)."""
    from medanomaly.data.lesion_samples import image_level_set

    names = tuple(class_names or ((("normal",) if normal_fraction > 0 else ()) + CLASSES))
    lesions = load_us_phantom_lesions(n_patients, size, seed, normal_fraction=normal_fraction,
                                      class_names=CLASSES, cache_dir=cache_dir)
    return image_level_set(lesions, names, image_size, channels)
