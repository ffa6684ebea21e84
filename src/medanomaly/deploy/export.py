"""Export a finished run of any task to a self-contained ONNX package.

:func:`export_run` loads the run through the engine contract (``load_model(run).network()``),
traces the network into ONNX (opset :data:`OPSET`, the legacy TorchScript exporter with a dynamic
batch axis: the dynamo exporter needs ``onnxscript``, which this install does not have), checks
that ONNX Runtime gives the torch outputs on the run's validation data (max abs probability or
heatmap difference, refused above :data:`MATCH_LIMIT`), optionally adds an int8 graph behind the
accuracy guard (:mod:`medanomaly.deploy.quantise`), and writes the package
(:mod:`medanomaly.deploy.package`) atomically.

What goes into the graph, per task:

* classification: the members, their (weighted) softmax average and the temperature: input
  ``input`` (B, C, *size), output ``log_probs`` (B, K) (softmax = the run's probabilities);
* lung_nodule: the fully convolutional network, input ``input`` (B, 1, z, y, x) with dynamic
  spatial axes, output ``logits``; the sliding window and post-processing stay in NumPy;
* fusion: the raw network with the presence mask as a second input ``present`` (B, M) bool;
* detection (generic 2D heatmap detector + lesion classifier): :mod:`medanomaly.deploy.export_detection`;
* anomaly (normative, autoencoder, padim): :mod:`medanomaly.deploy.export_anomaly`.

The last two have their own graphs and checks (:data:`TASK_EXPORTERS`); int8 for detection
quantises the heatmap network behind a validation-CPM guard, int8 for anomaly runs the method's
graph behind a synthetic-lesion AUROC guard, with its own thresholds (``int8_thresholds``, kept in
``model.json``'s ``extra``: the package loader uses them with the int8 graph).

Example:
    >>> from medanomaly.deploy.export import export_run         # doctest: +SKIP
    >>> export_run("runs/breast", "pkg/breast", int8=True)        # doctest: +SKIP
    PosixPath('pkg/breast')
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.engine.run import RUN_READERS
from medanomaly.errors import InputError, named_os_error, utf8_path
from medanomaly.io.staged import disk_full

__all__ = ["OPSET", "MATCH_LIMIT", "MAX_CALIBRATION", "GraphSpec", "graph_spec", "export_graph", "export_run", "torch_outputs",
           "onnx_outputs"]  # fmt: skip

OPSET = 17
#: Largest accepted |ONNX - torch| (probability or heatmap value) on validation before refusing.
MATCH_LIMIT = 1e-4
#: Most validation items ``--calibration`` may ask for (the lung windows are also held to the voxel-memory limit).
MAX_CALIBRATION = 10_000
EXPORTABLE = ("classification", "lung_nodule", "fusion", "detection", "anomaly")
#: Tasks exported by a module of their own: ``graphs(model)``, ``package_info(model)``, ``check(...)``.
TASK_EXPORTERS = {"detection": "medanomaly.deploy.export_detection", "anomaly": "medanomaly.deploy.export_anomaly"}


@dataclass
class GraphSpec:
    """What to trace: the module, example inputs, names and dynamic axes."""

    module: Any
    example: tuple[Any, ...]
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)


def graph_spec(model: Any) -> GraphSpec:
    """The :class:`GraphSpec` of a loaded run (see the module docstring)."""
    import torch

    info = model.info
    batch = {0: "batch"}
    if info.task == "classification":
        shape = (1, int(info.input["channels"]), *info.input["image_size"])
        return GraphSpec(classifier_graph(model.classifier), (torch.zeros(shape),), ["input"], ["log_probs"],
                         {"input": batch, "log_probs": batch})  # fmt: skip
    if info.task == "lung_nodule":
        roi = tuple(int(r) for r in info.extra["detector"]["roi_size"])
        axes = {0: "batch", 2: "z", 3: "y", 4: "x"}
        return GraphSpec(model.network().eval(), (torch.zeros((1, 1, *roi)),), ["input"], ["logits"],
                         {"input": axes, "logits": axes})  # fmt: skip
    if info.task == "fusion":
        m = len(info.input["modalities"])
        x = torch.zeros((1, m, *info.input["image_size"]))
        return GraphSpec(model.net.eval(), (x, torch.ones((1, m), dtype=torch.bool)), ["input", "present"],
                         ["logits"], {"input": batch, "present": batch, "logits": batch})  # fmt: skip
    raise InputError(f"export does not know task {info.task!r} (exportable: {', '.join(EXPORTABLE)})", model.run_dir)


def classifier_graph(clf: Any) -> Any:
    """The whole calibrated classifier as one torch module: each member's softmax (averaged over
    the test-time flips when the run uses TTA), the weighted member average, then the temperature;
    it returns calibrated log-probabilities (softmax = ``Classifier.predict_proba``).

    Raises:
        InputError: a ``vote`` ensemble (an arg-max count, not exported).
    """
    import torch
    from torch import nn

    from medanomaly.train.tta import default_flips

    if clf.method != "average":
        raise InputError(f"export supports averaged ensembles only, this run combines by {clf.method!r}")
    flips = default_flips(len(clf.image_size)) if clf.tta else ((),)
    w = np.ones(len(clf.models)) if clf.weights is None else np.asarray(clf.weights, float)

    class CalibratedClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.members = nn.ModuleList([m.eval() for m in clf.models])
            self.register_buffer("w", torch.as_tensor(w / w.sum(), dtype=torch.float32))
            self.temperature = float(clf.temperature)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            probs = 0.0
            for wi, member in zip(self.w, self.members, strict=True):
                p = sum(member(torch.flip(x, [2 + a for a in axes]) if axes else x).softmax(1) for axes in flips)
                probs = probs + wi * p / len(flips)
            return torch.log(probs.clamp_min(1e-12)) / self.temperature

    return CalibratedClassifier().eval()


def export_graph(spec: GraphSpec, path: Path) -> Path:
    """Trace ``spec`` into an ONNX file (opset :data:`OPSET`) and check it with ``onnx.checker``."""
    import onnx
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation / tracer warnings
        torch.onnx.export(spec.module, spec.example, str(path), input_names=spec.input_names,
                          output_names=spec.output_names, dynamic_axes=spec.dynamic_axes, opset_version=OPSET,
                          do_constant_folding=True, dynamo=False)  # fmt: skip
    onnx.checker.check_model(str(path))
    return path


def torch_outputs(model: Any, inputs: np.ndarray, present: np.ndarray | None = None, batch: int = 16) -> np.ndarray:
    """What the torch run reports for network inputs: class probabilities, or sigmoid heatmaps."""
    import torch

    spec_module = graph_spec(model).module
    outs = []
    with torch.no_grad():
        for i in range(0, len(inputs), batch):
            x = torch.from_numpy(np.ascontiguousarray(inputs[i : i + batch], np.float32))
            args = (x,) if present is None else (x, torch.from_numpy(np.asarray(present[i : i + batch], bool)))
            outs.append(spec_module(*args).float().numpy())
    return _report_space(model.info.task, np.concatenate(outs))


def onnx_outputs(sess: Any, task: str, inputs: np.ndarray, present: np.ndarray | None = None,
                 batch: int = 16) -> np.ndarray:  # fmt: skip
    """The same as :func:`torch_outputs` through an ONNX Runtime session."""
    from medanomaly.deploy.onnx_model import run_batches

    extra = {} if present is None else {"present": np.asarray(present, bool)}
    return _report_space(task, run_batches(sess, inputs, batch, **extra))


def _report_space(task: str, raw: np.ndarray) -> np.ndarray:
    from medanomaly.deploy.onnx_model import softmax

    if task == "lung_nodule":
        return 1.0 / (1.0 + np.exp(-raw.astype(np.float64)))
    return softmax(raw)


def match_inputs(val: Any, task: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Validation inputs of the fp32 match check; fusion also hides each modality in turn."""
    if task != "fusion" or val.present is None:
        return val.inputs, val.present
    m = val.present.shape[1]
    presents = [val.present]
    for j in range(m if m > 1 else 0):
        p = val.present.copy()
        p[:, j] = False
        p[~p.any(1), (j + 1) % m] = True
        presents.append(p)
    return np.concatenate([val.inputs] * len(presents)), np.concatenate(presents)


