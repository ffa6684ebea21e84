"""int8 post-training quantisation behind an accuracy guard, on the run's validation data only.

:func:`quantise_graph` is ONNX Runtime's static quantisation in QDQ format with per-channel
int8 weights (7-bit range) and uint8 activations, calibrated (MinMax) on validation inputs: never
test data. Why U8S8 with ``reduce_range``: on x86 CPUs without VNNI (AVX2 only, like the 2-core
development machine of the earlier sessions) ORT fused only 9 of ResNet-18's 20 QDQ convolutions into ``QLinearConv``
with int8 (S8S8) activations and ran the other 11 as dequantise + float Conv (1.6x eager torch);
with uint8 activations all 20 convolutions and the 8 residual adds run as integer kernels
(2.5x to 4.6x eager torch, measured: docs/deploy.md); on a CPU with AVX-512 VNNI this setting is
still the fastest of the variants tried (4.3x eager torch there). The
U8S8 kernels there multiply in 16-bit pairs, which can saturate with full 8-bit weights: ORT's
documentation recommends ``reduce_range`` (7-bit weights) for such CPUs.
:func:`quantise_run` then measures, on the same validation data, the metric the run is judged by
with the fp32 graph and with the int8 graph, and refuses the int8 graph (one line saying by how
much) when it costs more than:

* classification / fusion: ROC AUC down by more than :data:`MAX_AUC_DROP` (0.005) or accuracy
  down by more than :data:`MAX_ACC_DROP` (0.01);
* lung_nodule: CPM on simulated validation scans (training lung, separate seed) down by more than
  :data:`MAX_CPM_DROP` (0.02), or the rank of any real lesion (lung1, lung2...) changed;
* anomaly (normative, autoencoder, padim): pixel AUROC (and image AUROC where an image is defined)
  on the normal validation slices with SYNTHETIC lesions down by more than
  :data:`MAX_MAP_AUROC_DROP` (0.005) (:mod:`medanomaly.deploy.anomaly_guard`).

``force=True`` keeps a refused graph; the manifest then carries the warning.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.errors import InputError

__all__ = ["MAX_AUC_DROP", "MAX_ACC_DROP", "MAX_CPM_DROP", "MAX_MAP_AUROC_DROP", "QDQ_RECORD", "quantise_graph", "quantise_run",
           "class_metrics", "cpm_problem", "guard_verdict"]  # fmt: skip

MAX_AUC_DROP = 0.005
MAX_ACC_DROP = 0.01
MAX_CPM_DROP = 0.02
#: Largest accepted drop of an anomaly map's pixel (or image) AUROC on synthetic-lesion validation slices.
MAX_MAP_AUROC_DROP = 0.005
#: How every int8 graph here is made (recorded in the manifest).
QDQ_RECORD = {"calibration_split": "validation", "format": "QDQ", "weights": "int8 per-channel (7-bit range)",
              "activations": "uint8 (MinMax)"}  # fmt: skip


def quantise_graph(fp32: Path, int8: Path, feeds: list[dict[str, np.ndarray]],
                   nodes_to_exclude: Sequence[str] = ()) -> Path:  # fmt: skip
    """Static QDQ quantisation of ``fp32`` into ``int8`` (uint8 activations, per-channel int8 weights with
    ``reduce_range``; see the module docstring), calibrated on ``feeds``; the nodes named in
    ``nodes_to_exclude`` stay float (e.g. arithmetic on small differences that 8 bits would erase)."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)  # fmt: skip
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    pre = int8.with_name("pre.onnx")
    try:
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True,
                        calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=list(nodes_to_exclude))  # fmt: skip
    finally:
        pre.unlink(missing_ok=True)
    return int8


