"""Writes a SYNTHETIC one-lesion-per-image mammography cohort to disk (classification).

Each patient has one lesion class and one or two views (CC, and MLO for ``two_view_fraction`` of
them) of one breast; both views show the same lesion. Patients are split into train/val/test *by
patient* and stratified by class. The detection cohort (several lesions per image, boxes and
masks) is :func:`medanomaly.synth.mammo.make_lesion_cohort`.

Example:
    >>> import tempfile, csv
    >>> with tempfile.TemporaryDirectory() as d:
    ...     m = write_dataset(d + "/c", n_patients=9, size=48, two_view_fraction=0.0)
    ...     sorted({r["label"] for r in csv.DictReader(m.open())})
    ['benign', 'malignant', 'uncertain']
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medanomaly.errors import InputError
from medanomaly.synth.mammo import LABEL_KINDS, PHANTOM_VERSION, render_case
from medanomaly.synth.mammo_lesions import lesion_params
from medanomaly.types import Volume


def _write_image(volume: Volume, path: Path, fmt: str, is_mask: bool) -> None:
    if fmt == "nrrd":
        from medanomaly.io import write

        write(volume, path)
        return
    from PIL import Image  # 16-bit PNG: no spacing in the file (the manifest notes it)

    a = volume.array[0]
    a = a.astype(np.uint16) if is_mask else np.clip(a * 40000.0, 0, 65535).astype(np.uint16)
    Image.fromarray(a).save(path)


def _split_by_patient(patient_label: np.ndarray, labels: Sequence[str], fractions: tuple[float, float, float],
                      rng: np.random.Generator) -> np.ndarray:
    split = np.empty(len(patient_label), dtype=object)
    for lb in labels:  # stratified split at patient level
        members = rng.permutation(np.flatnonzero(patient_label == lb))
        n_train = int(round(fractions[0] * members.size))
        n_val = max(1, int(round(fractions[1] * members.size)))
        split[members[:n_train]] = "train"
        split[members[n_train : n_train + n_val]] = "val"
        split[members[n_train + n_val :]] = "test"
    return split


def write_dataset(
    out_dir: str | Path,
    n_patients: int = 300,
    labels: Sequence[str] = ("benign", "uncertain", "malignant"),
    size: int = 128,
    seed: int = 0,
    two_view_fraction: float = 0.5,
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    fmt: str = "nrrd",
    field_of_view_mm: float = 120.0,
) -> Path:
    """Write a synthetic mammography cohort: images, lesion masks and ``manifest.csv``.

    Args:
        out_dir: folder to write (``images/``, ``masks/``, ``manifest.csv``, ``README.txt``).
        n_patients: number of patients (classes are balanced at patient level).
        labels: class labels to draw (any of benign, uncertain, malignant, normal).
        size: image side in pixels.
        seed: seed of the whole cohort.
        two_view_fraction: fraction of patients with both CC and MLO views.
        split_fractions: train, val, test fractions of patients per class.
        fmt: ``"nrrd"`` (float32, keeps spacing) or ``"png"`` (16-bit, intensity x 40000).
        field_of_view_mm: image side in mm.

    Returns:
        Path of ``manifest.csv`` (columns ``path,label,patient_id,split,view,mask_path,density``).
    """
    if fmt not in ("nrrd", "png"):
        raise InputError(f"format must be 'nrrd' or 'png', got {fmt!r}")
    unknown = [lb for lb in labels if lb not in LABEL_KINDS]
    if unknown:
        raise InputError(f"unknown phantom label(s) {unknown}; expected {sorted(LABEL_KINDS)}")
    if n_patients < 3 * len(labels):
        raise InputError(f"need at least {3 * len(labels)} patients for 3 splits x {len(labels)} classes")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    patient_label = np.array([labels[i % len(labels)] for i in range(n_patients)])
    rng.shuffle(patient_label)
    split = _split_by_patient(patient_label, labels, split_fractions, rng)
    ext = "nrrd" if fmt == "nrrd" else "png"
    rows = []
    for i in range(n_patients):
        pid = f"P{i + 1:04d}"
        label = str(patient_label[i])
        prng = np.random.default_rng([seed, i])
        kinds = LABEL_KINDS[label]
        kind = kinds[int(prng.integers(len(kinds)))]
        params = lesion_params(kind, prng)
        params.update(u=prng.uniform(0.2, 0.8), v=prng.uniform(-0.7, 0.7))
        side = "L" if prng.random() < 0.5 else "R"
        density = "abcd"[int(prng.integers(4))]
        views = ("CC", "MLO") if prng.random() < two_view_fraction else ("CC",)
        for view in views:
            case = render_case(label, view, size, prng, field_of_view_mm, laterality=side, kind=kind,
                               density=density, _lesion_params_override=params)
            name = f"{pid}_{side}_{view}.{ext}"
            _write_image(case.image, out / "images" / name, fmt, False)
            _write_image(case.mask, out / "masks" / name, fmt, True)
            rows.append({"path": f"images/{name}", "label": label, "patient_id": pid, "split": split[i],
                         "view": view, "mask_path": f"masks/{name}", "density": density})
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "README.txt").write_text(
        "SYNTHETIC DATA: procedural mammography phantom (medanomaly.synth.mammo), not real patients.\n"
        f"phantom_version={PHANTOM_VERSION} seed={seed} n_patients={n_patients} size={size}px "
        f"field_of_view={field_of_view_mm}mm labels={list(labels)} format={fmt}\n"
        "benign = circumscribed mass or coarse calcifications; uncertain = indistinct mass or amorphous "
        "calcifications; malignant = spiculated mass or fine pleomorphic calcifications.\n"
    )
    return manifest
