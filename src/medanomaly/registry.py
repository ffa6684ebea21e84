"""One small registry class: models, datasets, transforms, tasks and explainers by name.

YAML configs pick components by these names, never by import path. Each registry knows which
package fills it, and imports that package the first time it is asked, so ``import medanomaly``
stays fast.

Example:
    >>> from medanomaly.registry import Registry
    >>> shapes = Registry("shape")
    >>> @shapes.register("square")
    ... def square(side: float) -> float:
    ...     return side * side
    >>> shapes.create("square", side=3.0)
    9.0
    >>> shapes.names()
    ['square']
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from medanomaly.errors import ConfigError, first_reason

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> factory map with lazy population and helpful errors.

    Args:
        kind: what is registered ("model", "dataset", ...), used in error messages.
        populate: modules imported on first lookup; their import registers the entries.
        builder: ``"module:function"`` that makes an entry, ``function(name, factory, kwargs)``, imported
            on first use (e.g. the models' size limit, checked before a network is allocated);
            default: ``factory(**kwargs)``.
    """

    def __init__(self, kind: str, populate: tuple[str, ...] = (), builder: str | None = None) -> None:
        self.kind = kind
        self._populate = populate
        self._builder = builder
        self._populated = not populate
        self._populating = False
        self._entries: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator registering a factory (function or class) under ``name`` (default: its __name__)."""

        def decorator(obj: T) -> T:
            key = name or getattr(obj, "__name__", None)
            if not key:
                raise ValueError(f"{self.kind}: cannot infer a name for {obj!r}")
            if key in self._entries and self._entries[key] is not obj:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._entries[key] = obj
            return obj

        return decorator

    def _ensure_populated(self) -> None:
        # Marked populated only once every module imported: a failed import is raised again on
        # the next lookup instead of turning into a misleading "unknown name" error. The
        # _populating flag stops recursion when a module looks itself up while importing.
        if self._populated or self._populating:
            return
        self._populating = True
        try:
            for module in self._populate:
                importlib.import_module(module)
            self._populated = True
        finally:
            self._populating = False

    def get(self, name: str) -> T:
        """The entry called ``name``; an unknown name raises ConfigError listing the valid ones."""
        self._ensure_populated()
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(sorted(self._entries)) or "(none registered)"
            raise ConfigError(f"unknown {self.kind} {name!r}; valid: {valid}") from None

    def create(self, name: str, **kwargs: Any) -> Any:
        """Call the factory registered as ``name`` with ``kwargs``; a keyword it does not take (a typo in a
        config's ``params``) or a missing one raises ConfigError naming both, before anything is built."""
        return self.build(name, self.get(name), kwargs)

    def build(self, name: str, factory: Any, kwargs: dict[str, Any]) -> Any:
        """:meth:`create` for a factory already in hand (looked up and checked by the caller, or one that
        is not registered but is made the same way, e.g. a detector's own network), called ``name``
        in errors: keywords checked, then made through the registry's ``builder``."""
        try:
            inspect.signature(factory, follow_wrapped=False).bind(**kwargs)  # a wrapper checks for itself
        except TypeError as exc:
            raise ConfigError(f"{self.kind} {name!r}: {exc}; its parameters: {_parameters(factory)}") from None
        except ValueError:  # no signature to check (a builtin): the call itself will say
            pass
        if self._builder is None:
            return _called(self.kind, name, factory, kwargs)
        module, function = self._builder.split(":")
        return getattr(importlib.import_module(module), function)(name, factory, kwargs)

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching a shell-style ``pattern``."""
        self._ensure_populated()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        self._ensure_populated()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


def _parameters(factory: Any) -> str:
    """The keyword names ``factory`` takes, comma-separated."""
    names = [p.name for p in inspect.signature(factory, follow_wrapped=False).parameters.values()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]  # fmt: skip
    return ", ".join(names) or "(none)"


def _called(kind: str, name: str, factory: Any, kwargs: dict[str, Any]) -> Any:
    """``factory(**kwargs)``; a factory that checks its own arguments (pydantic's ``validate_call``: bounds of a
    phantom's size or patient count) refuses them as one :class:`ConfigError` naming the component."""
    from pydantic import ValidationError

    try:
        return factory(**kwargs)
    except ValidationError as exc:
        if exc.title != getattr(factory, "__name__", None):  # raised inside the factory's work, not by its arguments
            raise
        raise ConfigError(f"{kind} {name!r}: {first_reason(exc)}") from None


#: Networks (classifiers, detectors, segmenters, fusion heads) by name.
MODELS: Registry[Callable[..., Any]] = Registry(
    "model", populate=("medanomaly.models",), builder="medanomaly.models.limits:build_within_limits"
)
#: Datasets by name (manifest, medmnist, inbreast, lidc, ...).
DATASETS: Registry[Callable[..., Any]] = Registry("dataset", populate=("medanomaly.data",))
#: Preprocessing pipeline steps by name (window, denoise, resample, ...).
TRANSFORMS: Registry[Callable[..., Any]] = Registry("transform", populate=("medanomaly.preprocess",))
#: Training tasks by config ``task:`` value (classification, lung_nodule, fusion, ...).
TASKS: Registry[Any] = Registry("task", populate=("medanomaly.tasks",))
#: Explanation methods by name (gradcam, occlusion, ...).
EXPLAINERS: Registry[Callable[..., Any]] = Registry("explainer", populate=("medanomaly.explain",))
#: Loaders of exported model packages by format name (``onnx``), ``loader(folder) -> TaskModel``.
PACKAGE_LOADERS: Registry[Callable[..., Any]] = Registry("package loader", populate=("medanomaly.deploy.package",))
