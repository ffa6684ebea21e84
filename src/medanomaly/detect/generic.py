"""The generic heatmap detector: 2D or 3D, any modality, search region by plug-in name.

Same design as the lung-nodule detector (:mod:`medanomaly.detect.detector`): a small fully
convolutional U-Net (MONAI ``DynUNet``) is trained as a pixel-wise lesion segmenter on patches
(lesion / hard negative / random, :class:`medanomaly.detect.patches.PatchSampler`) with Dice +
BCE through the one training loop (:func:`medanomaly.train.engine.train`); at inference it runs
with MONAI sliding windows over the bounding box of the search region
(:mod:`medanomaly.detect.regions`), and the connected components of its thresholded probability
map are the findings (:func:`medanomaly.detect.infer.findings_from_heatmap`: box, mask on the
source grid, score = peak probability, measurements in mm).

2D images are one-slice volumes ``(1, y, x)`` everywhere (grid, patches, heatmap, findings), so
the 2D and 3D code paths are one; the 2D network (:class:`OneSliceNet`) is a real 2D U-Net that
takes ``(B, 1, 1, y, x)`` or ``(B, 1, y, x)``. The input preprocessing is a recorded pipeline
(:meth:`HeatmapDetector.preprocessing_steps`: cast, resample to the grid, window or percentile to [0, 1]),
replayed identically in training, inference, export and the service.

Example:
    >>> det = HeatmapDetector(spatial_dims=2, model_params={"filters": [4, 8, 16]})
    >>> [s["name"] for s in det.preprocessing_steps()]
    ['cast', 'resample', 'window']
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.detect.detection_config import GridConfig, InferConfig, TrainConfig, check_saved
from medanomaly.detect.infer import findings_from_heatmap, mirrored, run_network, search_box, split_depth_or_none
from medanomaly.detect.mining import mining_round
from medanomaly.detect.patches import GridScan, PatchSampler
from medanomaly.engine.contract import finite_output
from medanomaly.errors import ConfigError, InputError, unfit_file
from medanomaly.jsonio import read_json
from medanomaly.train.distributed import resolve_device
from medanomaly.train.precision import checked_precision, network_in_precision, resolve_precision
from medanomaly.train.thread_probe import ThreadProbe, thread_candidates
from medanomaly.types import Finding, Volume

__all__ = ["HeatmapDetector", "OneSliceNet", "build_network", "check_network", "constructor_params", "fit_heatmap_run", "HeatmapFit", "HEATMAP_LOSSES", "heatmap_loss", "heatmap_unet", "one_cycle", "params_from_sections",
           "thread_probe", "torch_threads",
           "DETECTOR_JSON", "DETECTOR_WEIGHTS"]

DETECTOR_WEIGHTS = "detector.safetensors"
DETECTOR_JSON = "heatmap_detector.json"


def heatmap_unet(spatial_dims: int = 2, filters: Any = (8, 16, 32), dropout: float = 0.0) -> Any:
    """A 3-level DynUNet (isotropic 3x3 kernels, two 2x down-samplings), 1 channel in, 1 logit map out;
    2D networks are wrapped in :class:`OneSliceNet`. Input sizes must be multiples of 4 in-plane."""
    from monai.networks.nets import DynUNet

    if len(filters) != 3:
        raise InputError(f"heatmap_unet needs 3 filter sizes, got {list(filters)}")
    net = DynUNet(spatial_dims=spatial_dims, in_channels=1, out_channels=1, kernel_size=[3, 3, 3],
                  strides=[1, 2, 2], upsample_kernel_size=[2, 2], filters=list(filters), dropout=dropout or None,
                  norm_name="batch")  # fmt: skip
    return OneSliceNet(net) if spatial_dims == 2 else net


def _one_slice_class() -> type:
    import torch

    class _OneSliceNet(torch.nn.Module):
        """A 2D network behind a one-slice 3D interface: (B, C, 1, y, x) -> (B, 1, 1, y, x);
        a 4D input (B, C, y, x) passes straight through."""

        def __init__(self, net: Any) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: Any) -> Any:
            if x.dim() == 5:
                return self.net(x[:, :, 0])[:, :, None]
            return self.net(x)

    return _OneSliceNet


def OneSliceNet(net: Any) -> Any:  # noqa: N802 - a class factory (torch imported lazily)
    """Wrap a 2D network so it takes one-slice volumes (see the module docstring)."""
    return _one_slice_class()(net)


def build_network(name: str, params: dict[str, Any], spatial_dims: int = 3) -> Any:
    """A detector network by name: ``heatmap_unet`` (2D or 3D), ``nodule_unet`` (the lung recipe's
    anisotropic 3D DynUNet) or any registered model; each counted before it is allocated and checked for parameters it cannot
    build from (:mod:`medanomaly.models.limits`)."""
    from medanomaly.registry import MODELS

    if name == "heatmap_unet":
        return MODELS.build(name, heatmap_unet, {**params, "spatial_dims": spatial_dims})
    if name == "nodule_unet":
        from medanomaly.models.nodule_unet import nodule_unet

        return MODELS.build(name, nodule_unet, params)
    return MODELS.create(name, **params)


def check_network(name: str, params: dict[str, Any], spatial_dims: int = 3,
                  windows: Mapping[str, Sequence[int]] | None = None) -> None:
    """:func:`build_network`'s checks (parameters it cannot build from, the size limit) on the ``meta``
    device, allocating nothing: for a task to call before its data work. Each of ``windows`` (config key ->
    z, y, x voxels: the training patch, the inference window) is run through the network there too: it must
    take it (a network deeper than the window is refused) and return a heatmap of its size, (B, 1, z, y, x)
    (a classifier named as the detector returns class scores)."""
    import torch

    from medanomaly.models.limits import meta_output_shape, shape_text
    from medanomaly.registry import MODELS

    task = None if name in ("heatmap_unet", "nodule_unet") else getattr(MODELS.get(name), "task", None)
    if task is not None:
        raise ConfigError(f"model {name!r} is a {task} network, not a heatmap detector (heatmap_unet, nodule_unet)")
    with torch.device("meta"):
        net = build_network(name, params, spatial_dims)
    for key, window in (windows or {}).items():
        shape = (2, 1, *(int(v) for v in window))
        out = meta_output_shape(net, name, shape, key)
        if out is not None and out != shape:
            raise ConfigError(f"model {name!r} is not a heatmap detector: on a {shape_text(shape)} window ({key}) "
                              f"it returns shape ({shape_text(out)}), not one heatmap of the window's size")


def constructor_params(obj: Any) -> dict[str, Any]:
    """An object's constructor parameters and their current values (as sklearn's ``get_params``)."""
    import inspect

    return {k: getattr(obj, k) for k in inspect.signature(type(obj)).parameters}


def params_from_sections(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments of a detector class taken by name from its config sections'
    values (the config is the only source of defaults): keys the class does not take are left out;
    a parameter the config does not provide is an error, never a silent second default."""
    import inspect

    names = list(inspect.signature(cls).parameters)
    missing = set(names) - set(values)
    if missing:
        raise TypeError(f"the config provides no {sorted(missing)} for {cls.__name__}")
    return {k: v for k, v in values.items() if k in names}