def class_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """ROC AUC (binary: class 1; multi-class: macro one-vs-rest; NaN with one class) and accuracy."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels).astype(int)
    acc = float(np.mean(probs.argmax(1) == labels))
    if len(np.unique(labels)) < 2:
        return {"auc": float("nan"), "accuracy": acc}
    if probs.shape[1] == 2:
        auc = roc_auc_score(labels, probs[:, 1])
    else:
        auc = roc_auc_score(labels, probs, multi_class="ovr", average="macro", labels=list(range(probs.shape[1])))
    return {"auc": float(auc), "accuracy": acc}


def _class_guard(task: str, fp32: Path, int8: Path, val: Any) -> tuple[dict[str, Any], str | None]:
    from medanomaly.deploy.export import onnx_outputs
    from medanomaly.deploy.onnx_model import session

    ref = class_metrics(val.labels, onnx_outputs(session(fp32), task, val.inputs, val.present))
    got = class_metrics(val.labels, onnx_outputs(session(int8), task, val.inputs, val.present))
    drop_auc, drop_acc = ref["auc"] - got["auc"], ref["accuracy"] - got["accuracy"]
    result = {"metric": "auc+accuracy", "fp32": ref, "int8": got,
              "auc_drop": None if np.isnan(drop_auc) else round(drop_auc, 6), "accuracy_drop": round(drop_acc, 6)}
    problems = []
    if drop_auc > MAX_AUC_DROP:
        problems.append(f"validation AUC drops by {drop_auc:.4f} ({ref['auc']:.4f} -> {got['auc']:.4f}, "
                        f"limit {MAX_AUC_DROP})")  # fmt: skip
    if drop_acc > MAX_ACC_DROP:
        problems.append(f"validation accuracy drops by {drop_acc:.4f} ({ref['accuracy']:.4f} -> "
                        f"{got['accuracy']:.4f}, limit {MAX_ACC_DROP})")  # fmt: skip
    return result, "; ".join(problems) or None


def detection_scores(model: Any, val: Any) -> dict[str, Any]:
    """CPM on simulated validation scans and the rank of each real lesion, for one detector."""
    from medanomaly.config import load_config
    from medanomaly.deploy.validation import VALIDATION_SEED_OFFSET
    from medanomaly.detect.evaluation import evaluate_heldout, evaluate_real

    cfg = load_config(Path(model.source_run) / "config.yaml")
    sim = cfg.simulation
    held = evaluate_heldout(model.detector, val.sources, sim.train_side, 1, sim.nodules_per_train_scan,
                            sim.diameter_range_mm, cfg.seed + VALIDATION_SEED_OFFSET, cfg.infer.hit_min_radius_mm,
                            progress=False)  # fmt: skip
    ranks = {s.name: evaluate_real(model.detector, s).rank for s in val.sources if s.lesion is not None}
    return {"cpm": float(held["froc"].cpm), "real_lesion_ranks": ranks}


def _detection_guard(model: Any, fp32: Path, int8: Path, val: Any) -> tuple[dict[str, Any], str | None]:
    from medanomaly.deploy.onnx_model import onnx_model

    scores = {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        m = onnx_model(path, model.info, path.parent)
        m.source_run = model.run_dir
        scores[name] = detection_scores(m, val)
    drop = scores["fp32"]["cpm"] - scores["int8"]["cpm"]
    result = {"metric": "cpm+real_lesion_ranks", **scores, "cpm_drop": round(drop, 6),
              "validation": "simulated nodules in the training lung, separate seed (synthetic)"}  # fmt: skip
    problem = cpm_problem(scores["fp32"]["cpm"], scores["int8"]["cpm"])
    problems = [problem] if problem else []
    moved = [k for k, r in scores["fp32"]["real_lesion_ranks"].items() if scores["int8"]["real_lesion_ranks"].get(k) != r]
    if moved:
        problems.append("real lesion rank changes: " + ", ".join(
            f"{k} {scores['fp32']['real_lesion_ranks'][k]} -> {scores['int8']['real_lesion_ranks'][k]}" for k in moved))
    return result, "; ".join(problems) or None


def quantise_run(model: Any, fp32: Path, int8: Path, val: Any, force: bool = False) -> dict[str, Any]:
    """Quantise an exported graph on validation data and apply the guard (see the module docstring).

    Returns:
        The guard record for the manifest (``passed``, metrics, drops, ``warning`` when forced).

    Raises:
        InputError: the guard refuses and ``force`` is False (one line saying by how much).
    """
    task = model.info.task
    n = len(val.inputs)
    feeds = []
    for i in range(n):
        feed = {"input": val.inputs[i : i + 1].astype(np.float32)}
        if val.present is not None:
            feed["present"] = val.present[i : i + 1]
        feeds.append(feed)
    quantise_graph(fp32, int8, feeds)
    if task == "lung_nodule":
        result, problem = _detection_guard(model, fp32, int8, val)
    else:
        result, problem = _class_guard(task, fp32, int8, val)
    result.update({**QDQ_RECORD, "calibration_items": n})
    return guard_verdict(result, problem, force, model.run_dir)


def cpm_problem(fp32_cpm: float, int8_cpm: float) -> str | None:
    """The guard's complaint when int8 loses more than :data:`MAX_CPM_DROP` of the validation CPM."""
    drop = fp32_cpm - int8_cpm
    if drop <= MAX_CPM_DROP:
        return None
    return f"validation CPM drops by {drop:.4f} ({fp32_cpm:.4f} -> {int8_cpm:.4f}, limit {MAX_CPM_DROP})"


def guard_verdict(result: dict[str, Any], problem: str | None, force: bool, run_dir: Path) -> dict[str, Any]:
    """The guard record with ``passed``; a refusal raises unless ``force`` (then a ``warning``).

    Raises:
        InputError: the guard refuses and ``force`` is False (one line saying by how much).
    """
    result["passed"] = problem is None
    if problem is None:
        return result
    if not force:
        raise InputError(f"int8 refused by the accuracy guard: {problem} (--force keeps it)", run_dir)
    result["warning"] = f"int8 kept with --force although the guard refused it: {problem}"
    return result
