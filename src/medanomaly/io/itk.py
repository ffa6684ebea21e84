"""NIfTI, NRRD and MetaImage (``.mha``/``.mhd``) through SimpleITK, the reference for their geometry.

SimpleITK converts NIfTI's RAS affine (qform/sform) to LPS direction/origin, reads NRRD's
``space directions`` and ``space origin``, and MetaImage's ``TransformMatrix``/``Offset``; we
keep what it gives and only add safe metadata (the ``modality`` key that our NRRD writer stores).
Geometry is cross-checked in the tests against nibabel (NIfTI, RAS->LPS) and pynrrd (NRRD).

Example:
    >>> from medanomaly.data.sources import real_data
    >>> read_itk(real_data("pyradiomics/lung1_image.nrrd")).spacing  # doctest: +SKIP
    (0.5703, 0.5703, 5.0)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medanomaly.errors import InputError
from medanomaly.types import Volume

#: File endings read and written by this module, with the name stored in ``meta["source_format"]``.
ITK_SUFFIXES = {
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "metaimage",
    ".mhd": "metaimage",
}
#: Modalities accepted from a file's ``modality`` metadata key.
KNOWN_MODALITIES = frozenset({"CT", "MR", "PT", "US", "CR", "DX", "MG", "NM", "XA", "OT", "SEG"})


def itk_format(path: Path) -> str | None:
    """``nifti`` / ``nrrd`` / ``metaimage`` for a path, or None."""
    name = path.name.lower()
    for suffix, fmt in ITK_SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    return None


def read_itk(path: str | Path) -> Volume:
    """Read a NIfTI, NRRD or MetaImage file with SimpleITK, keeping its LPS geometry.

    Args:
        path: ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha`` or ``.mhd`` file.

    Returns:
        Volume (z, y, x[, c]); intensities as stored (HU for CT NRRDs written in HU).

    Raises:
        InputError: unreadable or truncated file, or more than 3 spatial dimensions.
    """
    import SimpleITK as sitk

    path = Path(path)
    fmt = itk_format(path) or "itk"
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"not a readable {fmt} image ({_itk_reason(exc)})", path) from None
    dim = image.GetDimension()
    if dim == 4:
        size = image.GetSize()
        if size[3] != 1:
            raise InputError(f"4D image ({size[3]} volumes): medanomaly reads 2D/3D images", path)
        image = image[:, :, :, 0]
    elif dim not in (2, 3):
        raise InputError(f"{dim}D image: medanomaly reads 2D/3D images", path)
    meta: dict[str, object] = {"source_format": fmt}
    if image.HasMetaDataKey("modality"):
        modality = image.GetMetaData("modality").strip().upper()
        if modality in KNOWN_MODALITIES:
            meta["modality"] = modality
            if modality == "CT":
                meta["units"] = "HU"
    if image.GetNumberOfComponentsPerPixel() > 1:
        meta["channels"] = image.GetNumberOfComponentsPerPixel()
    vol = Volume.from_sitk(image, **meta)
    return vol


def _itk_reason(exc: RuntimeError) -> str:
    """The useful last line of an ITK exception."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[-1] if lines else "ITK error"
    text = text.split(": ", 1)[-1] if text.startswith(("itk::", "ITK ")) else text
    return text if len(text) <= 120 else text[:117] + "..."


def write_itk(volume: Volume, path: str | Path, *, compress: bool = True) -> Path:
    """Write a Volume as NIfTI / NRRD / MetaImage (by extension), keeping its geometry.

    NRRD and MetaImage also store ``meta["modality"]``; NIfTI has no place for it.
    """
    import SimpleITK as sitk

    path = Path(path)
    if itk_format(path) is None:
        raise InputError(f"unknown image extension (use one of {', '.join(ITK_SUFFIXES)})", path)
    array = volume.array
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    image = volume.with_array(array).to_sitk() if array is not volume.array else volume.to_sitk()
    if "modality" in volume.meta:
        image.SetMetaData("modality", str(volume.meta["modality"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        sitk.WriteImage(image, str(path), useCompression=compress)
    except RuntimeError as exc:
        raise InputError(f"cannot write image ({_itk_reason(exc)})", path) from None
    return path
