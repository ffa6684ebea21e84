"""Recorded model-input preprocessing: each task's input preparation as a list of registered steps.

A run saves the list a builder returns in ``model.json``; ``Pipeline.from_config(steps)`` replays
it without any training code (export, batch inference and the service do). The steps record
numbers, not preset names (a window is saved as ``low``/``high`` HU), so a later change of a
named preset never changes what a saved model sees. Every step calls the same function the task's
own loader calls, so a replay gives the same array (the tests check it bit for bit):

============== ==================================================================================
task           steps
============== ==================================================================================
classification ``channels`` (count, RGBA -> RGB), ``percentile_unit`` or ``window`` (the
               ``intensity`` mode), ``resize`` to ``image_size`` (as ``data.arrays.to_model_array``)
detection      ``cast`` float32, ``resample`` to the detector spacing (linear, Gaussian
               anti-aliasing, 0 outside), ``window`` (as ``detect.grid.to_grid`` + ``window``)
fusion         ``modality_intensity`` (window in HU or robust z-score per modality),
               ``middle_slice`` (2D models), ``resize`` (as ``fusion.data.sample_to_array``)
============== ==================================================================================

The pipeline's output Volume is the network input with its geometry: components are channels
(or modalities); :func:`medanomaly.preprocess.resize.channels_first` gives the ``(C, *size)`` array.

Example:
    >>> [s["name"] for s in classification_steps((64, 64), 1, "ct_lung")]
    ['channels', 'window', 'resize']
    >>> detection_steps((1.25, 1.25, 5.0), (-1000, 400))[2]
    {'name': 'window', 'low': -1000.0, 'high': 400.0}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from medanomaly.errors import ConfigError, InputError
from medanomaly.preprocess.checks import require_finite
from medanomaly.preprocess.intensity import INTENSITY_WINDOWS_HU, WINDOWS, robust_zscore_array, window_array
from medanomaly.preprocess.steps import Step, checked_step
from medanomaly.registry import TRANSFORMS
from medanomaly.types import Volume

__all__ = ["classification_steps", "detection_steps", "fusion_steps", "default_fusion_window"]


def classification_steps(image_size: Sequence[int], channels: int, intensity: str = "percentile") -> list[dict[str, Any]]:
    """Steps of a classifier's input: channel check, intensity mapping to [0, 1], resize.

    Args:
        image_size: (y, x) for a 2D model or (z, y, x), voxels.
        channels: channels the model takes (an image with another count is refused).
        intensity: ``percentile`` (per image and channel) or a CT window mode (``ct_lung``,
            ``ct_soft``), recorded as its HU numbers.
    """
    steps: list[dict[str, Any]] = [{"name": "channels", "channels": int(channels)}]
    if intensity == "percentile":
        steps.append({"name": "percentile_unit", "low_pct": 0.5, "high_pct": 99.5})
    elif intensity in INTENSITY_WINDOWS_HU:
        low, high = INTENSITY_WINDOWS_HU[intensity]
        steps.append({"name": "window", "low": float(low), "high": float(high)})
    else:
        valid = ", ".join(("percentile", *INTENSITY_WINDOWS_HU))
        raise InputError(f"unknown intensity mode {intensity!r}; valid: {valid}")
    steps.append({"name": "resize", "size": [int(s) for s in image_size]})
    return steps


def detection_steps(spacing_mm: Sequence[float], hu_window: Sequence[float]) -> list[dict[str, Any]]:
    """Steps of the 3D detector's input: float32, resample to its grid (mm, x/y/z; anti-aliased,
    0 outside), HU window to [0, 1]."""
    return [
        {"name": "cast", "dtype": "float32"},
        {"name": "resample", "spacing": [float(s) for s in spacing_mm], "interpolator": "linear",
         "default": 0.0, "antialias": True},  # fmt: skip
        {"name": "window", "low": float(hu_window[0]), "high": float(hu_window[1])},
    ]


def default_fusion_window(modality: str) -> tuple[float, float] | None:
    """The fusion default for a modality without a configured window: CT gets the ``cardiac``
    window (-200..600 HU); other modalities (MR: no absolute unit) a robust z-score (None)."""
    return WINDOWS["cardiac"] if modality.upper() == "CT" else None


def fusion_steps(modalities: Sequence[str], size: Sequence[int],
                 windows: Mapping[str, Sequence[float]] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Steps of a fusion model's input from a Volume whose components are ``modalities`` in order:
    per-modality window (HU) or robust z-score, the middle slice for a 2D model, resize to ``size``.

    Args:
        modalities: modality names, channel order (``("CT", "MR")``).
        size: (y, x) or (z, y, x) voxels.
        windows: HU windows by modality; the others get :func:`default_fusion_window`.
    """
    given = dict(windows or {})
    resolved: dict[str, list[float] | None] = {}
    for name in modalities:
        win = given.get(name, default_fusion_window(name))
        resolved[str(name)] = None if win is None else [float(win[0]), float(win[1])]
    steps: list[dict[str, Any]] = [{"name": "modality_intensity", "modalities": [str(m) for m in modalities],
                                    "windows": resolved}]  # fmt: skip
    if len(size) == 2:
        steps.append({"name": "middle_slice"})
    steps.append({"name": "resize", "size": [int(s) for s in size]})
    return steps


