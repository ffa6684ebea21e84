"""Build a messy DICOM archive from the real scans, for batch-inference tests and benchmarks.

Every series is a copy of a real pyradiomics CT (lung1, lung2), optionally cropped to a smaller
block, written as a DICOM CT series with a **new** study and series UID. Around them the
archive holds what real archives hold: corrupt files (a truncated slice in a series, random
bytes named ``.dcm``), non-image objects (an SR document and an RT plan), a NIfTI copy, a
localizer, a folder named like a patient (``DOE^JOHN_19450101``, to check that no folder name
reaches the results), a file name that is not UTF-8 and a symlink loop.

Example:
    >>> manifest = build_archive("/tmp/archive", n_series=20, crop=(8, 64, 64))  # doctest: +SKIP
    >>> len(manifest.good), len(manifest.bad)                                   # doctest: +SKIP
    (19, 1)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medanomaly.types import Volume

__all__ = ["ArchiveManifest", "build_archive", "write_non_image_objects"]

#: A folder name that looks like patient identity: must never appear in results.
PHI_FOLDER = "DOE^JOHN_19450101"


@dataclass
class ArchiveManifest:
    """What was put into the archive: series UIDs that must succeed / fail, and other objects."""

    root: Path
    good: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    localizers: list[str] = field(default_factory=list)
    volume_files: list[Path] = field(default_factory=list)
    non_image_files: list[Path] = field(default_factory=list)
    garbage_files: list[Path] = field(default_factory=list)


def _source_volumes(cases: Sequence[str], crop: tuple[int, int, int] | None) -> list[tuple[Volume, Volume]]:
    """(CT, lesion mask) per case, cropped around the lesion centre to ``crop`` (z, y, x) when given."""
    from medanomaly.data.sources import pyradiomics_case
    from medanomaly.io import read

    out = []
    for case in cases:
        image, mask = pyradiomics_case(case)
        ct, lesion = read(image).with_meta(modality="CT"), read(mask)
        if crop is not None:
            centre = np.round(np.argwhere(np.asarray(lesion.array) > 0).mean(axis=0)).astype(int)
            start = [int(np.clip(c - s // 2, 0, n - s)) for c, s, n in zip(centre, crop, ct.shape, strict=True)]
            sl = tuple(slice(a, a + s) for a, s in zip(start, crop, strict=True))
            origin = ct.index_to_physical([start[2], start[1], start[0]])
            ct = Volume(ct.array[sl], ct.spacing, origin, ct.direction, ct.meta)
            lesion = Volume(lesion.array[sl], lesion.spacing, origin, lesion.direction, {})
        out.append((ct, lesion))
    return out


def write_non_image_objects(folder: Path, study_uid: str) -> list[Path]:
    """An SR document and an RT plan (no pixel data) in ``folder``, in study ``study_uid``."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, sop, modality in (("report.dcm", "1.2.840.10008.5.1.4.1.1.88.33", "SR"),
                                ("plan.dcm", "1.2.840.10008.5.1.4.1.1.481.5", "RTPLAN")):  # fmt: skip
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / name), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = sop, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
        ds.Modality = modality
        ds.PatientName, ds.PatientID = "ANONYMOUS", "ANONYMOUS"
        ds.save_as(folder / name, enforce_file_format=True)
        paths.append(folder / name)
    return paths


def _corrupt_series(files: Sequence[Path]) -> None:
    """Truncate the pixel data of a middle slice: the series then has a gap and must fail."""
    victim = files[len(files) // 2]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])


def build_archive(
    root: str | Path,
    n_series: int = 20,
    *,
    cases: Sequence[str] = ("lung1", "lung2"),
    crop: tuple[int, int, int] | None = (8, 64, 64),
    n_corrupt: int = 2,
    extras: bool = True,
    seed: int = 0,
) -> ArchiveManifest:
    """Write an archive of ``n_series`` CT series copied from real scans (new UIDs), plus clutter.

    Args:
        root: output folder (created).
        n_series: number of CT series (each in its own study), including the corrupt ones.
        cases: pyradiomics cases to copy, in turn.
        crop: (z, y, x) block around the lesion to keep (None = whole scans: 48-61 x 512 x 512).
        n_corrupt: how many series get a truncated slice (they must end as errors).
        extras: also write non-image objects, a garbage file, a NIfTI copy, a localizer, a
            non-UTF-8 name and a symlink loop.
        seed: placement of the corrupt series.
    """
    from pydicom.uid import generate_uid

    from medanomaly.io.dicom_writer import write_dicom_series

    root = Path(root)
    manifest = ArchiveManifest(root=root)
    sources = _source_volumes(cases, crop)
    rng = np.random.default_rng(seed)
    corrupt = set(rng.choice(n_series, size=min(n_corrupt, n_series), replace=False).tolist())
    for i in range(n_series):
        ct, _ = sources[i % len(sources)]
        series_uid, study_uid = generate_uid(), generate_uid()
        parent = root / (PHI_FOLDER if i == 0 else f"site{i % 3}") / f"study{i:04d}"
        files = write_dicom_series(ct, parent / "ct", series_uid=series_uid, study_uid=study_uid)
        if i in corrupt:
            _corrupt_series(files)
            manifest.bad.append(series_uid)
        else:
            manifest.good.append(series_uid)
        if i == 0 and extras:
            manifest.non_image_files += write_non_image_objects(parent / "other", study_uid)
            loc = Volume(ct.array[:1], ct.spacing, ct.origin, ct.direction, ct.meta)
            loc_uid = generate_uid()
            write_dicom_series(loc, parent / "scout", series_uid=loc_uid, study_uid=study_uid)
            manifest.localizers.append(loc_uid)
    if extras:
        _write_extras(root, sources[0][0], manifest)
    return manifest


def _write_extras(root: Path, ct: Volume, manifest: ArchiveManifest) -> None:
    """Garbage file, a NIfTI copy, a file with a non-UTF-8 name and a symlink loop."""
    from medanomaly.io import write

    misc = root / "misc"
    misc.mkdir(parents=True, exist_ok=True)
    garbage = misc / "broken.dcm"
    garbage.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    manifest.garbage_files.append(garbage)
    nifti = misc / "scan.nii.gz"
    write(ct, nifti)
    manifest.volume_files.append(nifti)
    odd = os.fsdecode(os.path.join(os.fsencode(misc), b"caf\xe9-notes.txt"))  # Latin-1 name, not UTF-8
    Path(odd).write_bytes(b"not an image")
    manifest.garbage_files.append(Path(odd))
    loop = misc / "loop"
    if not loop.exists():
        os.symlink("..", loop)  # misc/loop -> root: a symlink loop
