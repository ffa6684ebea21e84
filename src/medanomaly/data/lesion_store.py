"""A :class:`~medanomaly.data.lesions2d.LesionSet` on disk: written once, read back exactly.

Layout of a folder (``dataset.json`` says ``format_version``)::

    dataset.json     source, synthetic, class_names, n_images, skipped
    images.csv       key,image,lesion_masks,patient_id,split,view,laterality,meta,label,n_lesions,attributes
    lesions.csv      key,index,label,kind,x0,y0,x1,y1,x0_mm,y0_mm,x1_mm,y1_mm,attributes
    images/<key>.nrrd   the image (float32, spacing / origin / direction kept)
    masks/<key>.npz     boolean lesion crops ``lesion_<index>`` (no pickle)
    README.txt       "SYNTHETIC DATA" for simulated sets

Example:
    >>> import tempfile, numpy as np
    >>> from medanomaly.data.lesions2d import LesionImage, LesionSet, lesion_from_mask
    >>> from medanomaly.types import Volume
    >>> img = Volume(np.ones((1, 6, 6), np.float32), spacing=(0.5, 0.5, 1.0), meta={"modality": "US"})
    >>> m = np.zeros((6, 6), bool); m[1:3, 2:5] = True
    >>> s = LesionSet((LesionImage(img, (lesion_from_mask(img, m, "benign"),), "p", "k"),))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     back = read_lesion_set(write_lesion_set(s, d + "/set"))
    >>> back[0].lesions[0].box_px, back[0].image.modality
    ((2, 1, 5, 3), 'US')
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.data.lesions2d import Lesion2D, LesionImage, LesionSet, plain_value
from medanomaly.errors import InputError
from medanomaly.io.tables import read_csv
from medanomaly.jsonio import JsonLimitError, read_json
from medanomaly.types import Volume

__all__ = ["FORMAT_VERSION", "read_lesion_set", "write_lesion_set"]

#: Version of the on-disk layout.
FORMAT_VERSION = "1"


_IMAGE_FIELDS = ("key", "image", "lesion_masks", "patient_id", "split", "view", "laterality", "meta",
                 "label", "n_lesions", "attributes")
_LESION_FIELDS = ("key", "index", "label", "kind", "x0", "y0", "x1", "y1", "x0_mm", "y0_mm", "x1_mm", "y1_mm",
                  "attributes")


def _safe_stem(key: str) -> str:
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
    if not stem or stem.startswith("."):
        raise InputError(f"image key {key!r} cannot be a file name")
    return stem


def _plain_meta(image: Volume) -> dict[str, Any]:
    """The image's (safe, technical) metadata that JSON can hold."""
    return {k: plain_value(v) for k, v in image.meta.items() if isinstance(plain_value(v), (str, int, float, bool))}


def _write_tables(lesions: LesionSet, tmp: Path) -> None:
    from medanomaly.io import write

    (tmp / "images").mkdir(parents=True)
    (tmp / "masks").mkdir()
    img_rows, les_rows = [], []
    stems: set[str] = set()
    for it in lesions:
        stem = _safe_stem(it.key)
        if stem in stems:
            raise InputError(f"two images share the file name {stem!r}; image keys must be unique")
        stems.add(stem)
        write(it.image, tmp / "images" / f"{stem}.nrrd")
        crops = {f"lesion_{i}": les.mask for i, les in enumerate(it.lesions)}
        np.savez_compressed(tmp / "masks" / f"{stem}.npz", **crops)
        img_rows.append({"key": it.key, "image": f"images/{stem}.nrrd", "lesion_masks": f"masks/{stem}.npz",
                         "patient_id": it.patient_id, "split": it.split, "view": it.view,
                         "laterality": it.laterality, "meta": json.dumps(_plain_meta(it.image)),
                         "label": it.image_label(lesions.class_names), "n_lesions": len(it.lesions),
                         "attributes": json.dumps({k: plain_value(v) for k, v in it.attributes.items()})})
        for i, les in enumerate(it.lesions):
            les_rows.append({"key": it.key, "index": i, "label": les.label, "kind": les.kind,
                             **dict(zip(("x0", "y0", "x1", "y1"), les.box_px, strict=True)),
                             **dict(zip(("x0_mm", "y0_mm", "x1_mm", "y1_mm"), les.box_mm, strict=True)),
                             "attributes": json.dumps(les.to_json()["attributes"])})
    for name, fields, rows in (("images.csv", _IMAGE_FIELDS, img_rows), ("lesions.csv", _LESION_FIELDS, les_rows)):
        with (tmp / name).open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(fields))
            writer.writeheader()
            writer.writerows(rows)
    info = {"format_version": FORMAT_VERSION, "source": lesions.source, "synthetic": lesions.synthetic,
            "class_names": list(lesions.class_names), "n_images": len(lesions), "skipped": list(lesions.skipped)}
    (tmp / "dataset.json").write_text(json.dumps(info, indent=1) + "\n")
    if lesions.synthetic:
        (tmp / "README.txt").write_text(f"SYNTHETIC DATA ({lesions.source}): simulated images, not patients.\n")