@TRANSFORMS.register("channels")
@dataclass(frozen=True)
class Channels(Step):
    """Check the component count against the model's ``channels`` (RGBA loses its alpha for 3);
    another count is refused, never converted."""

    channels: int = 1
    name: ClassVar[str] = "channels"

    def run(self, volume: Volume, context: dict[str, Any]) -> tuple[Volume, dict[str, Any]]:
        comps = volume.n_components
        if comps == 4 and self.channels == 3:
            return volume.with_array(np.asarray(volume.array)[..., :3]), {"dropped": "alpha"}
        if comps != self.channels:
            raise InputError(f"image has {comps} channel(s), the config expects {self.channels} "
                             f"(set data.channels to {comps})")  # fmt: skip
        return volume, {}


@TRANSFORMS.register("modality_intensity")
@checked_step
class ModalityIntensity(Step):
    """Per component (one modality each, in ``modalities`` order): the HU window of
    ``windows[name]`` to [0, 1], or a robust z-score when it is None. One modality with colour
    components is averaged to grey first. Types checked when made (``windows: 5`` was an AttributeError)."""

    modalities: tuple[str, ...] = ("CT", "MR")
    windows: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    name: ClassVar[str] = "modality_intensity"

    def __post_init__(self) -> None:
        for name, win in self.windows.items():
            if win is not None and not float(win[1]) > float(win[0]):
                raise ConfigError(f"modality_intensity: window of {name} must be [low, high] with high > low")

    def run(self, volume: Volume, context: dict[str, Any]) -> tuple[Volume, dict[str, Any]]:
        require_finite(volume, "modality_intensity")
        arr = np.asarray(volume.array, dtype=np.float32)
        m = len(self.modalities)
        if m == 1 and arr.ndim == 4:
            arr = arr.mean(axis=3)
        parts = [arr] if arr.ndim == 3 else [arr[..., j] for j in range(arr.shape[-1])]
        if len(parts) != m:
            raise InputError(f"the fusion input needs {m} modalities {list(self.modalities)} as components, "
                             f"got {len(parts)}")  # fmt: skip
        out = []
        for name, part in zip(self.modalities, parts, strict=True):
            win = self.windows.get(name)
            out.append(robust_zscore_array(part) if win is None else window_array(part, *win))
        data = out[0] if m == 1 else np.stack(out, axis=-1)
        return volume.with_array(data), {"windowed": [n for n in self.modalities if self.windows.get(n)]}
