"""Where the images of a normal-only 2D anomaly set lie: three folder layouts, told apart by their folders, listed as
``(split, file, abnormal, mask file, name)`` entries for :func:`medanomaly.data.image_folders.load_normal_images`.

* ``folders`` (ours): ``train/normal``, ``val/normal``, ``test/normal``, ``test/abnormal``, ``test/masks`` (a mask has
  its image's file name, or stem).
* ``bmad`` (Benchmarks for Medical Anomaly Detection, as downloaded), told by ``train/good`` and ``valid/``:
  ``train/good[/img]``, ``valid/good[/img]``, ``test/good[/img]``, ``test/Ungood[/img]``, ``test/Ungood/label``
  (the pixel-level sets keep each part's images in ``img/``). ``valid/Ungood`` (labelled anomalies) is never used:
  counted in ``excluded``.
* ``mvtec`` (MVTec AD's layout, anomalib's default ``Folder``-free one, in which several medical sets are shared),
  told by ``train/good`` without ``valid/``: ``train/good``, ``test/good``, ``test/<kind>/`` (one folder per kind of
  anomaly), ``ground_truth/<kind>/<stem>_mask.png``. It has no validation split: every fifth training image (by name)
  is held out as the normal validation set (thresholds are chosen on normal images only, never on ``test``). Test
  images are named ``<kind>/<file>`` (file names repeat across kinds).

A training part holding lesion images (``train/abnormal``, ``train/masks``, ``train/Ungood``, ``val/...``) is refused
in one line: training and validation are on normal images only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medanomaly.errors import InputError

__all__ = ["IMAGE_SUFFIXES", "Entry", "Layout", "folder_layout", "image_files"]

#: Files read from a folder tree (pictures, and 2D medical formats).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz", ".nrrd", ".dcm")
#: BMAD's parts (``good`` / ``Ungood``), each holding its images in ``img/`` when the set has pixel labels.
BMAD_SPLITS = {"train": "train", "val": "valid", "test": "test"}
#: MVTec AD's training images held out as the normal validation set: every this many, by name.
MVTEC_VAL_EVERY = 5


@dataclass(frozen=True)
class Entry:
    """One image of a layout: its split (train, val, test), file, whether it is abnormal, its mask file (or None) and
    the name it is shown by."""

    split: str
    path: Path
    abnormal: bool
    mask: Path | None
    name: str


@dataclass(frozen=True)
class Layout:
    """A folder tree's images: ``name`` (folders, bmad, mvtec), ``entries``, how many labelled validation anomalies
    were left out (``excluded``: BMAD's ``valid/Ungood``) and where each normal split's images lie (for messages)."""

    name: str
    entries: tuple[Entry, ...]
    excluded: int
    normal_parts: dict[str, str]


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder`` (sorted; hidden files and other endings left out); [] if it is none."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.name.lower().endswith(IMAGE_SUFFIXES))  # fmt: skip


def _stem(path: Path) -> str:
    return path.name.split(".")[0]


def _masked(files: list[Path], masks_dir: Path, suffix: str = "") -> list[tuple[Path, Path | None]]:
    """Each abnormal file with the mask of the same stem (plus ``suffix``) in ``masks_dir``, or None."""
    masks = {_stem(p): p for p in image_files(masks_dir)}
    return [(f, masks.get(_stem(f) + suffix)) for f in files]


def folder_layout(root: Path) -> Layout:
    """The layout of ``root`` and its images.

    Raises:
        InputError: a normal part that is missing or empty, or lesion images where only normal ones may be.
    """
    if (root / "train" / "good").is_dir():
        return _bmad(root) if (root / "valid").is_dir() else _mvtec(root)
    return _ours(root)


def _refuse(folder: Path, files: list[Path], where: str) -> None:
    """Lesion images (or masks) in a part that must hold normal images only: one line naming the folder."""
    if files:
        split = where.split("/")[0]
        raise InputError(f"{where}/ holds images: {split} must be normal images only (no lesions, no masks)", folder)


def _needed(files: list[Path], root: Path, where: str, layout: str) -> list[Path]:
    if not files:
        raise InputError(f"no images in {where}/ ({layout})", root)
    return files


def _ours(root: Path) -> Layout:
    entries = []
    for split in ("train", "val"):
        for bad in ("abnormal", "masks"):
            _refuse(root / split / bad, image_files(root / split / bad), f"{split}/{bad}")
        files = _needed(image_files(root / split / "normal"), root, f"{split}/normal",
                        "layout: train/normal, val/normal, test/normal, test/abnormal")  # fmt: skip
        entries += [Entry(split, f, False, None, f.name) for f in files]
    entries += [Entry("test", f, False, None, f.name) for f in image_files(root / "test" / "normal")]
    abnormal = _masked(image_files(root / "test" / "abnormal"), root / "test" / "masks")
    entries += [Entry("test", f, True, m, f.name) for f, m in abnormal]
    return Layout("folders", tuple(entries), 0, {"train": "train/normal", "val": "val/normal"})


def _bmad_images(folder: Path) -> list[Path]:
    """A BMAD part's images: ``folder/img/*`` (pixel-level sets) or ``folder/*`` (image-level sets)."""
    return image_files(folder / "img") if (folder / "img").is_dir() else image_files(folder)


def _bmad(root: Path) -> Layout:
    _refuse(root / "train" / "Ungood", _bmad_images(root / "train" / "Ungood"), "train/Ungood")
    entries = []
    for split, folder in BMAD_SPLITS.items():
        files = _bmad_images(root / folder / "good")
        if split != "test":
            _needed(files, root, f"{folder}/good", "BMAD layout: train/good, valid/good, test/good, test/Ungood")
        entries += [Entry(split, f, False, None, f.name) for f in files]
    abnormal = _masked(_bmad_images(root / "test" / "Ungood"), root / "test" / "Ungood" / "label")
    entries += [Entry("test", f, True, m, f.name) for f, m in abnormal]
    return Layout("bmad", tuple(entries), len(_bmad_images(root / "valid" / "Ungood")),
                  {"train": "train/good", "val": "valid/good"})  # fmt: skip


def _mvtec(root: Path) -> Layout:
    train = _needed(image_files(root / "train" / "good"), root, "train/good",
                    "MVTec AD layout: train/good, test/good, test/<kind>, ground_truth/<kind>")  # fmt: skip
    if len(train) < MVTEC_VAL_EVERY:
        raise InputError(f"train/good holds {len(train)} image(s): MVTec AD's layout has no validation split, and every "
                         f"{MVTEC_VAL_EVERY}th training image is held out as one (at least {MVTEC_VAL_EVERY} needed)",
                         root)  # fmt: skip
    for part in sorted(p for p in (root / "train").iterdir() if p.is_dir() and p.name != "good"):
        _refuse(part, image_files(part), f"train/{part.name}")
    entries = [Entry("val" if k % MVTEC_VAL_EVERY == MVTEC_VAL_EVERY - 1 else "train", f, False, None, f.name)
               for k, f in enumerate(train)]  # fmt: skip
    entries += [Entry("test", f, False, None, f"good/{f.name}") for f in image_files(root / "test" / "good")]
    kinds = sorted(p for p in (root / "test").iterdir() if p.is_dir() and p.name != "good") if (root / "test").is_dir() else []
    for kind in kinds:
        abnormal = _masked(image_files(kind), root / "ground_truth" / kind.name, "_mask")
        entries += [Entry("test", f, True, m, f"{kind.name}/{f.name}") for f, m in abnormal]
    return Layout("mvtec", tuple(entries), 0, {"train": "train/good", "val": f"train/good (every {MVTEC_VAL_EVERY}th)"})