@contextmanager
def torch_threads(threads: int | str) -> Iterator[None]:
    """Run the block with ``threads`` torch CPU threads (at least 1; ``"auto"``, left by a training that did not
    probe, on a GPU: the CPUs this process may use, at most 4), then restore the previous count."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(thread_candidates()[0] if threads == "auto" else max(1, int(threads)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def thread_probe(threads: int | str, device: str = "auto") -> ThreadProbe | None:
    """The probe that chooses the thread count of a training run whose ``threads`` is ``"auto"``
    (:mod:`medanomaly.train.thread_probe`), else None: the count is given, or the run trains on a GPU (``device``
    resolves to CUDA: the steps then time the GPU, not the CPU threads inference will use; ``threads`` stays
    ``"auto"``)."""
    return ThreadProbe(thread_candidates()) if threads == "auto" and resolve_device(device) == "cpu" else None


@dataclass(frozen=True)
class HeatmapFit:
    """What a heatmap training run did: every step's loss, steps done, wall and process CPU seconds
    (``time.process_time``, all threads), why it stopped (``steps`` = all steps done, ``time budget`` =
    the wall-clock budget ran out first) and the learning curve (one row per validation: step, seconds, CPU seconds,
    the validation metrics), with the step whose weights were kept."""

    losses: list[float]
    steps: int
    seconds: float
    cpu_seconds: float
    stop_reason: str
    curve: list[dict[str, float]] = field(default_factory=list)
    best_step: int | None = None
    threads: int | None = None
    thread_step_seconds: dict[int, float] = field(default_factory=dict)
    mining: list[dict[str, float]] = field(default_factory=list)
    precision: str = "fp32"
    skipped_steps: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"steps_done": self.steps, "wall_seconds": round(self.seconds, 2),
                "cpu_seconds": round(self.cpu_seconds, 2), "stop_reason": self.stop_reason,
                "learning_curve": self.curve, "best_step": self.best_step, "threads": self.threads,
                "thread_probe_step_seconds": {str(k): round(v, 4) for k, v in self.thread_step_seconds.items()},
                "hard_negative_mining": self.mining, "precision": self.precision,
                "skipped_steps": self.skipped_steps}


#: Share of a run (steps or budget) after which no more hard negatives are mined (a round on the budget starts only
#: when, as long as the one before, it would end by then).
MINE_UNTIL = 0.9

#: Training losses of the heatmap networks (``train.loss``), see :func:`heatmap_loss`.
HEATMAP_LOSSES = ("dice_ce", "dice_ce_patch", "dice_focal_patch")


def heatmap_loss(name: str = "dice_ce") -> Any:
    """The training loss of a heatmap network (sigmoid logits vs a 0/1 lesion mask), by name.

    * ``dice_ce``: Dice over the whole batch + BCE (MONAI ``DiceCELoss``, ``batch=True``): every
      lesion voxel weighs the same, so a 25 mm nodule outweighs a 4 mm one about 250 times.
    * ``dice_ce_patch``: Dice per patch (averaged over the batch) + BCE: each patch's lesion weighs the
      same whatever its volume; a patch without lesion adds an almost constant term (no gradient to speak of).
    * ``dice_focal_patch``: per-patch Dice + focal loss (gamma 2): the BCE of voxels already well
      classified (most of the lung) is down-weighted, the hard ones (small, faint lesions) dominate.

    Example:
        >>> type(heatmap_loss("dice_ce_patch")).__name__
        'DiceCELoss'
    """
    from monai.losses import DiceCELoss, DiceFocalLoss

    if name not in HEATMAP_LOSSES:
        raise InputError(f"unknown heatmap loss {name!r}; valid: {', '.join(HEATMAP_LOSSES)}")
    smooth = {"smooth_nr": 1e-3, "smooth_dr": 1e-3}
    if name == "dice_focal_patch":
        return DiceFocalLoss(sigmoid=True, batch=False, gamma=2.0, **smooth)
    return DiceCELoss(sigmoid=True, batch=name == "dice_ce", **smooth)


def one_cycle(progress: float, pct_start: float = 0.3, div: float = 25.0, final_div: float = 1e4) -> float:
    """Learning-rate factor at training progress 0..1: cosine warm-up from 1/div to 1 over ``pct_start``,
    then cosine annealing to 1/(div x final_div) (torch's ``OneCycleLR`` shape, driven by progress).

    Example:
        >>> round(one_cycle(0.0), 3), one_cycle(0.3), round(one_cycle(1.0), 6)
        (0.04, 1.0, 4e-06)
    """
    p = min(max(progress, 0.0), 1.0)
    low, end = 1.0 / div, 1.0 / (div * final_div)
    if p < pct_start:
        return low + (1.0 - low) * (1.0 - math.cos(math.pi * p / pct_start)) / 2.0
    return end + (1.0 - end) * (1.0 + math.cos(math.pi * (p - pct_start) / (1.0 - pct_start))) / 2.0


def fit_heatmap_run(model: Any, sampler: PatchSampler, batch_size: int, steps: int, lr: float, seed: int,
                    progress: bool, title: str, budget_minutes: float | None = None,
                    validate: Callable[[Any], dict[str, float]] | None = None, eval_every: int = 0,
                    monitor: str = "cpm", loss_name: str = "dice_ce", keep: str = "best",
                    probe: ThreadProbe | None = None, mine: Callable[[Any], dict[str, float]] | None = None,
                    mine_every: int = 0, ema_decay: float = 0.0, device: str = "auto",
                    precision: str = "fp32") -> HeatmapFit:  # fmt: skip
    """Train a heatmap network in place on sampled patches (Dice + BCE, AdamW, one-cycle rate) through the one
    training loop, with a wall-clock budget and a learning curve.

    Training stops after ``steps`` steps or ``budget_minutes`` of wall clock (validation included),
    whichever comes first; with a budget the one-cycle rate follows the larger of the step and the
    time fractions, so it anneals fully either way. ``validate(model) -> {metric: value}`` runs every
    ``eval_every`` steps and after the last one (the model in eval mode); the weights with the best
    ``monitor`` value are kept, the later ones on a tie (a tie on a few validation nodules says nothing, and
    later weights are further annealed); without ``validate`` or with ``keep="last"``: the last ones (the curve is
    then a record only). ``loss_name``: :func:`heatmap_loss`. ``probe`` (:func:`thread_probe`) chooses the torch
    thread count on the first steps; the run's ``threads`` is the count it kept (1 if the run was shorter than the
    probe), or the count the caller set. ``ema_decay`` > 0: the moving average of the weights is what is validated
    and kept (:mod:`medanomaly.train.averaging`). ``precision``: ``fp32`` or ``bf16`` (resolved,
    :func:`medanomaly.train.precision.resolve_precision`), the training forward pass's and the mining rounds'.
    """
    import torch

    from medanomaly.train.batches import SampledBatches
    from medanomaly.train.engine import Hooks, LoopOptions, train

    criterion = heatmap_loss(loss_name)
    clock = {"t0": time.perf_counter(), "cpu0": time.process_time(), "step": 0}
    curve: list[dict[str, float]] = []
    mining: list[dict[str, float]] = []

    def optimizer(net: Any, steps_per_epoch: int, total: int) -> tuple[Any, Any]:
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
        clock["t0"] = time.perf_counter()
        if budget_minutes is None:
            return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda k: one_cycle(max(k / total, spent())))

    def spent(ahead: float = 0.0) -> float:  # share of the wall-clock budget used after ``ahead`` more seconds
        return 0.0 if budget_minutes is None else (time.perf_counter() - clock["t0"] + ahead) / (60.0 * budget_minutes)

    def loss(x: Any, y: Any, net: Any, extras: dict[str, Any]) -> Any:
        clock["step"] += 1
        last_round = mining[-1].get("seconds", 0.0) if mining else 0.0
        if mine is not None and mining_round_due(clock["step"], mine_every, steps, spent(last_round)):
            mining.append({"step": clock["step"] - 1, **_mine_round(mine, net)})
        if probe is not None:
            probe.on_step()
        return criterion(net(x), y)

    def check(net: Any) -> dict[str, float]:
        if probe is not None:
            probe.discard()  # a validation inside the probe's steps is not a step's time
        net.eval()
        try:
            scores = validate(net)  # type: ignore[misc]
        finally:
            net.train()
        curve.append({"step": clock["step"], "seconds": round(time.perf_counter() - clock["t0"], 2),
                      "cpu_seconds": round(time.process_time() - clock["cpu0"], 2),
                      **{k: float(v) for k, v in scores.items()}})
        return scores

    every = eval_every if validate is not None and eval_every > 0 else steps
    hooks = Hooks(loss=loss, optimizer=optimizer, validate=check if validate is not None else None)
    options = LoopOptions(epochs=math.ceil(steps / every), seed=seed, progress=progress, record_steps=True,
                          title=title, log_every=max(steps // 10, 1), max_steps=steps, max_minutes=budget_minutes,
                          monitor=f"val_{monitor}" if validate is not None and keep == "best" else None,
                          min_delta=-1e-9, ema_decay=ema_decay, device=device,
                          precision=precision)  # fmt: skip  # a tie keeps the later weights
    result = train(model, lambda ctx: SampledBatches(sampler.sample, batch_size, every, seed, ctx), hooks, options)
    model.eval()
    best = curve[result.best_epoch]["step"] if curve and 0 <= result.best_epoch < len(curve) else None
    reason = "steps" if result.steps_run >= steps else "time budget"
    threads = torch.get_num_threads() if probe is None else (probe.chosen or 1)
    return HeatmapFit(list(result.step_losses), result.steps_run, result.seconds, time.process_time() - clock["cpu0"],
                      reason, curve, best, threads, dict(probe.step_seconds) if probe is not None else {},
                      mining, precision, result.skipped_steps)  # fmt: skip


def mining_round_due(step: int, every: int, steps: int, budget_share_at_end: float) -> bool:
    """Whether a hard-negative mining round runs before ``step`` (counted from 1): every ``every`` steps, and only
    while both the share of the steps and the share of the wall-clock budget the round would end at (the clock now
    plus the last round's seconds; 0 without a budget) are under :data:`MINE_UNTIL`.

    Example:
        >>> [mining_round_due(s, 800, 8000, 0.5) for s in (800, 801, 7201)], mining_round_due(1601, 800, 8000, 0.95)
        ([False, True, False], False)
    """
    if every <= 0 or step <= 1 or (step - 1) % every:
        return False
    return max(step / steps, budget_share_at_end) < MINE_UNTIL


def _mine_round(mine: Callable[[Any], dict[str, float]], net: Any) -> dict[str, float]:
    """One mining round with the bare network (a DDP wrapper's module) in eval mode, back to training after."""
    bare = getattr(net, "module", net)
    bare.eval()
    try:
        return mine(bare)
    finally:
        bare.train()


class HeatmapDetector:
    """Heatmap lesion detector for 2D or 3D images (see the module docstring).

    Args:
        spatial_dims: 2 (one-slice images) or 3.
        model_name / model_params: ``heatmap_unet`` or a registered model.
        spacing_mm: network grid (x, y, z) mm; z of a 2D image is its one slice.
        intensity / window: ``window`` ([low, high] -> [0, 1]) or ``percentile`` (per image).
        region / region_margin_mm: search-region plug-in name and its margin (mm).
        patch_size, batch_size, steps, lr, positive_fraction, hard_negative_fraction, hard_level: training.
        ema_decay: moving average of the weights, kept instead of the live ones (0 = off;
            :mod:`medanomaly.train.averaging`).
        mine_every, mined_fraction: hard negatives mined from the network's own false positives on the training
            images every ``mine_every`` steps (0 = off), ``mined_fraction`` of the hard-negative patches then
            centred on them (:mod:`medanomaly.detect.mining`).
        roi_size, overlap: sliding-window inference (z, y, x voxels).
        candidate_threshold, mask_threshold, max_findings: findings.
        mirror_axes: test-time mirroring of the heatmap (:func:`medanomaly.detect.infer.mirrored`; () = off).
        split_depth: components split at probability valleys this deep
            (:func:`medanomaly.detect.infer.split_at_valleys`; None = off).
        label: the findings' label before classification.
        seed / threads: seeds; torch CPU threads (``"auto"``: timed on the first training steps, :func:`thread_probe`).
        precision: the network's arithmetic in training and inference, ``fp32``, ``bf16`` or ``auto`` (bfloat16 where
            the device has it natively: :mod:`medanomaly.train.precision`).
    """

    def __init__(self, spatial_dims: int = 2, model_name: str = "heatmap_unet",
                 model_params: dict[str, Any] | None = None, spacing_mm: Any = (0.5, 0.5, 1.0),
                 intensity: str = "window", window: Any = (0.0, 1.0), region: str = "breast",
                 region_margin_mm: float = 2.0, patch_size: Any = (1, 64, 64), batch_size: int = 8,
                 steps: int = 300, lr: float = 3e-3, positive_fraction: float = 0.5,
                 hard_negative_fraction: float = 0.3, hard_level: float = 0.5, ema_decay: float = 0.0,
                 mine_every: int = 0, mined_fraction: float = 0.5, roi_size: Any = (1, 256, 256),
                 overlap: float = 0.25, candidate_threshold: float = 0.2, mask_threshold: float = 0.5,
                 max_findings: int = 10, mirror_axes: Any = (), split_depth: float | None = None,
                 label: str = "lesion", seed: int = 0, threads: int | str = 1,
                 device: str = "auto", precision: str = "fp32") -> None:  # fmt: skip
        self.spatial_dims = int(spatial_dims)
        self.model_name, self.model_params = model_name, dict(model_params or {})
        self.spacing_mm = tuple(float(s) for s in spacing_mm)
        self.intensity, self.window = intensity, tuple(float(w) for w in window)
        self.region, self.region_margin_mm = region, float(region_margin_mm)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.batch_size, self.steps, self.lr = int(batch_size), int(steps), float(lr)
        self.positive_fraction, self.hard_negative_fraction = positive_fraction, hard_negative_fraction
        self.hard_level = float(hard_level)
        self.ema_decay = float(ema_decay)
        self.mine_every, self.mined_fraction = int(mine_every), float(mined_fraction)
        self.roi_size, self.overlap = tuple(int(r) for r in roi_size), float(overlap)
        self.candidate_threshold, self.mask_threshold = float(candidate_threshold), float(mask_threshold)
        self.max_findings, self.label, self.seed = int(max_findings), label, int(seed)
        self.threads = threads if threads == "auto" else int(threads)
        self.device = str(device)
        self.mirror_axes = tuple(mirror_axes)
        self.split_depth = split_depth_or_none(split_depth)
        self.precision = checked_precision(precision)

    @classmethod
    def from_config(cls, cfg: Any) -> HeatmapDetector:
        """From a :class:`medanomaly.detect.detection_config.DetectionConfig`: every parameter by name
        from the ``grid``, ``train`` and ``infer`` sections, the region, the model and the seed."""
        values = {**cfg.grid.model_dump(), **cfg.train.model_dump(), **cfg.infer.model_dump(),
                  "spatial_dims": cfg.spatial_dims, "model_name": cfg.model.name, "model_params": dict(cfg.model.params),
                  "region": cfg.region.name, "region_margin_mm": cfg.region.margin_mm, "label": "lesion",
                  "seed": cfg.seed}  # fmt: skip
        return cls(**params_from_sections(cls, values))

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters (saved in ``heatmap_detector.json``)."""
        return constructor_params(self)

    # ------------------------------------------------------------------ input
    @property
    def divisor(self) -> tuple[int, int, int]:
        """Sizes the network needs (z, y, x): 4 in-plane, 4 in z for 3D, 1 for one slice
        (:data:`medanomaly.detect.detection_config.NETWORK_DIVISORS`)."""
        from medanomaly.detect.detection_config import NETWORK_DIVISORS

        return NETWORK_DIVISORS.get((self.model_name, self.spatial_dims), (1 if self.spatial_dims == 2 else 4, 4, 4))

    def preprocessing_steps(self) -> list[dict[str, Any]]:
        """The recorded input pipeline (``model.json`` ``preprocessing``)."""
        from medanomaly.preprocess.recipes import detection_steps

        steps = detection_steps(self.spacing_mm, self.window)
        if self.intensity == "percentile":
            steps[-1] = {"name": "percentile_unit", "low_pct": 0.5, "high_pct": 99.5}
        return steps

    def prepare(self, image: Volume) -> Volume:
        """The network input on the detector grid (the recorded pipeline)."""
        from medanomaly.preprocess.pipeline import Pipeline

        if self.spatial_dims == 2 and not image.is_2d:
            raise InputError(f"this detector takes a 2D image, got a 3D volume of {image.shape[0]} slices")
        return Pipeline.from_config(self.preprocessing_steps())(image).volume

    def grid_scan(self, image: Volume, target: np.ndarray, name: str) -> GridScan:
        """A training image (and its lesion mask on the image grid) on the detector grid."""
        from medanomaly.detect.grid import to_grid
        from medanomaly.detect.regions import search_region

        grid = self.prepare(image)
        arr = np.asarray(grid.array, np.float32)
        lesion = np.asarray(to_grid(image.with_array(target.astype(np.uint8)), self.spacing_mm, nearest=True).array) > 0
        _, core = search_region(self.region, image, self.spacing_mm, self.region_margin_mm)  # type: ignore[arg-type]
        allowed = core | lesion
        return GridScan(name, arr, lesion.astype(np.uint8), allowed, np.zeros(arr.shape, bool), arr)

    # ------------------------------------------------------------------ fit
    def fit(self, scans: list[GridScan], progress: bool = True) -> HeatmapDetector:
        """Train on images already on the grid (:meth:`grid_scan`); ``history_`` holds each step's loss."""
        import torch

        torch.manual_seed(self.seed)
        probe = thread_probe(self.threads, self.device)
        with torch_threads(self.threads):
            model = build_network(self.model_name, self.model_params, self.spatial_dims)
            sampler = PatchSampler(scans, self.patch_size, self.positive_fraction, self.hard_negative_fraction,
                                   hard_level=self.hard_level, mined_fraction=self.mined_fraction)  # fmt: skip
            mine = mining_round(sampler, self.roi_size, self.overlap, self.mine_every, self.divisor)
            fit = fit_heatmap_run(model, sampler, self.batch_size, self.steps, self.lr, self.seed, progress,
                                  "train heatmap detector", probe=probe, mine=mine, mine_every=self.mine_every,
                                  ema_decay=self.ema_decay, device=self.device,
                                  precision=resolve_precision(self.precision, self.device))  # fmt: skip
        self.history_, self.mining_ = fit.losses, fit.mining
        if probe is not None:
            self.threads = fit.threads  # the count the probe kept: inference uses it too
        self.model_ = model
        return self

    # ------------------------------------------------------------------ detect
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("HeatmapDetector is not fitted; call fit() or load()")

    def heatmap(self, image: Volume, region: np.ndarray | None) -> Volume:
        """Lesion probability (0..1) on the detector grid; 0 outside the region's bounding box."""
        grid = self.prepare(image)
        arr = np.asarray(grid.array, np.float32)
        prob = np.zeros(arr.shape, np.float32)
        box = search_box(region, self.roi_size, arr.shape, self.divisor)  # type: ignore[arg-type]
        prob[box] = mirrored(self.run_windows, arr[box], self.mirror_axes)
        return grid.with_array(prob)

    def run_windows(self, arr: np.ndarray) -> np.ndarray:
        """Sliding-window probabilities over a (z, y, x) network input: the torch network with
        ``threads`` CPU threads (an exported package overrides this with ONNX Runtime)."""
        self._check_fitted()
        with torch_threads(self.threads):
            return run_network(network_in_precision(self.model_, self.precision), arr, self.roi_size, self.overlap,
                               self.divisor)  # type: ignore[arg-type]

    def detect(self, image: Volume) -> list[Finding]:
        """Findings in ``image`` (best first): centre, box, score, mask on the image grid, measurements.

        Raises:
            InputError: a 3D volume for a 2D detector, or an image the region plug-in refuses (a CT
                for ``breast``, anything but a chest CT for ``lung``), or an empty region.
        """
        from medanomaly.detect.regions import search_region

        if self.spatial_dims == 2 and not image.is_2d:
            raise InputError(f"this detector takes a 2D image, got a 3D volume of {image.shape[0]} slices")
        region, core = search_region(self.region, image, self.spacing_mm, self.region_margin_mm)  # type: ignore[arg-type]
        prob = self.heatmap(image, region)
        finite_output(prob.array, "the detector's heatmap")  # weights that overflow gave NaN: no finding, silently
        return findings_from_heatmap(prob, image, region, self.candidate_threshold, self.mask_threshold,
                                     self.max_findings, label=self.label, centre_mask=core,
                                     split_depth=self.split_depth)  # fmt: skip

    # ------------------------------------------------------------------ persist
    def save(self, run_dir: str | Path) -> Path:
        """Write ``detector.safetensors`` and ``heatmap_detector.json`` (the parameters)."""
        from medanomaly.jsonio import write_json
        from medanomaly.train.checkpoint import save_weights

        self._check_fitted()
        run_dir = Path(run_dir)
        save_weights(self.model_, run_dir / DETECTOR_WEIGHTS)
        write_json(run_dir / DETECTOR_JSON, self.get_params())
        return run_dir / DETECTOR_WEIGHTS

    @classmethod
    def load(cls, run_dir: str | Path) -> HeatmapDetector:
        """Load a detector written by :meth:`save`; a missing or mismatched file is one InputError."""
        from medanomaly.train.checkpoint import load_weights

        run_dir = Path(run_dir)
        if not (run_dir / DETECTOR_WEIGHTS).is_file() or not (run_dir / DETECTOR_JSON).is_file():
            raise InputError(f"not a detection run (no {DETECTOR_WEIGHTS} / {DETECTOR_JSON})", run_dir)
        with unfit_file(run_dir / DETECTOR_JSON, "detector parameters"):
            params = read_json(run_dir / DETECTOR_JSON)
            check_saved(params, (GridConfig, TrainConfig, InferConfig))
            det = cls(**params)
            model = build_network(det.model_name, det.model_params, det.spatial_dims)
        det.model_ = load_weights(model, run_dir / DETECTOR_WEIGHTS).eval()
        det.history_ = []
        return det
