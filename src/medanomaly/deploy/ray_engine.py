"""Batch inference on Ray Data: the same per-series work as one machine, spread over a cluster.

``run_batch(..., engine="ray", address=None | "ray://HOST:10001" | "auto")`` hands the series
still to run to Ray Data: one row per series, ``map_batches`` with a pool of actors (each loads
the model once, then processes series one at a time with
:func:`medanomaly.deploy.batch.process_series`, writing the same records and DICOM files as the
local path), results streamed back to the driver as they finish. Tables are built by the driver
from the records, exactly as on one machine, so both paths give identical results.

Without ``address`` a local Ray is started with ``workers`` CPUs (default 2) and stopped at the
end; with an address the existing cluster is used (every node must see the archive and the
output folder on a shared file system, and have medanomaly installed).

Install with ``pip install 'medanomaly[scale]'`` (``make setup`` does).

Example:
    >>> run_batch(model, "/archive", "out", engine="ray", workers=2)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medanomaly.deploy.archive import SeriesEntry
from medanomaly.errors import InputError

__all__ = ["CONNECT_TIMEOUT_S", "check_reachable", "default_factory", "run_on_ray"]


class _Fixed:
    """A picklable factory returning one given model object (models without a run folder)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __call__(self) -> Any:
        return self.model


def default_factory(model: Any) -> Callable[[], Any]:
    """How a worker gets the model: load its run folder again, else a pickled copy of the object."""
    run_dir = getattr(model, "run_dir", None)
    if run_dir is not None and (Path(run_dir) / "model.json").is_file():
        from medanomaly.engine import load_model

        return functools.partial(load_model, str(Path(run_dir).resolve()))
    return _Fixed(model)


def _row(entry: SeriesEntry) -> dict[str, Any]:
    """A series as one Arrow-friendly Ray Data row."""
    row = dataclasses.asdict(entry)
    row["files"] = [str(p) for p in entry.files]
    row["image_type"] = list(entry.image_type)
    return {"entry": json.dumps(row)}


def _entry(text: str) -> SeriesEntry:
    data = json.loads(text)
    data["files"] = [Path(p) for p in data["files"]]
    data["image_type"] = tuple(data["image_type"])
    return SeriesEntry(**data)


class _SeriesWorker:
    """Ray Data actor: loads the model once, then processes one series per row."""

    def __init__(self, factory: Callable[[], Any], ctx: Any) -> None:
        import torch

        from medanomaly.io.library_logs import quiet_image_libraries

        quiet_image_libraries()  # a worker process starts without the CLI: keep header values out of Ray's logs
        torch.set_num_threads(1)
        self.model = factory()
        self.ctx = ctx

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        from medanomaly.deploy.batch import process_series

        records = [process_series(self.model, _entry(str(text)), self.ctx) for text in batch["entry"]]
        return {"record": [json.dumps(r, default=str) for r in records]}


#: Seconds to wait for a TCP connection to a Ray cluster's address before the batch is refused.
CONNECT_TIMEOUT_S = 10.0


def check_reachable(address: str) -> None:
    """One line when ``host:port`` (or ``ray://host:port``) takes no TCP connection: Ray itself retried an
    unreachable address for minutes, logging a warning every few seconds. ``auto`` and ``local`` are Ray's own."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        if address in ("auto", "local"):
            return
        raise InputError(f"Ray address {address!r}: expected HOST:PORT, ray://HOST:PORT, auto or local")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except (OSError, ValueError, OverflowError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise InputError(f"cannot reach Ray at {address} ({reason})") from None


def _init(address: str | None, workers: int) -> bool:
    """Connect to (or start) Ray; True when this call started a local Ray that must be stopped."""
    try:
        import ray
    except ImportError:
        raise InputError("engine 'ray' needs the scale extra: pip install 'medanomaly[scale]'") from None
    if ray.is_initialized():
        return False
    env = {"env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}}
    kwargs: dict[str, Any] = {"runtime_env": env, "log_to_driver": False, "include_dashboard": False}
    if address:
        check_reachable(address)
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=workers, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise InputError(f"cannot start or reach Ray at {address or 'local'} ({' '.join(str(exc).split())[:160]})") from None
    return address is None


def run_on_ray(
    model: Any,
    todo: Sequence[SeriesEntry],
    ctx: Any,
    advance: Callable[[dict], None],
    *,
    address: str | None = None,
    workers: int | None = None,
    model_factory: Callable[[], Any] | None = None,
) -> None:
    """Process ``todo`` on Ray Data with ``workers`` model actors; ``advance(record)`` per finished series.

    Raises:
        InputError: Ray is not installed or the cluster cannot be reached.
    """
    if not todo:
        return
    workers = int(workers or 2)
    started = _init(address, workers)
    import ray

    from medanomaly.errors import sigterm_raises

    try:
        with sigterm_raises():  # ray.init set its own handler (sys.exit(15), a native stack dump on stderr)
            _map_series(ray, todo, ctx, advance, workers, model_factory or default_factory(model))
    finally:
        if started:
            ray.shutdown()


def _map_series(ray: Any, todo: Sequence[SeriesEntry], ctx: Any, advance: Callable[[dict], None], workers: int,
                factory: Callable[[], Any]) -> None:  # fmt: skip
    """Run the series through ``workers`` model actors of Ray Data, ``advance(record)`` for each as it finishes."""
    ctx_data = ray.data.DataContext.get_current()
    ctx_data.enable_progress_bars = False
    ds = ray.data.from_items([_row(e) for e in todo], override_num_blocks=len(todo))
    results = ds.map_batches(
        _SeriesWorker,
        fn_constructor_args=(factory, ctx),
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=1,
    )
    for batch in results.iter_batches(batch_size=1, batch_format="pandas"):
        for text in batch["record"]:
            advance(json.loads(text))
