"""Pipeline steps: one small frozen dataclass per operation, registered in ``TRANSFORMS``.

Each step stores its parameters (the constructor validates them), and ``apply(volume, context)``
calls the pure function of :mod:`denoise`, :mod:`enhance`, :mod:`normalise`, :mod:`resample` or
:mod:`segment` and returns ``(volume, applied)``, where ``applied`` records the values it used
(window bounds, the sampled gamma, the ROI volume in mL, the new shape). ROI masks computed by
``mask_roi``/``crop_to_roi`` live in ``context["masks"]`` and follow every later spatial step.
Random steps sample their parameters from their own seeded generator, call the deterministic
op, and record what they sampled.

Example:
    >>> from medanomaly.registry import TRANSFORMS
    >>> TRANSFORMS.create("window", preset="lung").params
    {'preset': 'lung', 'low': None, 'high': None}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as _pydantic_dataclass

from medanomaly.config import Seed
from medanomaly.errors import ConfigError, InputError, raise_if_out_of_memory
from medanomaly.preprocess import denoise as _denoise
from medanomaly.preprocess import enhance as _enhance
from medanomaly.preprocess import normalise as _normalise
from medanomaly.preprocess import resample as _resample
from medanomaly.preprocess import resize as _resize
from medanomaly.preprocess import segment as _segment
from medanomaly.preprocess import tissue_masks as _tissue
from medanomaly.registry import TRANSFORMS
from medanomaly.types import Volume

__all__ = ["Step", "ROI_FUNCTIONS", "DENOISERS"]

#: ROI name -> mask function (Volume -> uint8 Volume).
ROI_FUNCTIONS = {
    "lung": _segment.lung_mask,
    "body": _segment.body_mask,
    "breast": _tissue.breast_mask,
    "brain": _tissue.brain_mask,
}

#: ``denoise`` step methods -> function.
DENOISERS = {
    "gaussian": _denoise.gaussian,
    "median": _denoise.median,
    "bilateral": _denoise.bilateral,
    "nl_means": _denoise.nl_means,
    "curvature": partial(_denoise.anisotropic_diffusion, kind="curvature"),
    "gradient": partial(_denoise.anisotropic_diffusion, kind="gradient"),
    "speckle": _denoise.speckle_lee,
}

Applied = dict[str, Any]

#: A percentile (0..100).
Percent = Annotated[float, Field(ge=0.0, le=100.0)]
#: The voxel types a step may cast to: those the NIfTI / NRRD / MHA writers take as scalars.
CAST_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float32", "float64")


def checked_step(cls: type) -> type:
    """A frozen step dataclass whose fields pydantic checks against their annotations when the step is made (bounds,
    finite numbers): a config's or a hand-edited ``model.json``'s values were used as they were (a CLAHE kernel of 0
    divided by zero, a percentile of 200 or a 10^9 mm unsharp radius were tracebacks mid-pipeline, a NaN clip limit
    or sigma ran silently)."""
    return _pydantic_dataclass(frozen=True, config=ConfigDict(allow_inf_nan=False))(cls)


def _ordered(low: float, high: float, what: str = "low < high") -> None:
    if not low < high:
        raise ConfigError(f"need {what}, got {low}, {high}")


@dataclass(frozen=True)
class Step:
    """Base class: ``params`` are the dataclass fields; subclasses implement ``run``."""

    name: ClassVar[str] = "step"
    spatial: ClassVar[bool] = False

    @property
    def params(self) -> dict[str, Any]:
        return asdict(self)

    def run(self, volume: Volume, context: dict[str, Any]) -> tuple[Volume, Applied]:
        raise NotImplementedError

    def apply(self, volume: Volume, context: dict[str, Any]) -> tuple[Volume, Applied]:
        """Run the step; spatial steps also carry the context's ROI masks onto the new grid.

        Raises:
            InputError: the step's own checks, or a SimpleITK filter refusing the image (e.g. fewer than
                four voxels along an axis for a recursive Gaussian), in one line naming the step.
        """
        try:
            out, applied = self.run(volume, context)
        except RuntimeError as exc:  # SimpleITK's C++ exceptions: one line, not a trace
            raise_if_out_of_memory(exc)
            from medanomaly.io.itk import itk_reason

            raise InputError(f"{self.name}: {itk_reason(exc)}") from None
        if self.spatial and context.get("masks"):
            context["masks"] = {
                k: _resample.mask_onto_grid(m, out) for k, m in context["masks"].items()
            }
        return out, applied


def _roi_mask(roi: str, volume: Volume, context: dict[str, Any]) -> Volume:
    masks = context.setdefault("masks", {})
    if roi not in masks:
        masks[roi] = ROI_FUNCTIONS[roi](volume)
    return masks[roi]


def _check_roi(roi: str) -> None:
    if roi not in ROI_FUNCTIONS:
        raise ConfigError(f"unknown roi {roi!r}; valid: {', '.join(sorted(ROI_FUNCTIONS))}")


# ------------------------------------------------------------------------------------- intensity
@TRANSFORMS.register("window")
@checked_step
class Window(Step):
    """CT window to 0..1 (:func:`enhance.window`): a ``preset``, or explicit ``low``/``high``
    HU; with neither, the lung window."""

    preset: str | None = None
    low: float | None = None
    high: float | None = None
    name: ClassVar[str] = "window"

    def __post_init__(self) -> None:
        if self.preset is not None and (self.low is not None or self.high is not None):
            raise ConfigError("give a preset or low/high, not both")
        if self.preset is None and self.low is None and self.high is None:
            object.__setattr__(self, "preset", "lung")
        _enhance._window_bounds(self.preset, self.low, self.high)

    def run(self, volume: Volume, context: dict[str, Any]) -> tuple[Volume, Applied]:
        lo, hi = _enhance._window_bounds(self.preset, self.low, self.high)
        return _enhance.window(volume, self.preset, self.low, self.high), {"low_hu": lo, "high_hu": hi}


@TRANSFORMS.register("multi_window")
@checked_step
class MultiWindow(Step):
    """Several CT windows stacked as channels (:func:`enhance.multi_window`)."""

    presets: tuple[str, ...] = ("lung", "mediastinum", "bone")
    name: ClassVar[str] = "multi_window"

    def __post_init__(self) -> None:
        for p in self.presets:
            _enhance._window_bounds(p, None, None)

    def run(self, volume: Volume, context: dict[str, Any]) -> tuple[Volume, Applied]:
        return _enhance.multi_window(volume, tuple(self.presets)), {"channels": list(self.presets)}


@TRANSFORMS.register("denoise")
@dataclass(frozen=True)
class Denoise(Step):
    """Denoise with ``method`` (gaussian, median, bilateral, nl_means, curvature, gradient,
    speckle); ``options`` are passed to the function (e.g. ``sigma_mm``)."""

    method: str = "gaussian"
    options: dict[str, Any] = field(default_factory=dict)
    name: ClassVar[str] = "denoise"

    def __init__(self, method: str = "gaussian", **options: Any) -> None:
        if not isinstance(method, str) or method not in DENOISERS:  # a list or mapping: "unhashable type" before
            raise ConfigError(f"unknown denoise method {method!r}; valid: {', '.join(sorted(DENOISERS))}")
        valid = _denoise_options(method)
        unknown = sorted(set(options) - set(valid))
        if unknown:  # before any image is read (it was the function's "unexpected keyword argument", at run time)
            raise ConfigError(f"denoise {method}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
        odd = next((k for k, v in options.items() if isinstance(v, float) and not np.isfinite(v)), None)
        if odd is not None:
            raise ConfigError(f"denoise {method}: {odd} is {options[odd]}: give a finite number")
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "options", dict(options))

    @property
    def params(self) -> dict[str, Any]:
        return {"method": self.method, **self.options}

    def run(self, volume: Volume, context: dict[str, Any]) -> tuple[Volume, Applied]:
        try:
            out = DENOISERS[self.method](volume, **self.options)
        except TypeError as exc:
            raise ConfigError(f"denoise {self.method}: {exc}") from None
        return out, {"method": self.method}


def _denoise_options(method: str) -> list[str]:
    """The options a denoise ``method`` takes (its function's keyword parameters after the volume)."""
    import inspect

    parameters = list(inspect.signature(DENOISERS[method]).parameters.values())[1:]
    fixed = DENOISERS[method].keywords if isinstance(DENOISERS[method], partial) else {}
    return [p.name for p in parameters if p.name not in fixed and p.kind is not p.VAR_KEYWORD]


@TRANSFORMS.register("clahe")
@checked_step
class Clahe(Step):
    """CLAHE to 0..1 (:func:`enhance.clahe`)."""

    clip_limit: Annotated[float, Field(gt=0.0, le=1.0)] = 0.01
    kernel_size: Annotated[int, Field(ge=2, le=4096)] | None = None
    per_slice: bool = True
    name: ClassVar[str] = "clahe"

    def run(self, volume: Volume, context: dict[str, Any]) -> tuple[Volume, Applied]:
        return _enhance.clahe(volume, self.clip_limit, self.kernel_size, self.per_slice), {}


@TRANSFORMS.register("equalize")
@checked_step
class Equalize(Step):
    """Histogram equalisation to 0..1, optionally from the histogram inside ``roi``."""

    nbins: Annotated[int, Field(ge=2, le=65_536)] = 256
    roi: str | None = None
    name: ClassVar[str] = "equalize"

    def __post_init__(self) -> None:
        if self.roi is not None:
            _check_roi(self.roi)

    def run(self, volume: Volume, context: dict[str, Any]) -> tuple[Volume, Applied]:
        mask = _roi_mask(self.roi, volume, context) if self.roi else None
        return _enhance.equalize(volume, self.nbins, mask), {}


@TRANSFORMS.register("gamma")
@checked_step
class Gamma(Step):
    """Gamma correction of a 0..1 image."""

    gamma: Annotated[float, Field(gt=0.0, le=100.0)] = 1.0
    name: ClassVar[str] = "gamma"

    def run(self, volume: Volume, context: dict[str, Any]) -> tuple[Volume, Applied]:
        return _enhance.gamma(volume, self.gamma), {"gamma": self.gamma}


@TRANSFORMS.register("random_gamma")
@checked_step
class RandomGamma(Step):
    """Gamma drawn log-uniformly in ``low..high`` (seeded), then :func:`enhance.gamma`; the
    sampled value is recorded so the run is reproducible."""

    low: Annotated[float, Field(gt=0.0, le=100.0)] = 0.7
    high: Annotated[float, Field(gt=0.0, le=100.0)] = 1.5
    seed: Seed | None = None
    name: ClassVar[str] = "random_gamma"

    def __post_init__(self) -> None:
        if not 0 < self.low <= self.high:
            raise ConfigError(f"need 0 < low <= high, got {self.low}, {self.high}")
        object.__setattr__(self, "_rng", np.random.default_rng(self.seed))

    @property
    def params(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "seed": self.seed}

    def run(self, volume: Volume, context: dict[str, Any]) -> tuple[Volume, Applied]:
        g = float(np.exp(self._rng.uniform(np.log(self.low), np.log(self.high))))  # type: ignore[attr-defined]
        return _enhance.gamma(volume, g), {"gamma": g}


@TRANSFORMS.register("unsharp")
@checked_step
class Unsharp(Step):
    """Unsharp masking (:func:`enhance.unsharp`)."""

    radius_mm: Annotated[float, Field(gt=0.0, le=100.0)] = 1.0
    amount: Annotated[float, Field(ge=0.0, le=100.0)] = 1.0
    name: ClassVar[str] = "unsharp"

    def run(self, volume: Volume, context: dict[str, Any]) -> tuple[Volume, Applied]:
        return _enhance.unsharp(volume, self.radius_mm, self.amount), {}


@TRANSFORMS.register("minmax")
@checked_step
class MinMax(Step):
    """Min-max to 0..1 (inside ``roi`` if given)."""

    roi: str | None = None
    name: ClassVar[str] = "minmax"

    def __post_init__(self) -> None:
        if self.roi is not None:
            _check_roi(self.roi)

    def run(self, volume: Volume, context: dict[str, Any]) -> tuple[Volume, Applied]:
        mask = _roi_mask(self.roi, volume, context) if self.roi else None
        vals = volume.array if mask is None else volume.array[mask.array > 0]
        return _normalise.minmax(volume, mask), {"min": float(np.min(vals)), "max": float(np.max(vals))}


@TRANSFORMS.register("zscore")
@checked_step
class ZScore(Step):
    """Z-score (statistics inside ``roi`` if given)."""

    roi: str | None = None
    name: ClassVar[str] = "zscore"

    def __post_init__(self) -> None:
        if self.roi is not None:
            _check_roi(self.roi)

    def run(self, volume: Volume, context: dict[str, Any]) -> tuple[Volume, Applied]:
        mask = _roi_mask(self.roi, volume, context) if self.roi else None
        vals = np.asarray(volume.array if mask is None else volume.array[mask.array > 0], np.float64)
        return _normalise.zscore(volume, mask), {"mean": float(vals.mean()), "std": float(vals.std())}


@TRANSFORMS.register("percentile_clip")
@checked_step
class PercentileClip(Step):
    """Clip to percentiles (:func:`normalise.percentile_clip`)."""

    lower: Percent = 0.5
    upper: Percent = 99.5
    name: ClassVar[str] = "percentile_clip"

    def __post_init__(self) -> None:
        _ordered(self.lower, self.upper, "lower < upper")

    def run(self, volume: Volume, context: dict[str, Any]) -> tuple[Volume, Applied]:
        lo, hi = np.percentile(volume.array, [self.lower, self.upper])
        return _normalise.percentile_clip(volume, self.lower, self.upper), {"low": float(lo), "high": float(hi)}


@TRANSFORMS.register("percentile_unit")
@checked_step
class PercentileUnit(Step):
    """Each channel to 0..1 by its own percentiles (:func:`normalise.percentile_unit`)."""

    low_pct: Percent = 0.5
    high_pct: Percent = 99.5
    name: ClassVar[str] = "percentile_unit"

    def __post_init__(self) -> None:
        _ordered(self.low_pct, self.high_pct, "low_pct < high_pct")

    def run(self, volume: Volume, context: dict[str, Any]) -> tuple[Volume, Applied]:
        return _normalise.percentile_unit(volume, self.low_pct, self.high_pct), {}


@TRANSFORMS.register("robust_zscore")
@checked_step
class RobustZScore(Step):
    """Z-score from the voxels between two percentiles (:func:`normalise.robust_zscore`)."""

    low_pct: Percent = 1.0
    high_pct: Percent = 99.0
    name: ClassVar[str] = "robust_zscore"

    def __post_init__(self) -> None:
        _ordered(self.low_pct, self.high_pct, "low_pct < high_pct")

    def run(self, volume: Volume, context: dict[str, Any]) -> tuple[Volume, Applied]:
        return _normalise.robust_zscore(volume, self.low_pct, self.high_pct), {}


@TRANSFORMS.register("cast")
@checked_step
class Cast(Step):
    """Convert voxels to ``dtype`` (float32, float64, int16, uint8, ...), values unchanged."""

    dtype: str = "float32"
    name: ClassVar[str] = "cast"

    def __post_init__(self) -> None:
        if self.dtype not in CAST_DTYPES:
            raise ConfigError(f"dtype {self.dtype!r} is not one of {', '.join(CAST_DTYPES)}")

    def run(self, volume: Volume, context: dict[str, Any]) -> tuple[Volume, Applied]:
        return volume.with_array(np.asarray(volume.array, dtype=np.dtype(self.dtype))), {}


@TRANSFORMS.register("hu_clip")
@checked_step
class HuClip(Step):
    """Clip a CT to ``low..high`` HU."""

    low: float = -1024.0
    high: float = 3071.0
    name: ClassVar[str] = "hu_clip"

    def __post_init__(self) -> None:
        _ordered(self.low, self.high)

    def run(self, volume: Volume, context: dict[str, Any]) -> tuple[Volume, Applied]:
        return _normalise.hu_clip(volume, self.low, self.high), {}


# ------------------------------------------------------------------------------------- ROI
@TRANSFORMS.register("mask_roi")
@checked_step
class MaskRoi(Step):
    """Compute an ROI mask (lung, body, breast, brain), keep it for later steps, and set voxels
    outside it to ``fill`` (default: the image minimum). Records the ROI volume in mL."""

    roi: str = "lung"
    fill: float | None = None
    name: ClassVar[str] = "mask_roi"

    def __post_init__(self) -> None:
        _check_roi(self.roi)

    def run(self, volume: Volume, context: dict[str, Any]) -> tuple[Volume, Applied]:
        mask = _roi_mask(self.roi, volume, context)
        inside = mask.array > 0
        fill = float(np.min(volume.array)) if self.fill is None else float(self.fill)
        arr = np.where(inside if volume.array.ndim == 3 else inside[..., None], volume.array, fill)
        ml = float(np.count_nonzero(inside) * volume.voxel_volume_mm3 / 1000.0)
        return volume.with_array(arr.astype(volume.array.dtype)), {"roi_ml": round(ml, 2), "fill": fill}


# ------------------------------------------------------------------------------------- spatial
@TRANSFORMS.register("resample")
@checked_step
class Resample(Step):
    """Resample to ``spacing`` mm (one value or x, y, z); ``default`` fills outside the image
    (None: image minimum), ``antialias`` low-passes the axes that shrink first."""

    spacing: float | tuple[float, float, float] = 1.0
    interpolator: str = "auto"
    default: float | None = None
    antialias: bool = False
    name: ClassVar[str] = "resample"
    spatial: ClassVar[bool] = True

    def run(self, volume: Volume, context: dict[str, Any]) -> tuple[Volume, Applied]:
        spacing = self.spacing if np.isscalar(self.spacing) else tuple(self.spacing)  # type: ignore[arg-type]
        out = _resample.resample_to_spacing(volume, spacing, self.interpolator, self.default,  # type: ignore[arg-type]
                                            self.antialias)  # fmt: skip
        return out, {"shape_zyx": list(out.shape)}


@TRANSFORMS.register("resize")
@checked_step
class Resize(Step):
    """Resize to ``size`` voxels, (y, x) for a 2D model or (z, y, x), keeping the physical box
    (:func:`resize.resize_to_shape`; the classifier and fusion input size)."""

    size: tuple[int, ...] = (64, 64)
    name: ClassVar[str] = "resize"
    spatial: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if len(self.size) not in (2, 3) or min(int(s) for s in self.size) < 1:
            raise ConfigError(f"size must be 2 or 3 positive ints, got {list(self.size)}")
        voxels = _resize.voxel_count(self.size)
        if voxels > _resize.MAX_VOXELS:  # checked before any image is read, not by the allocator
            raise ConfigError(f"size {list(self.size)} is {voxels:,} voxels, the limit is {_resize.MAX_VOXELS:,}")

    def run(self, volume: Volume, context: dict[str, Any]) -> tuple[Volume, Applied]:
        out = _resize.resize_to_shape(volume, tuple(self.size))
        return out, {"shape_zyx": list(out.shape)}


@TRANSFORMS.register("middle_slice")
@checked_step
class MiddleSlice(Step):
    """Keep the middle axial slice (index ``z // 2``), origin kept: a 3D image for a 2D model."""

    name: ClassVar[str] = "middle_slice"
    spatial: ClassVar[bool] = True

    def run(self, volume: Volume, context: dict[str, Any]) -> tuple[Volume, Applied]:
        z = volume.shape[0] // 2
        out = _resample.crop_zyx(volume, (z, 0, 0), (z + 1, *volume.shape[1:3]))
        return out, {"slice": z}


@TRANSFORMS.register("crop_or_pad")
@checked_step
class CropOrPad(Step):
    """Centre crop/pad to ``size`` voxels (z, y, x)."""

    size: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] = (64, 64, 64)
    pad_value: float | None = None
    name: ClassVar[str] = "crop_or_pad"
    spatial: ClassVar[bool] = True

    def __post_init__(self) -> None:
        voxels = _resize.voxel_count(self.size)
        if voxels > _resize.MAX_VOXELS:  # checked before any image is read, not by the allocator
            raise ConfigError(f"size {list(self.size)} is {voxels:,} voxels, the limit is "
                              f"{_resize.MAX_VOXELS:,}")  # fmt: skip

    def run(self, volume: Volume, context: dict[str, Any]) -> tuple[Volume, Applied]:
        out = _resample.crop_or_pad(volume, tuple(self.size), self.pad_value)
        return out, {"origin_mm": [round(o, 4) for o in out.origin]}


@TRANSFORMS.register("crop_to_roi")
@checked_step
class CropToRoi(Step):
    """Crop to the bounding box of an ROI mask plus ``margin_mm``."""

    roi: str = "lung"
    margin_mm: Annotated[float, Field(ge=0.0, le=1000.0)] = 10.0
    name: ClassVar[str] = "crop_to_roi"
    spatial: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_roi(self.roi)

    def run(self, volume: Volume, context: dict[str, Any]) -> tuple[Volume, Applied]:
        mask = _roi_mask(self.roi, volume, context)
        out = _resample.crop_to_mask(volume, mask, self.margin_mm)
        return out, {"shape_zyx": list(out.shape), "origin_mm": [round(o, 4) for o in out.origin]}


@TRANSFORMS.register("canonical")
@checked_step
class Canonical(Step):
    """Reorient to ``orientation`` (default LPS) without interpolation."""

    orientation: str = "LPS"
    name: ClassVar[str] = "canonical"
    spatial: ClassVar[bool] = True

    def run(self, volume: Volume, context: dict[str, Any]) -> tuple[Volume, Applied]:
        return _resample.to_canonical(volume, self.orientation), {}