def write_lesion_set(lesions: LesionSet, folder: str | Path) -> Path:
    """Write a set to ``folder`` (which must not exist): ``images/*.nrrd`` (spacing kept),
    ``masks/*.npz`` (boolean lesion crops ``lesion_<i>``), ``images.csv``, ``lesions.csv``
    (boxes in pixels and mm), ``dataset.json``. Written to a temporary folder, then renamed.

    Returns:
        ``folder``.
    """
    folder = Path(folder)
    if folder.exists():
        raise InputError("folder exists already; choose a new one", folder)
    tmp = folder.with_name(folder.name + f".partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_tables(lesions, tmp)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise InputError("not a lesion-set folder (missing table)", path)
    with read_csv(path, "lesion-set table") as reader:
        return list(reader)


def read_lesion_set(folder: str | Path) -> LesionSet:
    """Read a folder written by :func:`write_lesion_set`.

    Raises:
        InputError: a missing table, image or mask file, or an unknown layout version.
    """
    from medanomaly.io import read

    folder = Path(folder)
    info_path = folder / "dataset.json"
    if not info_path.is_file():
        raise InputError("not a lesion-set folder (no dataset.json)", folder)
    try:
        info = read_json(info_path)
    except (OSError, ValueError) as exc:
        reason = str(exc) if isinstance(exc, JsonLimitError) else "truncated or not valid JSON"
        raise InputError(f"dataset.json: {reason}", folder) from None
    if not isinstance(info, dict):
        raise InputError("dataset.json is not a lesion-set record (a JSON object)", folder)
    if str(info.get("format_version")) != FORMAT_VERSION:
        raise InputError(f"lesion-set layout version {info.get('format_version')!r}, expected {FORMAT_VERSION}",
                         info_path)
    by_key: dict[str, list[dict[str, str]]] = {}
    for row in _read_csv(folder / "lesions.csv"):
        by_key.setdefault(row["key"], []).append(row)
    items = []
    for row in _read_csv(folder / "images.csv"):
        vol = read(folder / row["image"])
        vol = vol.with_meta(**{**json.loads(row["meta"] or "{}"), "synthetic": bool(info["synthetic"])})
        with np.load(folder / row["lesion_masks"], allow_pickle=False) as masks:
            lesions = tuple(
                Lesion2D(r["label"], tuple(int(r[k]) for k in ("x0", "y0", "x1", "y1")),  # type: ignore[arg-type]
                         tuple(float(r[k]) for k in ("x0_mm", "y0_mm", "x1_mm", "y1_mm")),  # type: ignore[arg-type]
                         masks[f"lesion_{r['index']}"], r["kind"], json.loads(r["attributes"] or "{}"))
                for r in sorted(by_key.get(row["key"], []), key=lambda r: int(r["index"])))
        items.append(LesionImage(vol, lesions, row["patient_id"], row["key"], row["split"], row["view"],
                                 row["laterality"], json.loads(row["attributes"] or "{}")))
    return LesionSet(tuple(items), tuple(info["class_names"]), str(info.get("source", "")),
                     bool(info["synthetic"]), tuple(info.get("skipped", ())))
