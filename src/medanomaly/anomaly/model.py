"""A trained anomaly run behind the engine contract (:class:`medanomaly.engine.TaskModel`).

``predict(volume)`` gives one anomaly score (``scores=(score,)``, ``class_names=("anomaly",)``),
the label ``anomaly`` or ``normal`` by the threshold learned on normal validation brains, the
voxel map (``anomaly_map``) on the input's grid and, for a 3D volume, the findings: the connected
regions of the map above the pixel threshold learned on the normal validation data, measured
(:func:`map_findings`; ``predict`` writes them to ``NAME.findings.json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import numpy as np

from medanomaly.anomaly.config import MAX_SIGMA, MAX_SIZE, MIN_SIZE, AnomalyDataConfig
from medanomaly.engine.contract import ModelBase, refuse_cine
from medanomaly.engine.run import RunInfo
from medanomaly.errors import InputError, about_file
from medanomaly.io.limits import check_least_size
from medanomaly.preprocess.checks import require_finite
from medanomaly.types import Finding, Prediction, Volume, quality_check_failed

__all__ = ["AnomalyModel", "run_info", "map_findings", "MIN_FINDING_ML", "MAX_FINDINGS"]

#: Smallest region of the thresholded map reported as a finding at predict (mL).
MIN_FINDING_ML = 0.1
#: At most this many findings (the largest) per volume.
MAX_FINDINGS = 10


def map_findings(amap: Volume, binary: np.ndarray, image: Volume, min_ml: float = MIN_FINDING_ML,
                 top: int = MAX_FINDINGS) -> tuple[Finding, ...]:  # fmt: skip
    """The ``top`` largest connected regions (26-connectivity) of ``binary`` (the map above the pixel
    threshold, on ``image``'s grid) of at least ``min_ml`` mL, measured with
    :func:`medanomaly.quantify.measure.measure_lesions` on ``image``; each finding's ``score`` is the
    map's peak inside it and its label ``anomaly``."""
    import dataclasses

    from medanomaly.quantify.measure import measure_lesions

    if not binary.any():
        return ()
    min_voxels = max(1, int(np.ceil(min_ml * 1000.0 / image.voxel_volume_mm3)))
    values = np.asarray(amap.array)
    found = measure_lesions(amap.with_array(binary.astype(np.uint8)), image, label="anomaly", min_voxels=min_voxels)
    out = []
    for f in found[:top]:
        inside = np.asarray(f.mask.array) > 0 if f.mask is not None else binary
        out.append(dataclasses.replace(f, score=float(values[inside].max())))
    return tuple(out)


def _domain(config: Any, fitted: Any) -> dict[str, Any]:
    """``extra.domain`` of ``model.json``: what the model was trained on, exclusions included."""
    d = config.data
    if d.domain == "folder2d":
        from medanomaly.anomaly.images2d import image_set, intensity_range

        images = image_set(d.folder, d.normal_label)
        return {"name": "folder2d", "region": "image", "source": images.layout, "folder": str(d.folder),
                "intensity": d.intensity, "intensity_range": intensity_range(d),
                "n_train": len(images.train), "n_val": len(images.val), "grey_from_rgb": images.grey_from_rgb,
                "excluded_not_normal": images.excluded, "skipped_files": list(images.skipped),
                "grey": "RGB converted to grey (ITU-R BT.601 luma)"}  # fmt: skip
    if d.domain != "chest_ct":
        return {"name": "brain_mr", "region": "brain_mask", "train": list(d.train), "val": list(d.val)}
    from medanomaly.preprocess.intensity import WINDOWS

    return {"name": "chest_ct", "region": "lung_mask", "window": d.window, "window_hu": list(WINDOWS[d.window]),
            "train": list(d.train), "val": list(d.val), "exclude_margin_mm": d.exclude_margin_mm,
            "training_exclusion": fitted.log.get("training_exclusion", [])}  # fmt: skip


def run_info(config: Any, fitted: Any, weights: str) -> RunInfo:
    """``model.json`` of a fitted anomaly run."""
    modality = {"chest_ct": "CT", "folder2d": "any"}.get(config.data.domain, "MR")
    dims = 2 if config.data.domain == "folder2d" else 3
    return RunInfo(
        task="anomaly", class_names=("anomaly",), weights=(weights,),
        thresholds={"decision": fitted.image_threshold, "pixel": fitted.pixel_threshold, "sigma": fitted.sigma},
        input={"spatial_dims": dims, "channels": 1, "modality": modality, "image_size": [config.data.size] * 2},
        extra={"method": config.method.model_dump(mode="json"), "size": config.data.size,
               "domain": _domain(config, fitted)},
    )  # fmt: skip


#: The data domains an anomaly run records (``AnomalyDataConfig.domain``).
DOMAINS: tuple[str, ...] = get_args(AnomalyDataConfig.model_fields["domain"].annotation)


def check_recorded_settings(info: RunInfo, path: Path) -> None:
    """The settings ``predict`` reads from a run's (or package's) model.json: the common grid size (pixels, the
    config's bounds MIN_SIZE..MAX_SIZE), the map smoothing sigma (pixels, >= 0), the data domain and the decision and pixel thresholds.

    Raises:
        InputError: naming ``path``, for a value no training writes (a hand-edited or foreign file).
    """
    size = info.extra.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise InputError(f"the recorded grid size must be a whole number of pixels in {MIN_SIZE}..{MAX_SIZE}, "
                         f"got {size!r}", path)  # fmt: skip
    sigma = info.thresholds.get("sigma")  # RunInfo holds finite numbers only
    if sigma is None or not 0 <= sigma <= MAX_SIGMA:  # 1e308 was an OverflowError in SciPy's Gaussian, 1e30 a ValueError
        raise InputError(f"the recorded map smoothing (sigma) must be 0..{MAX_SIGMA:g}, got {sigma!r}", path)
    spec = info.extra.get("method")
    if not (isinstance(spec, dict) and isinstance(spec.get("name"), str) and isinstance(spec.get("params", {}), dict)):
        raise InputError("the recorded method must be {name, params} (a name and a mapping of its parameters)", path)
    domain = info.extra.get("domain")
    if domain is not None and (not isinstance(domain, dict) or domain.get("name") not in DOMAINS):
        name = domain.get("name") if isinstance(domain, dict) else domain
        raise InputError(f"unknown recorded data domain {name!r} (known: {', '.join(DOMAINS)})", path)
    if domain is not None:
        _check_domain_values(domain, path)
    missing = [k for k in ("decision", "pixel") if info.thresholds.get(k) is None]
    if missing:
        raise InputError(f"model.json has no {' or '.join(missing)} threshold", path)


def _check_domain_values(domain: dict[str, Any], path: Path) -> None:
    """The values a domain's prediction reads: a 2D folder's ``intensity_range`` (None or a finite ``[low, high]``;
    ``[0]``, ``None`` or text were tracebacks, NaN or ``[0, 0]`` a NaN map after SciPy warnings) and a chest CT's
    ``window`` (a preset name)."""
    from medanomaly.config import is_finite_range
    from medanomaly.preprocess.intensity import WINDOWS

    low_high = domain.get("intensity_range")
    if domain.get("name") == "folder2d" and low_high is not None and not is_finite_range(low_high):
        raise InputError(f"the recorded intensity_range must be finite [low, high], got {low_high!r}", path)
    if domain.get("name") == "chest_ct" and domain.get("window") not in WINDOWS:
        raise InputError(f"unknown recorded CT window {domain.get('window')!r} (known: {', '.join(WINDOWS)})", path)


class AnomalyModel(ModelBase):
    """An anomaly method fitted on normal brains, loaded from a run folder."""

    #: Bytes per input voxel, a floor: measured 12 (2D) to 52-135 (3D brains) by bench/bench_predict_memory.py.
    PREDICT_BYTES_PER_VOXEL = 10.0

    def __init__(self, info: RunInfo, run_dir: Path, method: Any) -> None:
        super().__init__(info, run_dir)
        self.method = method

    def check_input(self, volume: Volume, path: Any = None) -> None:
        """Refuse a 2D image, a multi-component image or another modality than training, in one line
        (a chest CT model also refuses values that are not CT in HU, e.g. an unlabelled MRI)."""
        if self.info.input.get("spatial_dims") == 2:  # 2D images (grey; colour is converted)
            refuse_cine(volume, path)
            if not volume.is_2d:
                raise InputError(f"the anomaly model was trained on 2D images, got a 3D volume ({volume.shape[0]} slices)",
                                 path)  # fmt: skip
            check_least_size(volume, path)
            with about_file(path):  # NaN gave a NaN map, blamed on the weights; so did values float32 cannot hold
                require_finite(volume, "the model")
            self.check_memory(volume, path)
            return
        want = str(self.info.input.get("modality", "MR") or "MR")
        trained = "chest CT" if want == "CT" else "brain MRI"
        if volume.is_2d:
            raise InputError(f"the anomaly model was trained on 3D {trained}, got a 2D image", path)
        if volume.n_components != 1:
            raise InputError("the anomaly model takes scalar images, got several components", path)
        got = str(volume.meta.get("modality", "") or "")
        if got and got not in ("OT", want):
            raise InputError(f"the anomaly model was trained on {want}, got modality {got}", path)
        if want == "CT":
            from medanomaly.preprocess.checks import looks_like_hu

            if not looks_like_hu(volume):
                raise InputError("the anomaly model was trained on chest CT in HU, but the values are not HU "
                                 "(no air near -1000 HU)", path)  # fmt: skip
        super().check_input(volume, path)

    def _predict(self, volume: Volume) -> Prediction:
        from medanomaly.anomaly.pipeline import predict_volume

        amap, score, _, _ = predict_volume(self.method, volume, int(self.info.extra["size"]),
                                           float(self.info.thresholds["sigma"]), self.info.extra.get("domain"))  # fmt: skip
        label = "anomaly" if score > float(self.info.thresholds["decision"]) else "normal"
        flags = self.flags() + tuple(getattr(self.method, "last_flags", ()))  # e.g. a failed atlas registration
        flags += self._window_flags(volume)
        findings: tuple[Finding, ...] = ()
        if not volume.is_2d:  # the call as regions: the map above the validation pixel threshold
            values = np.asarray(amap.array)  # 0 outside the region (brain, lungs)
            findings = map_findings(amap, (values > float(self.info.thresholds["pixel"])) & (values != 0), volume)
        failed = quality_check_failed(flags)  # e.g. no atlas brain could be aligned
        return Prediction(scores=(score,), class_names=("anomaly",), label=label, abstained=failed, anomaly_map=amap,
                          findings=findings, flags=flags)  # fmt: skip

    def _window_flags(self, volume: Volume) -> tuple[str, ...]:
        """A 2D image far outside the training grey window is flagged (:func:`images2d.window_flags`)."""
        domain = self.info.extra.get("domain") or {}
        if domain.get("name") != "folder2d":
            return ()
        from medanomaly.anomaly.images2d import window_flags
        from medanomaly.data.image_folders import to_grey

        return window_flags(to_grey(volume.array)[0], domain.get("intensity_range"))

    def network(self) -> Any:
        """The torch module of the method (``None`` for the normative baseline, which has none)."""
        return self.method.network()

    def explainable(self) -> Any:
        """The anomaly map is the explanation: the method's network (if any) and its preprocessing."""
        from medanomaly.explain.adapters import Explainable

        return Explainable(model=self.network(), preprocess=lambda v: v, class_names=self.class_names,
                           kind="anomaly", synthetic=self.synthetic, runner=self)  # fmt: skip
