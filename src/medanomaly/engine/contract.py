"""The task contract: what every task and every loaded model provides, so each verb is written once.

A **task** (registered in :data:`medanomaly.registry.TASKS` under its config's ``task:`` name and
listed in :mod:`medanomaly.tasks`) trains a run folder, evaluates it, and loads it::

    task.train(config, run_dir) -> run_dir          task.evaluate(run_dir, split) -> metrics
    task.load(run_dir, info) -> TaskModel

A **loaded model** (:class:`TaskModel`) predicts one image, or several, explains itself and hands
its network to export::

    model.predict(volume) -> Prediction             model.predict_many(volumes) -> [Prediction]
    model.explainable() -> Explainable              model.network() -> torch module
    model.preprocessing -> Pipeline (recorded in model.json, replayable without training code)

``predict`` and ``predict_many`` (:class:`ModelBase`) check each image as every command does, then call the task's
``_predict`` (``_predict_many`` where it batches): a library caller's image is refused as the CLI's is.

Adding a task = one package with a ``config_class``, these four methods (a model's ``_predict`` in place of
``predict``), and one line in ``medanomaly/tasks.py``. The verbs (:mod:`medanomaly.engine.verbs`), the CLI, export, batch
inference and the service then work for it unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from medanomaly.config import RunConfig
from medanomaly.engine.run import MODEL_JSON, RunInfo
from medanomaly.errors import InputError, about_file
from medanomaly.io.limits import check_least_size
from medanomaly.io.frames import CINE_ADVICE
from medanomaly.types import Prediction, Volume, is_cine_loop, require_slices

__all__ = ["Task", "TaskModel", "ModelBase", "finite_output", "require_volume"]


def finite_output(values: Any, what: str = "the model's outputs") -> Any:
    """``values`` if every one is finite, else one InputError: weights that overflow on this input (a damaged or
    foreign weights file, or a training that diverged). Every task's prediction passes its scores or map through it:
    weights of 1e30 passed every load check and gave NaN probabilities, which a classifier reported as the class
    ``normal`` with null probabilities, and an anomaly map that was blamed on the image."""
    import numpy as np

    array = np.asarray(values)
    array = array if array.dtype.kind in "fciub" else array.astype(np.float64)  # no copy of a float map
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise InputError(f"{bad:,} NaN or infinite value(s) in {what} (weights that overflow on this input: a damaged "
                         "or foreign weights file, or a training that diverged)")  # fmt: skip
    return values


def require_volume(value: Any) -> Volume:
    """``value`` when it is a :class:`~medanomaly.types.Volume`, else a TypeError saying how to make one: a library
    caller's NumPy array or file name reached the task's code and failed there (``'numpy.ndarray' object has no
    attribute 'spacing'``)."""
    if not isinstance(value, Volume):
        raise TypeError(f"a model predicts a medanomaly.Volume (medanomaly.read(path), or Volume(array, spacing=(x, y, "
                        f"z) mm)), got {type(value).__name__}")  # fmt: skip
    return value


def refuse_cine(volume: Volume, path: Any = None) -> None:
    """Refuse a cine loop (several frames in time) given to a model of one 2D image, saying how to take one frame
    (it was "a 3D image of shape (4, 480, 640) cannot feed a 2D model")."""
    if is_cine_loop(volume):
        raise InputError(f"a cine loop of {volume.shape[0]} frames in time, where the model takes one 2D image: "
                         f"{CINE_ADVICE}", path)  # fmt: skip


@runtime_checkable
class Task(Protocol):
    """A trainable task (see the module docstring)."""

    config_class: type[RunConfig]

    def train(self, config: RunConfig, run_dir: Path) -> Path: ...

    def evaluate(self, run_dir: Path, split: str = "test") -> dict[str, Any]: ...

    def load(self, run_dir: Path, info: RunInfo) -> TaskModel: ...


@runtime_checkable
class TaskModel(Protocol):
    """A trained model of any task, ready to predict (see the module docstring)."""

    info: RunInfo
    run_dir: Path

    @property
    def task(self) -> str: ...

    @property
    def class_names(self) -> tuple[str, ...]: ...

    @property
    def preprocessing(self) -> Any: ...

    def predict(self, volume: Volume) -> Prediction: ...

    def predict_many(self, volumes: Sequence[Volume]) -> list[Prediction]: ...

    def explainable(self) -> Any: ...

    def network(self) -> Any: ...


class ModelBase:
    """Shared behaviour of loaded models: names from ``model.json``, the recorded pipeline, a
    one-by-one ``predict_many`` (tasks that can batch override it), and the input checks.

    Args:
        info: the run's validated ``model.json``.
        run_dir: the run folder it was loaded from.
    """

    #: A floor under the memory one prediction takes beyond its input, per input voxel (bytes): each task sets the
    #: least it was measured to take on large inputs (``bench/bench_predict_memory.py`` prints measured / floor).
    PREDICT_BYTES_PER_VOXEL: float = 8.0

    def __init__(self, info: RunInfo, run_dir: Path) -> None:
        self.info = info
        self.run_dir = Path(run_dir)
        self._pipeline: Any = None

    @property
    def task(self) -> str:
        return self.info.task

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.info.class_names)

    @property
    def synthetic(self) -> bool:
        return self.info.synthetic

    @property
    def preprocessing(self) -> Any:
        """The recorded input pipeline (:class:`medanomaly.preprocess.pipeline.Pipeline`)."""
        if self._pipeline is None:
            from medanomaly.preprocess.pipeline import Pipeline

            with about_file(self.run_dir / MODEL_JSON):  # a bad recorded step is the run's fault, not the image's
                self._pipeline = Pipeline.from_config(list(self.info.preprocessing))
        return self._pipeline

    def predict(self, volume: Volume) -> Prediction:
        """The :class:`Prediction` of one image, checked first as every command checks it (:meth:`check_input`), so a
        library caller's image is refused as the CLI's would be (a 1 x 1 picture was called, a volume too large
        for the memory left ended the process)."""
        self.check_input(require_volume(volume))
        return self._predict(volume)

    def predict_many(self, volumes: Sequence[Volume]) -> list[Prediction]:
        """One :class:`Prediction` per volume, in order, each checked as :meth:`predict` checks it."""
        volumes = list(volumes)
        for volume in volumes:
            self.check_input(require_volume(volume))
        return self._predict_many(volumes)

    def _predict(self, volume: Volume) -> Prediction:  # pragma: no cover - every task overrides
        """The task's prediction of one checked image."""
        raise NotImplementedError

    def _predict_many(self, volumes: Sequence[Volume]) -> list[Prediction]:
        """The task's predictions of checked images (one by one unless the task batches)."""
        return [self._predict(v) for v in volumes]

    def network(self) -> Any:  # pragma: no cover - every task overrides
        raise NotImplementedError

    def explainable(self) -> Any:  # pragma: no cover - every task overrides
        raise NotImplementedError

    def flags(self) -> tuple[str, ...]:
        """Flags every prediction of this model carries."""
        return ("synthetic_training_data",) if self.synthetic else ()

    def check_image(self, volume: Volume, path: Any = None) -> None:
        """Refuse, in one line, an image too small to be one (:func:`medanomaly.io.limits.check_least_size`), of
        values float32 cannot hold (:func:`medanomaly.preprocess.checks.require_float32_range`), or whose prediction
        would take more memory than is left (:meth:`check_memory`): what every model asks of every image."""
        from medanomaly.preprocess.checks import require_float32_range

        check_least_size(volume, path)
        with about_file(path):
            require_float32_range(volume, "the model")
        self.check_memory(volume, path)

    def check_input(self, volume: Volume, path: Any = None) -> None:
        """Refuse an image of another dimensionality or modality than the model's, or one :meth:`check_image`
        refuses, in one line."""
        self.check_image(volume, path)
        want_dims = self.info.input.get("spatial_dims")
        if want_dims == 2:
            refuse_cine(volume, path)
        if want_dims == 3 and volume.is_2d:
            raise InputError("the model expects a 3D volume, got a 2D image", path)
        if want_dims == 3:
            try:
                require_slices(volume, "a 3D model")  # a cine loop's frames are time, not slices
            except InputError as exc:
                raise InputError(exc.reason, path) from None
        want = self.info.input.get("modality")
        got = volume.meta.get("modality")
        if want and got and got not in ("OT", want) and want not in ("any",):
            raise InputError(f"the model expects modality {want}, got {got}", path)

    def check_memory(self, volume: Volume, path: Any = None) -> None:
        """Refuse an image whose prediction would take more memory than this process may still take
        (:func:`medanomaly.io.memory.available_memory_bytes`: a container's limit counts), before the work: in a
        container the kernel kills the process instead (a service with it), without a word."""
        from medanomaly.io.limits import format_bytes, memory_shortfall

        need = int(self.PREDICT_BYTES_PER_VOXEL * volume.array.size)
        available = memory_shortfall(need, 1.0)
        if available is not None:
            raise InputError(f"predicting it takes at least about {format_bytes(need)} of memory but "
                             f"{format_bytes(available)} is left to this process: crop or resample the image, or give "
                             "the process more memory", path)  # fmt: skip

    def __repr__(self) -> str:
        return f"{type(self).__name__}(task={self.task!r}, classes={self.class_names}, run={self.run_dir.name!r})"