def check_match(model: Any, onnx_path: Path, val: Any) -> float:
    """Max |ONNX - torch| on validation (probabilities / heatmap values); refused above the limit."""
    from medanomaly.deploy.onnx_model import session

    x, present = match_inputs(val, model.info.task)
    diff = float(np.max(np.abs(torch_outputs(model, x, present) - onnx_outputs(session(onnx_path), model.info.task,
                                                                             x, present))))  # fmt: skip
    if not diff <= MATCH_LIMIT:
        raise InputError(f"the ONNX graph differs from torch by {diff:.2e} on validation (limit {MATCH_LIMIT:g})",
                         model.run_dir)  # fmt: skip
    return diff


def export_run(run_dir: str | Path, out: str | Path, int8: bool = False, calibration: int = 64,
               force: bool = False, overwrite: bool = False) -> Path:  # fmt: skip
    """Export a finished run to the package folder ``out`` (see the module docstring).

    Args:
        run_dir: a finished run of an exportable task.
        out: package folder to create (refused when it exists, unless ``overwrite``).
        int8: also write ``model.int8.onnx`` (static QDQ, per-channel weights) behind the guard.
        calibration: validation items used to calibrate int8 (and to check the fp32 match).
        force: keep an int8 graph the guard refuses, with a warning in the manifest.
        overwrite: replace an existing package folder.

    Raises:
        InputError: unfinished run, unknown task, a graph that does not match torch, an int8
            graph the guard refuses (without ``force``), or ``out`` exists.
    """
    from medanomaly.deploy.package import write_package
    from medanomaly.deploy.validation import validation_data
    from medanomaly.engine.outputs import prepare_output_dir
    from medanomaly.engine import load_model

    run_dir, out = Path(run_dir), Path(out)
    utf8_path(out, RUN_READERS, what="package folder")  # torch's ONNX exporter: a TypeError traceback
    if not 1 <= calibration <= MAX_CALIBRATION:
        raise InputError(f"--calibration must be 1..{MAX_CALIBRATION:,} validation items, got {calibration:,}", run_dir)
    if out.exists() and not overwrite and any(out.iterdir() if out.is_dir() else [out]):
        raise InputError("already exists; choose another --out", out)
    model = load_model(run_dir)
    exporter = _task_exporter(model.info.task)
    if exporter is not None and int8 and not hasattr(exporter, "quantise"):
        raise InputError(f"--int8 is not available for the {model.info.task} task (fp32 export only)", run_dir)
    graphs = exporter.graphs(model) if exporter is not None else [("model.onnx", graph_spec(model))]
    prepare_output_dir(out.parent)  # an impossible place is one line naming it, not the temporary folder
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, spec in graphs:
            export_graph(spec, tmp / name)
        info = model.info
        if exporter is not None:
            info = exporter.package_info(model)
            record = exporter.check(model, tmp, info, calibration)
        else:
            val = validation_data(run_dir, model.info.task, calibration)
            record = {"fp32_max_abs_diff": check_match(model, tmp / "model.onnx", val),
                      "validation_items": int(len(val.inputs))}  # fmt: skip
        if int8 and exporter is not None:
            record["int8"] = exporter.quantise(model, tmp, info, calibration, force)
            if record["int8"].get("int8_thresholds"):
                info = info.model_copy(update={"extra": {**info.extra,
                                                         "int8_thresholds": record["int8"]["int8_thresholds"]}})
        elif int8:
            from medanomaly.deploy.quantise import quantise_run

            record["int8"] = quantise_run(model, tmp / "model.onnx", tmp / "model.int8.onnx", val, force)
        write_package(tmp, info, run_dir, record)
        if disk_full(tmp):  # a writer may have stopped short without an error (io.staged)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out))
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    except OSError as exc:  # ONNX's writer names no file when the disk fills: name the package
        if exc.filename is not None:
            raise
        raise named_os_error(exc, out) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _task_exporter(task: str) -> Any:
    """The exporter module of a task in :data:`TASK_EXPORTERS` (None for the built-in tasks)."""
    import importlib

    name = TASK_EXPORTERS.get(task)
    return importlib.import_module(name) if name else None
