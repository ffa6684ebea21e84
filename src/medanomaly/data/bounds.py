"""Bounds of the registered datasets' parameters, checked before anything is read or drawn.

A config's ``data.dataset.params`` are free (each loader takes its own), so without these a value was used as it
was: a negative patch size, a seed of -1, an inverted diameter range or ``max_per_split: 0`` were NumPy or PyTorch
tracebacks after minutes of reading, 10^9 simulated nodules ran on without end, a NaN margin failed deep inside a
crop. Each loader declares its parameters with the types below and is wrapped by :data:`checked` (pydantic's
``validate_call``); :meth:`medanomaly.registry.Registry.create` turns a refusal into one ``ConfigError`` line naming
the dataset and the parameter.

Example:
    >>> from medanomaly.registry import DATASETS
    >>> DATASETS.create("lung_nodule_patches", patch_mm=-5.0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    medanomaly.errors.ConfigError: dataset 'lung_nodule_patches': patch_mm: Input should be greater than or equal to 4
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, validate_call

from medanomaly.config import Seed, first_repeat

__all__ = ["Assessment", "Channels", "Count", "DiameterRange", "Fraction", "ImageSize", "MaxSide", "Millimetres", "PatchMillimetres",
           "Patients", "Seed", "Side", "SimulatedCount", "SourceNames", "checked"]


def _within_voxel_limit(size: tuple[int, ...]) -> tuple[int, ...]:
    from medanomaly.preprocess.resize import MAX_VOXELS, voxel_count

    voxels = voxel_count(size)
    if voxels > MAX_VOXELS:
        raise ValueError(f"{list(size)} is {voxels:,} voxels per image; the limit is {MAX_VOXELS:,}")
    return size


def _each_once(names: tuple[str, ...]) -> tuple[str, ...]:
    repeated = first_repeat(names)
    if repeated is not None:
        raise ValueError(f"{repeated!r} is named twice")
    return names


def _ordered(pair: tuple[float, float]) -> tuple[float, float]:
    if pair[0] > pair[1]:
        raise ValueError(f"the range must go from low to high, got {list(pair)}")
    return pair


#: A fraction of the patients or images (0..1).
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
#: Patients of a simulated cohort.
Patients = Annotated[int, Field(ge=3, le=100_000)]
#: Side of a simulated image (pixels).
Side = Annotated[int, Field(ge=32, le=4096)]
#: A number of items to keep (images per split): at least one.
Count = Annotated[int, Field(ge=1, le=100_000_000)]
#: A number of items to simulate (nodules): at least one, and few enough to finish.
SimulatedCount = Annotated[int, Field(ge=1, le=100_000)]
#: A physical length (mm): a gap, a radius, a clustering distance.
Millimetres = Annotated[float, Field(gt=0.0, le=1000.0)]
#: The side of a cubic patch cut around a nodule (mm).
PatchMillimetres = Annotated[float, Field(ge=4.0, le=500.0)]
#: (smallest, largest) simulated nodule diameter (mm).
DiameterRange = Annotated[tuple[Annotated[float, Field(ge=1.0, le=100.0)], Annotated[float, Field(ge=1.0, le=100.0)]],
                          AfterValidator(_ordered)]  # fmt: skip
#: A BI-RADS assessment category (0..6).
Assessment = Annotated[int, Field(ge=0, le=6)]
#: The longest side a mammogram is shrunk to (pixels).
MaxSide = Annotated[int, Field(ge=32, le=65_536)]
#: The model input a loader resizes to: 2 or 3 sides of at least one voxel, within the resize limit.
ImageSize = Annotated[tuple[Annotated[int, Field(ge=1)], ...], Field(min_length=2, max_length=3),
                      AfterValidator(_within_voxel_limit)]  # fmt: skip
#: Real CTs a simulation draws from (``lung1``, ``lung2``): at least one, each once (an empty list divided by zero).
SourceNames = Annotated[tuple[str, ...], Field(min_length=1, max_length=100), AfterValidator(_each_once)]
#: Image channels a loader produces (a classification config's ``data.channels`` has the same bounds).
Channels = Annotated[int, Field(ge=1, le=64)]

#: Check a loader's arguments against its annotations before it runs (pydantic's ``validate_call``).
checked = validate_call(config={"arbitrary_types_allowed": True, "allow_inf_nan": False})
