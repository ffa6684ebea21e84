"""The lung-nodule detector: a 3D heatmap network trained on simulated nodules, whole-volume search.

Design (why this one): a labelled cohort does not exist here, and thick-slice CT (5 mm) makes
small nodules look like vessel cross-sections on any single slice. A small fully-convolutional
3D network (``nodule_unet``: MONAI DynUNet, anisotropic kernels) is trained as a voxel-wise
nodule segmenter on patches of real CT with inserted nodules (Dice + BCE, ``train.loss``: Dice per patch
so that a 4 mm nodule weighs as much as a 25 mm one, or over the batch),
with hard negatives (vessels, pleura) over-sampled. Because it is fully convolutional, the same
weights then run over a whole scan with MONAI sliding windows, restricted to the lung region, and
its probability map gives detection (component peaks = scores), segmentation (the map
thresholded on the source grid) and, through :mod:`medanomaly.quantify`, measurement in one
pass. A separate candidate generator + false-positive-reduction classifier would need a second
model and a second training loop for the same few CPU minutes.

Learned state ends in ``_`` (``model_``, ``history_``); weights are saved as safetensors with a
JSON sidecar (``detector.json``) holding the grid, window and model spec.

Example:
    >>> det = NoduleDetector(model_name="nodule_unet", model_params={"filters": [4, 8, 16]})
    >>> det.spacing_mm
    (1.25, 1.25, 5.0)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.detect.config import GridConfig, InferConfig, TrainConfig
from medanomaly.detect.detection_config import check_saved
from medanomaly.detect.generic import (
    HeatmapFit,
    build_network,
    constructor_params,
    fit_heatmap_run,
    params_from_sections,
    thread_probe,
    torch_threads,
)
from medanomaly.detect.grow import grow_mask, slice_rise_or_none
from medanomaly.detect.infer import findings_from_heatmap, grid_region, heatmap, keep_large, split_depth_or_none
from medanomaly.detect.mining import mining_round
from medanomaly.detect.patches import GridScan, PatchSampler
from medanomaly.engine.contract import finite_output
from medanomaly.errors import InputError, unfit_file
from medanomaly.jsonio import read_json, write_text_atomic
from medanomaly.preprocess.intensity import WINDOWS
from medanomaly.quantify.partial_volume import with_partial_volume
from medanomaly.train.distributed import resolve_device
from medanomaly.train.precision import checked_precision, network_in_precision, resolve_precision
from medanomaly.types import Finding, Volume

WEIGHTS_FILE = "model.safetensors"
SIDECAR_FILE = "detector.json"

__all__ = ["NoduleDetector", "SIDECAR_FILE", "WEIGHTS_FILE", "saved_params"]


def saved_params(params: dict[str, Any]) -> dict[str, Any]:
    """Constructor parameters of a saved detector (``detector.json``, a package's ``model.json``): a run saved
    before test-time mirroring or the image pyramid existed has no ``mirror_axes`` / ``scales`` and keeps the
    one pass on the detector grid it was measured with; one saved before valley splitting keeps whole components,
    one saved before the second-body rule grows without it, one saved before ``precision`` runs in float32.

    The values of the config's ``grid``, ``train`` and ``infer`` sections are checked with the config's own
    bounds, so a hand-edited file fails here (pydantic's ValidationError, a ValueError) and not at detect time.
    """
    full = {"mirror_axes": (), "scales": (1.0,), "split_depth": None, "grow_max_slice_rise": None, "precision": "fp32",
            **params}
    check_saved(full, (GridConfig, TrainConfig, InferConfig))
    return full


class NoduleDetector:
    """Whole-volume lung-nodule detector (see the module docstring for the design).

    Args:
        model_name / model_params: the network, by registry name.
        spacing_mm: detector grid (x, y, z) mm.
        hu_window: input HU window.
        patch_size, batch_size, steps, lr: training.
        positive_fraction, hard_negative_fraction: patch mix.
        positive_sampling: ``lesion`` (each nodule equally often) or ``voxel`` (by volume).
        loss: training loss (:func:`medanomaly.detect.generic.heatmap_loss`).
        keep_weights: ``best`` (validation CPM) or ``last`` weights when training validates.
        mine_every, mined_fraction: hard negatives mined from the network's own false positives on the training
            scans every ``mine_every`` steps (0 = off), ``mined_fraction`` of the hard-negative patches then centred
            on them (:mod:`medanomaly.detect.mining`).
        hard_positive_weight: with ``positive_sampling: lesion`` and mining, the nodules a mining round finds the
            network missing are drawn this many times as often until the next round (1 = off).
        ema_decay: moving average of the weights, validated and kept instead of the live ones (0 = off;
            :mod:`medanomaly.train.averaging`).
        budget_minutes: wall-clock training budget (None: ``steps`` only).
        roi_size, overlap: sliding-window inference.
        mirror_axes: test-time mirroring of the heatmap (:func:`medanomaly.detect.infer.mirrored`; () = off; a
            saved run without the key loads with () ).
        scales: image pyramid of the heatmap (:func:`medanomaly.detect.infer.heatmap`; (1.0,) = the detector grid
            only; a saved run without the key loads with (1.0,) ).
        coarse_min_diameter_mm: a coarser scale adds only components that fill a ball this wide (mm) at
            ``mask_threshold`` (:meth:`coarse_filter`): lesions beyond the trained sizes, not more small candidates.
        split_depth: components of the heatmap are split at probability valleys this deep
            (:func:`medanomaly.detect.infer.split_at_valleys`; None = off, as runs saved before it load).
        lung_margin_mm, candidate_threshold, mask_threshold, max_findings: post-processing.
        grow, grow_margin_mm, grow_opening_mm, grow_min_hu, grow_opening_fraction, grow_min_compactness,
            grow_max_ratio, grow_max_slice_rise: region growing of each finding's mask to the lesion's extent
            in HU (:func:`medanomaly.detect.grow.grow_mask`; ``grow_max_ratio`` None = off, set by older runs;
            ``grow_max_slice_rise`` None = off, as in runs saved before it).
        seed: seeds numpy and torch for training.
        threads: torch CPU threads while training and inferring (``"auto"``: timed on the first training steps,
            :func:`medanomaly.detect.generic.thread_probe`; the count kept is saved).
        device: where the network trains (``auto``: a CUDA GPU when present; ``cpu``; ``cuda``); a ``cpu`` run is
            also evaluated on the CPU (:meth:`load` with ``device="auto"``).
        precision: the network's arithmetic in training, validation, mining and detection: ``fp32``, ``bf16`` or
            ``auto`` (bfloat16 where the device computes it natively, else float32; resolved on each machine that
            runs it, :mod:`medanomaly.train.precision`); a saved run without the key loads with ``fp32``.
    """

    def __init__(
        self,
        model_name: str = "nodule_unet",
        model_params: dict[str, Any] | None = None,
        spacing_mm: tuple[float, float, float] = (1.25, 1.25, 5.0),
        hu_window: tuple[float, float] = WINDOWS["lung_input"],
        patch_size: tuple[int, int, int] = (8, 48, 48),
        batch_size: int = 8,
        steps: int = 1500,
        lr: float = 3e-3,
        positive_fraction: float = 0.5,
        hard_negative_fraction: float = 0.3,
        positive_sampling: str = "lesion",
        loss: str = "dice_ce_patch",
        keep_weights: str = "last",
        mine_every: int = 0,
        mined_fraction: float = 0.5,
        hard_positive_weight: float = 1.0,
        ema_decay: float = 0.0,
        budget_minutes: float | None = 4.0,
        roi_size: tuple[int, int, int] = (16, 128, 128),
        overlap: float = 0.25,
        lung_margin_mm: float = 5.0,
        candidate_threshold: float = 0.15,
        mask_threshold: float = 0.5,
        max_findings: int = 20,
        mirror_axes: tuple[str, ...] = ("x",),
        scales: tuple[float, ...] = (1.0, 2.0),
        coarse_min_diameter_mm: float = 30.0,
        split_depth: float | None = 0.3,
        grow: bool = True,
        grow_margin_mm: float = 30.0,
        grow_opening_mm: float = 2.0,
        grow_min_hu: float = -700.0,
        grow_opening_fraction: float = 0.5,
        grow_min_compactness: float = 0.5,
        grow_max_ratio: float | None = None,
        grow_max_slice_rise: float | None = 1.25,
        seed: int = 0,
        threads: int | str = "auto",
        device: str = "auto",
        precision: str = "auto",
    ) -> None:
        self.model_name = model_name
        self.model_params = dict(model_params or {})
        self.spacing_mm = tuple(float(s) for s in spacing_mm)
        self.hu_window = tuple(float(h) for h in hu_window)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.batch_size = batch_size
        self.steps = steps
        self.lr = lr
        self.positive_fraction = positive_fraction
        self.hard_negative_fraction = hard_negative_fraction
        self.positive_sampling = positive_sampling
        self.loss = loss
        self.keep_weights = keep_weights
        self.mine_every = mine_every
        self.mined_fraction = mined_fraction
        self.hard_positive_weight = float(hard_positive_weight)
        self.ema_decay = float(ema_decay)
        self.budget_minutes = budget_minutes
        self.roi_size = tuple(int(r) for r in roi_size)
        self.overlap = overlap
        self.lung_margin_mm = lung_margin_mm
        self.candidate_threshold = candidate_threshold
        self.mask_threshold = mask_threshold
        self.max_findings = max_findings
        self.mirror_axes = tuple(mirror_axes)
        self.scales = tuple(float(f) for f in scales)
        self.coarse_min_diameter_mm = float(coarse_min_diameter_mm)
        self.split_depth = split_depth_or_none(split_depth)
        self.grow = grow
        self.grow_margin_mm = grow_margin_mm
        self.grow_opening_mm = grow_opening_mm
        self.grow_min_hu = grow_min_hu
        self.grow_opening_fraction = grow_opening_fraction
        self.grow_min_compactness = grow_min_compactness
        self.grow_max_ratio = grow_max_ratio
        self.grow_max_slice_rise = slice_rise_or_none(grow_max_slice_rise)
        self.seed = seed
        self.threads = threads
        self.device = str(device)
        self.precision = checked_precision(precision)

    # ------------------------------------------------------------------------------ config
    @classmethod
    def from_config(cls, cfg: Any) -> NoduleDetector:
        """Build from a :class:`medanomaly.detect.config.LungNoduleConfig`: every constructor
        parameter is taken by name from the ``grid``, ``train`` and ``infer`` sections (the only
        source of defaults), the model and the seed; section keys the detector does not take
        (``hit_min_radius_mm``, ``explain_top``) stay with the task."""
        values = {**cfg.grid.model_dump(), **cfg.train.model_dump(), **cfg.infer.model_dump(),
                  "model_name": cfg.model.name, "model_params": dict(cfg.model.params), "seed": cfg.seed}
        return cls(**params_from_sections(cls, values))

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters (as sklearn's ``get_params``; saved in ``detector.json``)."""
        return constructor_params(self)

    # ------------------------------------------------------------------------------ fit
    def fit(self, scans: list[GridScan], progress: bool = True,
            validate: Callable[[NoduleDetector], dict[str, float]] | None = None,
            eval_every: int = 0) -> NoduleDetector:  # fmt: skip
        """Train the network on patches of simulated scans (already on the detector grid).

        The heatmap recipe of :func:`medanomaly.detect.generic.fit_heatmap_run` (the shared loop
        of :func:`medanomaly.train.engine.train`, so also under ``torchrun``): a step-wise patch
        sampler (``steps`` steps of ``batch_size`` patches, each process drawing its share), the loss
        ``loss`` (:func:`medanomaly.detect.generic.heatmap_loss`), AdamW with a one-cycle rate, one log
        line every tenth of the steps, stopped at ``budget_minutes`` of wall clock if that comes first.
        With ``validate`` (``validate(detector) -> {"cpm": ...}``, called with this detector holding the current
        weights) every ``eval_every`` steps, the best (``keep_weights: best``) or the last weights are kept.
        ``history_`` holds every step's loss, ``fit_`` the run's record (:class:`medanomaly.detect.generic.HeatmapFit`).
        """
        import torch

        torch.manual_seed(self.seed)
        probe = thread_probe(self.threads, self.device)
        with torch_threads(self.threads):
            model = build_network(self.model_name, self.model_params)
            if resolve_device(self.device) == "cpu":  # CPU: channels-last 3D convolutions train about 1.5x faster
                model = model.to(memory_format=torch.channels_last_3d)
            self.model_ = model  # validation detects with the weights being trained
            sampler = PatchSampler(scans, self.patch_size, self.positive_fraction, self.hard_negative_fraction,
                                   per_lesion=self.positive_sampling == "lesion",
                                   mined_fraction=self.mined_fraction,
                                   hard_positive_weight=self.hard_positive_weight)  # fmt: skip
            hook = None if validate is None else (lambda net: validate(self))
            mine = mining_round(sampler, self.roi_size, self.overlap, self.mine_every)
            self.fit_: HeatmapFit = fit_heatmap_run(model, sampler, self.batch_size, self.steps, self.lr, self.seed,
                                                    progress, "train detector (synthetic nodules)",
                                                    self.budget_minutes, hook, eval_every,
                                                    loss_name=self.loss, keep=self.keep_weights, probe=probe,
                                                    mine=mine, mine_every=self.mine_every,
                                                    ema_decay=self.ema_decay, device=self.device,
                                                    precision=resolve_precision(self.precision, self.device))  # fmt: skip
            model.to(memory_format=torch.contiguous_format)  # saved and exported as before
        self.history_ = self.fit_.losses
        if probe is not None:
            self.threads = self.fit_.threads  # the count the probe kept: inference uses it too
        return self

    # ------------------------------------------------------------------------------ predict
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("NoduleDetector is not fitted; call fit() or load()")

    def region(self, lung: Volume, side: int | None = None) -> np.ndarray:
        """Search region on the detector grid for a lung mask (optionally one lung)."""
        return grid_region(lung, self.spacing_mm, side, self.lung_margin_mm)  # type: ignore[arg-type]

    def heatmap(self, ct: Volume, region: np.ndarray | None) -> Volume:
        """Nodule probability on the detector grid (0 outside ``region``'s box; None = everywhere)."""
        self._check_fitted()
        with torch_threads(self.threads):
            network = network_in_precision(self.model_, self.precision)
            return heatmap(
                network, ct, self.spacing_mm, self.hu_window, self.roi_size, self.overlap, region,  # type: ignore[arg-type]
                mirror_axes=self.mirror_axes, scales=self.scales, coarse_filter=self.coarse_filter,
            )

    def coarse_filter(self, prob: Volume) -> np.ndarray:
        """What a coarser scale of the pyramid adds (:func:`medanomaly.detect.infer.keep_large`): only the
        voxels at ``mask_threshold`` or more of its components that fill a ball of ``coarse_min_diameter_mm``."""
        return keep_large(prob, self.coarse_min_diameter_mm, self.candidate_threshold, self.mask_threshold)

    def detect(self, ct: Volume, lung: Volume | None = None, side: int | None = None) -> list[Finding]:
        """Findings in a chest CT (HU), best first, each with centre, box, score, mask, measurements.

        Each finding's mask is grown to the lesion's extent (``grow``, inside the searched lung);
        its volume, diameters and HU are measured on that mask, and its partial-volume volume
        (``partial_volume_ml``: :mod:`medanomaly.quantify.partial_volume`, in both lungs) around it;
        centre, score and rank stay the network's.

        Args:
            ct: chest CT in HU.
            lung: its lung mask (1 right, 2 left); computed when None.
            side: search one lung only (1 or 2); None searches both.

        Raises:
            InputError: not a CT, or no lungs in the scan.
        """
        from medanomaly.detect.grid import lung_region

        if lung is None:
            lung = lung_region(ct)
        elif not lung.same_grid(ct, tol=1e-3):
            raise InputError("lung mask is not on the CT grid")
        region = self.region(lung, side)
        if not region.any():
            raise InputError("no lungs found in the search region")
        prob = self.heatmap(ct, region)
        finite_output(prob.array, "the detector's heatmap")  # weights that overflow gave NaN: no finding, silently
        core = grid_region(lung, self.spacing_mm, side, 0.0)  # type: ignore[arg-type]
        labels, hu = np.asarray(lung.array), np.asarray(ct.array)
        refine = None
        if self.grow:
            inside = labels > 0 if side is None else labels == side
            refine = partial(grow_mask, hu, lung=inside, spacing=ct.spacing, margin_mm=self.grow_margin_mm,
                             opening_mm=self.grow_opening_mm, min_hu=self.grow_min_hu,
                             opening_fraction=self.grow_opening_fraction, min_compactness=self.grow_min_compactness,
                             max_ratio=self.grow_max_ratio, max_slice_rise=self.grow_max_slice_rise)  # fmt: skip
        findings = findings_from_heatmap(prob, ct, region, self.candidate_threshold, self.mask_threshold,
                                         self.max_findings, centre_mask=core, refine=refine,
                                         split_depth=self.split_depth)  # fmt: skip
        return [with_partial_volume(f, hu, labels > 0, ct.spacing, ct.direction) for f in findings]

    # ------------------------------------------------------------------------------ persist
    def save(self, run_dir: str | Path) -> Path:
        """Write ``model.safetensors`` and ``detector.json`` into ``run_dir``."""
        from medanomaly.train.checkpoint import save_weights

        self._check_fitted()
        run_dir = Path(run_dir)
        save_weights(self.model_, run_dir / WEIGHTS_FILE)  # clones DynUNet's shared tensors
        params = self.get_params()
        write_text_atomic(run_dir / SIDECAR_FILE, json.dumps(params, indent=2))
        return run_dir / WEIGHTS_FILE

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu") -> NoduleDetector:
        """Load a detector saved by :meth:`save` (safetensors weights, JSON parameters) onto ``device`` (``cpu``,
        ``auto``: a GPU when present, or ``cuda``); its sliding windows then run there.

        Raises:
            InputError: the folder has no detector weights, or ``cuda`` without a GPU.
        """
        from medanomaly.train.checkpoint import load_weights

        run_dir = Path(run_dir)
        if not (run_dir / WEIGHTS_FILE).is_file() or not (run_dir / SIDECAR_FILE).is_file():
            raise InputError(f"not a trained lung_nodule run (no {WEIGHTS_FILE} / {SIDECAR_FILE})", run_dir)
        with unfit_file(run_dir / SIDECAR_FILE, "detector parameters"):
            det = cls(**saved_params(read_json(run_dir / SIDECAR_FILE)))
            network = build_network(det.model_name, det.model_params)
        if device == "auto" and det.device == "cpu":  # a run told to train on the CPU is evaluated there too
            device = "cpu"
        det.model_ = load_weights(network, run_dir / WEIGHTS_FILE).eval().to(resolve_device(device))
        det.history_ = []
        return det
