"""The labelled test cases of a 3D anomaly case study: the named pyradiomics scans (brain1, brain2; lung1, lung2 for
chest CT) and the user's own, from an MSD-layout folder (``evaluate.folder``; :mod:`medanomaly.data.msd`).

A folder's cases are named ``test_001``, ``test_002``... in the listing's order (their file names never reach
``metrics.json`` or the report: they may identify a patient); ``test_data`` in ``metrics.json`` says which folder
volume and which labels were used, not where the folder is.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.errors import InputError, about_file
from medanomaly.types import Volume

__all__ = ["LabelledCase", "labelled_cases", "describe_test_data"]


@dataclass(frozen=True)
class LabelledCase:
    """One test scan and its expert lesion mask (boolean, on the scan's grid); ``path`` names it in errors only."""

    name: str
    image: Volume
    lesion: np.ndarray
    path: Path


def labelled_cases(evaluate: Any, chest: bool) -> Iterator[LabelledCase]:
    """The named cases of ``evaluate.cases``, then those of ``evaluate.folder``, read one at a time."""
    for name in evaluate.cases:
        yield _named_case(name, chest)
    if evaluate.folder is not None:
        yield from _folder_cases(evaluate.folder)


def describe_test_data(evaluate: Any, chest: bool) -> str:
    """What the case study tested on, for ``metrics.json`` and the report (no file or folder names)."""
    parts = []
    if evaluate.cases:
        parts.append("pyradiomics " + " + ".join(evaluate.cases) + " (real " + ("lesions" if chest else "tumours")
                     + ", expert masks)")  # fmt: skip
    if evaluate.folder is not None:
        from medanomaly.data.msd import MsdFolder

        folder = evaluate.folder
        data = MsdFolder(folder.root)
        n = min(folder.max_cases, len(data.pairs))
        labels = "labels " + ", ".join(map(str, folder.labels)) if folder.labels else "every label above 0"
        parts.append(f"{n} labelled case(s) of an MSD-layout folder ({data.describe_channel(folder.channel)}; lesion = "
                     f"{labels})")  # fmt: skip
    return " + ".join(parts)


def _named_case(name: str, chest: bool) -> LabelledCase:
    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.io import read

    image_path, mask_path = pyradiomics_case(name)
    image = read(image_path).with_meta(modality="CT" if chest else "MR")
    return LabelledCase(name, image, np.asarray(read(mask_path).array) > 0, Path(image_path))


def _folder_cases(folder: Any) -> Iterator[LabelledCase]:
    from medanomaly.data.msd import MsdFolder
    from medanomaly.io import read_mask
    from medanomaly.io.frames import read_frame, reword_frame_advice

    data = MsdFolder(folder.root)
    for pair in data.pairs[: folder.max_cases]:
        name = f"test_{pair.number:03d}"
        try:
            image = read_frame(pair.image, folder.channel).with_meta(modality="MR")
        except InputError as exc:  # a config, not a command line: say which setting takes one volume
            reason = reword_frame_advice(exc.reason, "set evaluate.folder.channel to one of them")
            raise InputError(reason.replace("--frame ", "evaluate.folder.channel "), pair.image) from None
        with about_file(pair.label):
            mask = read_mask(pair.label, image)
            if not mask.same_grid(image):
                raise InputError(f"the label map of {name} is not on its image's grid")
        values = np.asarray(mask.array)
        lesion = np.isin(values, folder.labels) if folder.labels else values > 0
        yield LabelledCase(name, image, lesion, pair.image)
