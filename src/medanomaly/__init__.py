"""medanomaly: deep-learning anomaly detection in medical images.

The public verbs (the CLI mirrors them):

    >>> import medanomaly
    >>> vol = medanomaly.read("scan.nrrd")          # doctest: +SKIP
    >>> vol.spacing                                  # doctest: +SKIP
    (0.5703, 0.5703, 5.0)

Heavy dependencies (torch, SimpleITK, MONAI) load only when a verb needs them.
"""

from __future__ import annotations

from typing import Any

from medanomaly.types import Finding, Measurements, Prediction, Volume

__version__ = "0.1.0"

__all__ = ["Finding", "Measurements", "Prediction", "Volume", "read", "write", "__version__"]


def read(path: Any, **kwargs: Any) -> Volume:
    """Read a DICOM series/file, NIfTI, NRRD, PNG/JPEG or MedMNIST npz into a :class:`Volume`."""
    from medanomaly.io import read as _read

    return _read(path, **kwargs)


def write(volume: Volume, path: Any, **kwargs: Any) -> Any:
    """Write a :class:`Volume` as NIfTI, NRRD or PNG (chosen by the file extension)."""
    from medanomaly.io import write as _write

    return _write(volume, path, **kwargs)
