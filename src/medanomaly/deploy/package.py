"""The exported package folder: write it, verify it, load it (ONNX Runtime, no torch, no pickle).

A package holds::

    model.onnx          fp32 graph (opset 17, dynamic batch axis)
    model.int8.onnx     optional: static QDQ int8 graph (per-channel weights) that passed the guard
    model.json          the run's RunInfo: task, class names, thresholds (decision, abstention,
                        temperature, finding...), recorded preprocessing, input spec; an anomaly
                        package's int8 thresholds (``extra.int8_thresholds``, used with the int8 graph)
    manifest.json       format, ONNX opset, source run, software version, default graph, the fp32
                        match and int8 guard results (or the forced warning), SHA-256 of every file

Loading verifies every checksum first (a changed, missing or extra file is one line naming it,
exit 2 in the CLI) and reads only JSON and ONNX protobuf: nothing is ever unpickled.
Importing this module registers :func:`load_package` with
:data:`medanomaly.registry.PACKAGE_LOADERS` (as ``onnx``), so ``load_model(PKG)`` (and ``medanomaly
predict PKG ...`` / ``medanomaly detect PKG ...``) work on a package unchanged.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medanomaly.engine.run import RUN_READERS, RunInfo, software_version, write_run_info
from medanomaly.engine.verbs import PACKAGE_MANIFEST
from medanomaly.errors import InputError, utf8_path
from medanomaly.jsonio import read_folder_json, write_json
from medanomaly.registry import PACKAGE_LOADERS

__all__ = ["FORMAT", "sha256", "write_package", "verify_package", "load_package", "read_manifest"]

FORMAT = "medanomaly-onnx-package"
FORMAT_VERSION = 1
FP32, INT8 = "model.onnx", "model.int8.onnx"


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_package(folder: Path, info: RunInfo, run_dir: Path, record: dict[str, Any]) -> Path:
    """Write ``model.json`` and ``manifest.json`` into a folder that already holds the graphs.

    Args:
        folder: the (temporary) package folder with ``model.onnx`` (and ``model.int8.onnx``).
        info: the run's RunInfo (copied as ``model.json``).
        run_dir: the source run (its folder name is recorded, not its path).
        record: export results (fp32 match, int8 guard) added to the manifest.
    """
    from medanomaly.deploy.export import OPSET

    write_run_info(folder, info)
    int8 = record.get("int8") or {}
    files = {p.name: sha256(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != PACKAGE_MANIFEST}
    warnings = [int8["warning"]] if int8.get("warning") else []
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "task": info.task, "onnx_opset": OPSET,
        "source_run": Path(run_dir).resolve().name, "software_version": software_version(),
        "run_software_version": info.software_version,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "default_graph": FP32,
        "synthetic": info.synthetic, **record, "warnings": warnings, "sha256": files,
    }  # fmt: skip
    return write_json(folder / PACKAGE_MANIFEST, manifest)


def read_manifest(pkg: str | Path) -> dict[str, Any]:
    """The package's manifest (JSON only); a missing or broken one is one InputError."""
    pkg = Path(pkg)
    manifest = read_folder_json(pkg, PACKAGE_MANIFEST, "an exported package")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("sha256"), dict):
        raise InputError(f"manifest.json is not a {FORMAT} manifest", pkg)
    return manifest


def verify_package(pkg: str | Path) -> dict[str, Any]:
    """Check every file against the manifest's SHA-256; returns the manifest.

    Raises:
        InputError: naming the first file that is changed (tampered), missing or not listed.
    """
    pkg = Path(pkg)
    if not pkg.is_dir():
        raise InputError("package folder not found", pkg)
    manifest = read_manifest(pkg)
    listed: dict[str, str] = manifest["sha256"]
    for name, digest in sorted(listed.items()):
        path = pkg / name
        if Path(name).name != name or not path.is_file():
            raise InputError(f"package file missing: {name}", pkg)
        if sha256(path) != digest:
            raise InputError(f"checksum mismatch: {name} was changed after export (tampered or corrupt)", pkg)
    extra = sorted(p.name for p in pkg.iterdir() if p.name not in listed and p.name != PACKAGE_MANIFEST)
    if extra:
        raise InputError(f"file not in the manifest: {extra[0]}", pkg)
    return manifest


#: Environment variable picking a package's graph when the caller names none (``fp32`` or ``int8``).
PRECISION_ENV = "MEDANOMALY_PRECISION"


def load_package(pkg: str | Path, precision: str | None = None, threads: int | None = None) -> Any:
    """The package's model behind the engine contract, run by ONNX Runtime.

    Args:
        pkg: package folder written by ``medanomaly export``.
        precision: ``"fp32"`` or ``"int8"``; default ``MEDANOMALY_PRECISION`` or the manifest's
            default graph (fp32: the torch run's outputs within 1e-4).
        threads: ONNX Runtime intra-op threads (default ``MEDANOMALY_ORT_THREADS`` or ORT's choice).

    Raises:
        InputError: tampered / incomplete package, int8 asked of a package without it.
    """
    from medanomaly.deploy.onnx_model import onnx_model
    from medanomaly.engine.run import read_run_info

    pkg = Path(pkg)
    utf8_path(pkg, RUN_READERS, what="package folder")
    manifest = verify_package(pkg)
    source = "precision"
    if not precision and os.environ.get(PRECISION_ENV, "").strip():
        precision, source = os.environ[PRECISION_ENV].strip(), f"environment variable {PRECISION_ENV}"
    if precision not in (None, "", "fp32", "int8"):
        raise InputError(f"{source} must be fp32 or int8, got {precision[:40]!r}", pkg)
    precision = precision or None
    graph = manifest["default_graph"] if precision is None else (INT8 if precision == "int8" else FP32)
    if graph not in manifest["sha256"]:
        raise InputError(f"the package has no {graph} (export it with --int8)", pkg)
    info = read_run_info(pkg)
    if graph == INT8 and info.extra.get("int8_thresholds"):  # thresholds set on the int8 graph's own maps
        info = info.model_copy(update={"thresholds": {**info.thresholds, **info.extra["int8_thresholds"]}})
    model = onnx_model(pkg / graph, info, pkg, threads)
    model.manifest = manifest
    model.graph = graph
    return model


PACKAGE_LOADERS.register("onnx")(load_package)
