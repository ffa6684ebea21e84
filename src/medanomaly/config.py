"""One typed config tree, loaded from YAML and saved beside every run.

A config file names its ``task`` (a name in :data:`medanomaly.registry.TASKS`); the task's own
pydantic class (a subclass of :class:`RunConfig`) validates the rest. Components are picked by
registry name (``model: {name: compact_cnn, ...}``), never by import path or code in YAML.

Example:
    >>> cfg = RunConfig(task="demo", seed=1)
    >>> cfg.seed
    1
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medanomaly.errors import ConfigError


class Section(BaseModel):
    """Base for every config section: unknown keys are errors (a typo never passes silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ComponentConfig(Section):
    """A registry component: its ``name`` and keyword ``params`` for its factory."""

    name: str
    params: dict[str, Any] = {}


class RunConfig(Section):
    """Fields every task shares. Tasks subclass this with their own sections."""

    task: str
    name: str | None = None
    seed: int = Field(0, ge=0, le=2**32 - 1)  # numpy and torch seeds
    description: str = ""


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError("config file not found", path) from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config ({exc.__class__.__name__})", path) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML ({exc.__class__.__name__})", path) from None
    if not isinstance(data, dict) or "task" not in data:
        raise ConfigError("config must be a mapping with a 'task' key", path)
    return data


def parse_config(data: dict[str, Any], source: str | Path = "<config>") -> RunConfig:
    """Validate a config mapping with the class of its task."""
    from medanomaly.registry import TASKS

    try:
        task = TASKS.get(str(data.get("task")))
    except ConfigError as exc:  # name the config file, not only the unknown task
        raise ConfigError(exc.reason, source) from None
    try:
        return task.config_class.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{where}: {first['msg']} ({exc.error_count()} error(s))", source) from None


def load_config(path: str | Path) -> RunConfig:
    """Load and validate a YAML config file."""
    path = Path(path)
    return parse_config(_read_yaml(path), path)


def save_config(config: RunConfig, run_dir: str | Path) -> Path:
    """Write ``config.yaml`` into ``run_dir`` (the run's own record of what it did)."""
    out = Path(run_dir) / "config.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    return out
