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

import os
import re
from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from medanomaly.errors import ConfigError, first_reason
from medanomaly.jsonio import FileLimitError, read_bytes_limited, write_text_atomic


class Section(BaseModel):
    """Base for every config section: unknown keys are errors (a typo never passes silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ComponentConfig(Section):
    """A registry component: its ``name`` and keyword ``params`` for its factory."""

    name: str
    params: dict[str, Any] = {}

    @field_validator("params")
    @classmethod
    def _finite(cls, params: dict[str, Any]) -> dict[str, Any]:
        """No NaN or infinity anywhere in the parameters: a NaN dropout or seed passed every check of the
        component and failed at its first use, after the data work, as a traceback."""
        import math

        def check(value: Any, where: str) -> None:
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{where} is {value}: give a finite number")
            if isinstance(value, dict):
                children = value.items()
            elif isinstance(value, (list, tuple)):
                children = enumerate(value)
            else:
                return
            for key, item in children:
                check(item, f"{where}.{key}")

        for key, value in params.items():
            check(value, str(key))
        return params


def first_repeat(values: Iterable[Hashable]) -> Hashable | None:
    """The first value that appears a second time in ``values``, or None (for validators of lists that name each
    volume once).

    Example:
        >>> first_repeat(["ch2", "mni152", "ch2"]), first_repeat(["lung1", "lung2"])
        ('ch2', None)
    """
    seen: set[Hashable] = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return None


def ordered_pair(name: str, pair: tuple[float, float] | None) -> tuple[float, float] | None:
    """``pair`` unless it is a ``[smallest, largest]`` range given the other way round: then a ValueError naming
    ``name``, which pydantic reports with the field (for a section's validators)."""
    if pair is not None and pair[0] > pair[1]:
        raise ValueError(f"{name} [{pair[0]}, {pair[1]}] is inverted: give [smallest, largest]")
    return pair


def distinct_names(values: Iterable[Any]) -> bool:
    """True when every value is a non-empty string and none comes twice: class names a run or a classifier records.

    Example:
        >>> distinct_names(["benign", "malignant"]), distinct_names(["a", "a"]), distinct_names(["a", ""])
        (True, False, False)
    """
    values = list(values)
    return all(isinstance(v, str) and v for v in values) and first_repeat(values) is None


def is_finite_range(value: Any) -> bool:
    """True when ``value`` is a list ``[low, high]`` of two finite numbers (not booleans) with low < high: a range a
    run recorded (a fusion window, a 2D folder's intensity range), read back from JSON.

    Example:
        >>> is_finite_range([0, 255.0]), is_finite_range([0, 0]), is_finite_range([0, float("nan")]), is_finite_range(["0", 1])
        (True, False, False, False)
    """
    import math

    return isinstance(value, list) and len(value) == 2 and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value) and value[0] < value[1]


def env_whole_number(name: str, default: int, low: int = 0, high: int = 2**31 - 1) -> int:
    """The whole number the environment variable ``name`` holds, ``default`` when it is unset or blank; anything
    else than a whole number in ``low..high`` is one :class:`ConfigError` naming the variable (``int()`` of a
    thread count of ``abc`` or ``1.5`` was a traceback; ``99999999999`` threads one of ONNX Runtime's).

    Example:
        >>> env_whole_number("MEDANOMALY_DOCTEST_UNSET", 3)
        3
    """
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not (re.fullmatch(r"[0-9]{1,12}", text) and low <= int(text) <= high):  # ASCII digits: int() takes '²' too
        raise ConfigError(f"environment variable {name}={text[:40]!r} is not a whole number from {low:,} to {high:,}")
    return int(text)


#: The largest seed NumPy's and torch's generators take from a config (2^32 - 1).
MAX_SEED = 2**32 - 1
#: A seed of NumPy's and torch's generators.
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class RunConfig(Section):
    """Fields every task shares. Tasks subclass this with their own sections."""

    task: str
    name: str | None = None
    seed: Seed = 0
    description: str = ""


MAX_YAML_BYTES = 1 << 20  # a config or steps file is a few KiB; 1 MiB leaves room and bounds the parse
MAX_YAML_DEPTH = 64  # nesting of lists and mappings as written (PyYAML's composer recurses per level)
MAX_YAML_NODES = 100_000  # values once every alias (*name) is expanded: a "billion laughs" file stops here


