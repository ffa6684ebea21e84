"""The Medical Segmentation Decathlon's layout (MSD; http://medicaldecathlon.com, CC BY-SA 4.0; not shipped here),
which MONAI's ``DecathlonDataset`` and nnU-Net's raw data read::

    <root>/dataset.json     {"name", "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
                             "labels": {"0": "background", "1": "edema", ...},
                             "training": [{"image": "./imagesTr/BRATS_001.nii.gz",
                                           "label": "./labelsTr/BRATS_001.nii.gz"}, ...],
                             "test": ["./imagesTs/BRATS_485.nii.gz", ...]}
    <root>/imagesTr/*.nii.gz   one NIfTI per case; several contrasts are one 4D file (a volume each)
    <root>/labelsTr/*.nii.gz   the expert label map on the image's grid (0 = background)

Only the ``training`` pairs have labels, so they are the cases an evaluation can score. Every listed path must lie
inside ``root`` (a name with ``..`` or an absolute path is refused, as a listing that points elsewhere in the file
system); a missing file is one line naming the entry's number, never its file name (names may identify a patient).

Example:
    >>> data = MsdFolder("/data/Task01_BrainTumour")  # doctest: +SKIP
    >>> len(data.pairs), data.modalities[2]            # doctest: +SKIP
    (484, 't1gd')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from medanomaly.errors import InputError
from medanomaly.jsonio import read_folder_json

__all__ = ["DATASET_JSON", "MsdFolder", "MsdPair"]

#: The listing file of an MSD task folder.
DATASET_JSON = "dataset.json"
#: Largest ``dataset.json`` read (the biggest MSD task lists about 1,400 cases in ~200 KB).
MAX_LISTING_BYTES = 16 * 2**20


@dataclass(frozen=True)
class MsdPair:
    """One labelled case: its image and label files, and its place (1-based) in ``training``."""

    number: int
    image: Path
    label: Path


class MsdFolder:
    """An MSD task folder read from its ``dataset.json``: ``pairs`` (the labelled cases, their files checked to
    exist), ``modalities`` and ``labels`` (number -> name).

    Raises:
        InputError: no or unreadable ``dataset.json``, no ``training`` list, an entry that is not an image/label pair
            of relative paths inside the folder, or a listed file that does not exist.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        listing = _listing(self.root)
        self.modalities = _names(listing.get("modality"), self.root, "modality")
        self.labels = _names(listing.get("labels"), self.root, "labels")
        entries = listing.get("training")
        if not isinstance(entries, list) or not entries:
            raise InputError(f"{DATASET_JSON} lists no training cases (a non-empty 'training' list of image/label "
                             "pairs)", self.root)  # fmt: skip
        self.pairs = tuple(_pair(self.root, k, e) for k, e in enumerate(entries, start=1))

    def describe_channel(self, channel: int | None) -> str:
        """``"volume 2 (t1gd)"`` for a 4D task's channel, or ``"one volume"``."""
        if channel is None:
            return "one volume"
        name = self.modalities.get(channel)
        return f"volume {channel}" + (f" ({name})" if name else "")


def _listing(root: Path) -> dict[str, Any]:
    if not root.is_dir():
        raise InputError("MSD task folder not found", root)
    listing = read_folder_json(root, DATASET_JSON, "an MSD task folder", MAX_LISTING_BYTES)
    if not isinstance(listing, dict):
        raise InputError(f"{DATASET_JSON} is not an MSD listing (a JSON object)", root)
    return listing


def _names(mapping: Any, root: Path, key: str) -> dict[int, str]:
    """``{"0": "FLAIR", ...}`` as ``{0: "FLAIR", ...}`` (technical names; values cut to 40 characters)."""
    if mapping is None:
        return {}
    if not isinstance(mapping, dict) or not all(str(k).isdigit() for k in mapping):
        raise InputError(f"{DATASET_JSON}: '{key}' must map numbers to names", root)
    return {int(k): str(v)[:40] for k, v in mapping.items()}


def _pair(root: Path, number: int, entry: Any) -> MsdPair:
    if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("image", "label")):
        raise InputError(f"{DATASET_JSON}: training entry {number} is not an image/label pair of paths", root)
    image, label = (_inside(root, entry[k], number, k) for k in ("image", "label"))
    return MsdPair(number, image, label)


def _inside(root: Path, listed: str, number: int, key: str) -> Path:
    """The listed relative path under ``root``; refused when it leaves the folder or does not exist."""
    relative = PurePosixPath(listed.replace("\\", "/"))
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise InputError(f"{DATASET_JSON}: training entry {number}'s {key} is not a path inside the folder", root)
    path = root.joinpath(*relative.parts)
    try:
        inside = path.resolve().is_relative_to(root.resolve())
    except OSError:
        inside = False
    if not inside:  # a symbolic link out of the folder
        raise InputError(f"{DATASET_JSON}: training entry {number}'s {key} leads out of the folder", root)
    if not path.is_file():
        raise InputError(f"{DATASET_JSON}: training entry {number}'s {key} file is missing", root)
    return path
