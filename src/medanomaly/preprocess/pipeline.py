"""A declarative preprocessing pipeline: named steps from YAML, each recording what it did.

A steps file is a list of ``{name: <registered step>, <param>: <value>, ...}``::

    - {name: mask_roi, roi: lung}
    - {name: window, preset: lung}
    - {name: denoise, method: gaussian, sigma_mm: 0.7}
    - {name: resample, spacing: [1.0, 1.0, 2.5]}

(or a mapping with a ``steps:`` list). Steps are built through
:data:`medanomaly.registry.TRANSFORMS` by name, never by import path. Running a pipeline gives
a :class:`PipelineResult`: the output Volume, one :class:`StepRecord` per step (name,
parameters, what it applied, input and output grid), and the mapping of points and masks from
the output grid back to the original image. Because every spatial step keeps LPS coordinates
(crop, pad, resample, reorient), mapping back is "same physical point" for points and
"nearest-neighbour resample onto the original grid" for masks.

Example:
    >>> import numpy as np
    >>> from medanomaly.types import Volume
    >>> ct = Volume(np.full((2, 8, 8), -1000, np.int16), spacing=(1.0, 1.0, 2.0),
    ...             meta={"modality": "CT"})
    >>> pipe = Pipeline.from_config([{"name": "window", "preset": "lung"},
    ...                              {"name": "resample", "spacing": 2.0}])
    >>> result = pipe(ct)
    >>> result.volume.shape, [r.name for r in result.records]
    ((2, 4, 4), ['window', 'resample'])
    >>> result.index_to_original((1, 1, 1)).tolist()
    [2.5, 2.5, 1.0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from medanomaly.errors import ConfigError, InputError, first_reason
from medanomaly.types import Volume

__all__ = ["MAX_STEPS", "Grid", "StepRecord", "PipelineResult", "Pipeline", "load_steps"]


#: Most steps a pipeline may have (recipes have 3-10; each step may take seconds on a CT).
MAX_STEPS = 100


@dataclass(frozen=True)
class Grid:
    """Where a voxel array sits in LPS: shape (z, y, x), spacing/origin (x, y, z), direction."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, volume: Volume) -> Grid:
        return cls(volume.shape, volume.spacing, volume.origin, tuple(float(d) for d in volume.direction.ravel()))

    def empty_volume(self, dtype: type = np.uint8) -> Volume:
        """A zero Volume on this grid."""
        return Volume(np.zeros(self.shape, dtype), spacing=self.spacing, origin=self.origin,
                      direction=np.asarray(self.direction).reshape(3, 3))  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "shape_zyx": list(self.shape),
            "spacing_mm": [round(s, 6) for s in self.spacing],
            "origin_mm": [round(o, 4) for o in self.origin],
        }


@dataclass(frozen=True)
class StepRecord:
    """What one step did: its name, parameters, the values it applied, grids before and after."""

    name: str
    params: Mapping[str, Any]
    applied: Mapping[str, Any]
    spatial: bool
    input_grid: Grid
    output_grid: Grid

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "params": dict(self.params), "applied": dict(self.applied),
                               "spatial": self.spatial}  # fmt: skip
        if self.spatial:
            out["input_grid"] = self.input_grid.to_json()
            out["output_grid"] = self.output_grid.to_json()
        return out


@dataclass(frozen=True, eq=False)
class PipelineResult:
    """Output of a pipeline run, with the chain of records and the way back to the original."""

    volume: Volume
    records: tuple[StepRecord, ...]
    original_grid: Grid
    masks: Mapping[str, Volume] = field(default_factory=dict)

    def index_to_original(self, index_xyz: Sequence[float] | np.ndarray) -> np.ndarray:
        """Continuous index (x, y, z) on the output grid -> continuous index on the original."""
        physical = self.volume.index_to_physical(index_xyz)
        return self.original_grid.empty_volume().physical_to_index(physical)

    def index_from_original(self, index_xyz: Sequence[float] | np.ndarray) -> np.ndarray:
        """Continuous index (x, y, z) on the original grid -> continuous index on the output."""
        physical = self.original_grid.empty_volume().index_to_physical(index_xyz)
        return self.volume.physical_to_index(physical)

    def mask_to_original(self, mask: Volume) -> Volume:
        """A mask (or label map) on the output grid resampled (nearest) onto the original grid."""
        from medanomaly.preprocess.resample import mask_onto_grid

        if not mask.same_grid(self.volume):
            raise InputError("mask_to_original: the mask is not on the pipeline's output grid")
        return mask_onto_grid(mask, self.original_grid.empty_volume())

    def to_json(self) -> dict[str, Any]:
        return {"original_grid": self.original_grid.to_json(), "steps": [r.to_json() for r in self.records]}