def read_yaml(path: str | Path) -> Any:
    """Parse a small, trusted-format YAML file (a config, a steps list) with every limit checked first.

    ``yaml.safe_load`` constructs no objects, but it still expands aliases and recurses per nesting level:
    nine nested aliases of nine items each are 387 million values (memory grows until the machine gives
    out), and a file of 50,000 ``[`` ends in a ``RecursionError`` trace. Here the file's size, its nesting
    depth (from the parser's events, before composing), recursive aliases and the expanded value count are
    checked before anything is built.

    Raises:
        ConfigError: missing, unreadable, too large, not YAML, or over a limit (one line naming the file).
    """
    path = Path(path)
    try:
        text = _yaml_text(read_bytes_limited(path, MAX_YAML_BYTES, "a YAML file"))
    except FileNotFoundError:
        raise ConfigError("config file not found", path) from None
    except FileLimitError as exc:
        raise ConfigError(str(exc), path) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start} of the file): save it as UTF-8", path) from None
    except (IsADirectoryError, PermissionError) as exc:
        raise ConfigError(f"cannot read config ({exc.__class__.__name__})", path) from None
    try:
        _check_yaml_depth(text)
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_yaml_expansion(node)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML ({_first_line(exc)})", path) from None
    except _YamlLimit as exc:
        raise ConfigError(str(exc), path) from None


def _yaml_text(raw: bytes) -> str:
    """The text of a YAML file in the encodings YAML allows (1.2, section 5.2): UTF-16 with its byte-order mark, as
    Windows PowerShell 5's ``>`` and Notepad's "Unicode" save it (it was "cannot read config
    (UnicodeDecodeError)"), else UTF-8 (with or without a byte-order mark).

    Example:
        >>> _yaml_text("task: anomaly".encode("utf-16"))
        'task: anomaly'
    """
    import codecs

    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16")
    return raw.decode("utf-8")


class _YamlLimit(Exception):
    """A YAML file over one of the limits above (turned into a ConfigError naming the file)."""


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__


def _check_yaml_depth(text: str) -> None:
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise _YamlLimit(f"YAML nested deeper than {MAX_YAML_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _check_yaml_expansion(root: yaml.Node) -> None:
    """Count the values ``root`` expands to (an alias counts its whole anchor each time), without building
    them: iterative post-order over the node graph with one memo entry per node."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        kids = _yaml_children(node)
        if children_done:
            on_path.discard(key)
            _check_unique_keys(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            if size[key] > MAX_YAML_NODES:
                raise _YamlLimit(f"YAML expands to more than {MAX_YAML_NODES:,} values (aliases *name repeat their anchors)")
            continue
        if key in size:
            continue
        on_path.add(key)
        stack.append((node, True))
        for kid in kids:
            if id(kid) in on_path:
                raise _YamlLimit("YAML alias refers to itself (a recursive structure)")
            if id(kid) not in size:
                stack.append((kid, False))


def _check_unique_keys(node: yaml.Node) -> None:
    """A mapping may not give one key twice: YAML loaders keep the last silently, so ``batch_size: 32`` followed
    later by ``batch_size: 4096`` trained with 4096 without a word (a merge ``<<`` may still be overridden)."""
    if not isinstance(node, yaml.MappingNode):
        return
    seen: dict[str, int] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue
        line = key.start_mark.line + 1
        if key.value in seen:
            raise _YamlLimit(f"key {key.value!r} given twice in one mapping (lines {seen[key.value]} and {line})")
        seen[key.value] = line


def _yaml_children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _read_yaml(path: Path) -> dict[str, Any]:
    data = read_yaml(path)
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
        raise ConfigError(f"{first_reason(exc)} ({exc.error_count()} error(s))", source) from None


def load_config(path: str | Path) -> RunConfig:
    """Load and validate a YAML config file."""
    path = Path(path)
    return parse_config(_read_yaml(path), path)


def save_config(config: RunConfig, run_dir: str | Path) -> Path:
    """Write ``config.yaml`` into ``run_dir`` (the run's own record of what it did)."""
    out = Path(run_dir) / "config.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    return out