class Pipeline:
    """An ordered list of step objects (see :mod:`medanomaly.preprocess.steps`).

    Args:
        steps: step instances; each has ``name``, ``params``, ``spatial`` and
            ``apply(volume, context) -> (volume, applied)``.
    """

    def __init__(self, steps: Sequence[Any]) -> None:
        self.steps = list(steps)

    @classmethod
    def from_config(cls, config: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> Pipeline:
        """Build from a list of ``{name: ..., **params}`` (or ``{"steps": [...]}``) via TRANSFORMS."""
        from medanomaly.registry import TRANSFORMS

        if isinstance(config, Mapping):
            if "steps" not in config:
                raise ConfigError("pipeline config needs a 'steps' list")
            config = config["steps"]
        if not isinstance(config, Sequence) or isinstance(config, str | bytes):
            raise ConfigError("pipeline config must be a list of steps")
        if len(config) > MAX_STEPS:  # 20,000 denoise steps ran for a day on one CT
            raise ConfigError(f"pipeline has {len(config):,} steps, more than {MAX_STEPS}")
        steps = []
        for i, entry in enumerate(config):
            if not isinstance(entry, Mapping) or "name" not in entry:
                raise ConfigError(f"step {i + 1}: must be a mapping with a 'name'")
            name = str(entry["name"])
            params = {k: v for k, v in entry.items() if k != "name"}
            try:
                factory = TRANSFORMS.get(name)
            except InputError as exc:
                raise ConfigError(f"step {i + 1}: {exc.reason}") from None
            unknown = _unknown_params(factory, params)
            if unknown:
                valid = ", ".join(_param_names(factory)) or "(none)"
                raise ConfigError(f"step {i + 1} ({name}): unknown parameter(s) {', '.join(unknown)}; valid: {valid}")
            texts = _text_for_numbers(factory, params)
            if texts:
                value = params[texts[0]]
                hint = " (YAML reads 1e9 as text: write 1.0e9)" if "e" in str(value).lower() else ""
                raise ConfigError(f"step {i + 1} ({name}): {texts[0]} must be a number, got {value!r}{hint}")
            try:
                steps.append(factory(**params))
            except ValidationError as exc:  # a checked step's bounds (steps.checked_step)
                raise ConfigError(f"step {i + 1} ({name}): {first_reason(exc)}") from None
            except TypeError as exc:
                raise ConfigError(f"step {i + 1} ({name}): {exc}") from None
            except InputError as exc:
                raise ConfigError(f"step {i + 1} ({name}): {exc.reason}") from None
        return cls(steps)

    @classmethod
    def from_yaml(cls, path: str | Path) -> Pipeline:
        """Build from a YAML steps file; errors name the file (``steps.yaml: step 2 (window): ...``)."""
        try:
            return cls.from_config(load_steps(path))
        except InputError as exc:
            if exc.path is not None:
                raise
            raise ConfigError(exc.reason, path) from None

    def __call__(self, volume: Volume) -> PipelineResult:
        """Run every step in order, recording what each did."""
        context: dict[str, Any] = {"masks": {}}
        original = Grid.of(volume)
        records = []
        current = volume
        for step in self.steps:
            before = Grid.of(current)
            current, applied = step.apply(current, context)
            records.append(StepRecord(step.name, dict(step.params), dict(applied), bool(step.spatial),
                                      before, Grid.of(current)))  # fmt: skip
        return PipelineResult(current, tuple(records), original, dict(context["masks"]))

    def __repr__(self) -> str:
        return f"Pipeline([{', '.join(s.name for s in self.steps)}])"


def _param_names(factory: Any) -> list[str]:
    """Keyword parameters a step factory accepts (empty if it takes ``**kwargs``)."""
    import inspect

    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _text_for_numbers(factory: Any, params: Mapping[str, Any]) -> list[str]:
    """Parameters given as text where the step takes only numbers (annotation ``float``, ``int``, ``float | None``,
    tuples of them), e.g. YAML's ``1e9``, which YAML 1.1 reads as a string; they failed later, mid-run."""
    import inspect

    try:
        annotations = {p.name: str(p.annotation) for p in inspect.signature(factory).parameters.values()}
    except (TypeError, ValueError):
        return []
    numeric = {k for k, a in annotations.items() if ("float" in a or "int" in a) and "str" not in a and "Any" not in a}
    return sorted(k for k, v in params.items() if k in numeric and (isinstance(v, str) or (
        isinstance(v, list | tuple) and any(isinstance(x, str) for x in v))))  # fmt: skip


def _unknown_params(factory: Any, params: Mapping[str, Any]) -> list[str]:
    """Names in ``params`` the factory does not take (a typo in a YAML step), sorted."""
    import inspect

    try:
        kinds = {p.kind for p in inspect.signature(factory).parameters.values()}
    except (TypeError, ValueError):
        return []
    if inspect.Parameter.VAR_KEYWORD in kinds:
        return []
    return sorted(set(params) - set(_param_names(factory)))


def load_steps(path: str | Path) -> list[dict[str, Any]]:
    """Read a YAML steps file into a list of step mappings.

    Raises:
        ConfigError: not YAML, or not a list of steps.
    """
    from medanomaly.config import read_yaml

    path = Path(path)
    if not path.exists():  # a pipe (`-c <(...)`) is read; a folder or a device is refused by read_yaml
        raise InputError("steps file not found", path)
    data = read_yaml(path)
    if isinstance(data, Mapping):
        data = data.get("steps")
    if not isinstance(data, list):
        raise ConfigError("expected a list of steps (or a 'steps:' list)", path)
    return data
