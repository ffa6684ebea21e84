"""The lung-nodule detector: a 3D heatmap network trained on simulated nodules, whole-volume search.

Design (why this one): a labelled cohort does not exist here, and thick-slice CT (5 mm) makes
small nodules look like vessel cross-sections on any single slice. A small fully-convolutional
3D network (``nodule_unet``: MONAI DynUNet, anisotropic kernels) is trained as a voxel-wise
nodule segmenter on patches of real CT with inserted nodules (Dice + BCE, MONAI ``DiceCELoss``),
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
from pathlib import Path
from typing import Any

import numpy as np

from medanomaly.detect.infer import findings_from_heatmap, grid_region, heatmap
from medanomaly.detect.patches import GridScan, PatchSampler
from medanomaly.errors import InputError
from medanomaly.preprocess.intensity import WINDOWS
from medanomaly.types import Finding, Volume

WEIGHTS_FILE = "model.safetensors"
SIDECAR_FILE = "detector.json"

__all__ = ["NoduleDetector", "SIDECAR_FILE", "WEIGHTS_FILE"]


def _build(name: str, params: dict[str, Any]) -> Any:
    from medanomaly.registry import MODELS

    if name == "nodule_unet":  # direct import: works even while other model modules are broken
        from medanomaly.models.nodule_unet import nodule_unet

        return nodule_unet(**params)
    return MODELS.create(name, **params)


def _param_names(cls: type) -> list[str]:
    """The constructor parameters of ``cls``, in order."""
    import inspect

    return list(inspect.signature(cls).parameters)


class NoduleDetector:
    """Whole-volume lung-nodule detector (see the module docstring for the design).

    Args:
        model_name / model_params: the network, by registry name.
        spacing_mm: detector grid (x, y, z) mm.
        hu_window: input HU window.
        patch_size, batch_size, steps, lr: training.
        positive_fraction, hard_negative_fraction: patch mix.
        roi_size, overlap: sliding-window inference.
        lung_margin_mm, candidate_threshold, mask_threshold, max_findings: post-processing.
        seed: seeds numpy and torch for training.
        threads: torch CPU threads while training and inferring.
    """

    def __init__(
        self,
        model_name: str = "nodule_unet",
        model_params: dict[str, Any] | None = None,
        spacing_mm: tuple[float, float, float] = (1.25, 1.25, 5.0),
        hu_window: tuple[float, float] = WINDOWS["lung_input"],
        patch_size: tuple[int, int, int] = (8, 48, 48),
        batch_size: int = 8,
        steps: int = 250,
        lr: float = 3e-3,
        positive_fraction: float = 0.5,
        hard_negative_fraction: float = 0.3,
        roi_size: tuple[int, int, int] = (16, 128, 128),
        overlap: float = 0.25,
        lung_margin_mm: float = 5.0,
        candidate_threshold: float = 0.15,
        mask_threshold: float = 0.5,
        max_findings: int = 20,
        seed: int = 0,
        threads: int = 1,
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
        self.roi_size = tuple(int(r) for r in roi_size)
        self.overlap = overlap
        self.lung_margin_mm = lung_margin_mm
        self.candidate_threshold = candidate_threshold
        self.mask_threshold = mask_threshold
        self.max_findings = max_findings
        self.seed = seed
        self.threads = threads

    # ------------------------------------------------------------------------------ config
    @classmethod
    def from_config(cls, cfg: Any) -> NoduleDetector:
        """Build from a :class:`medanomaly.detect.config.LungNoduleConfig`: every constructor
        parameter is taken by name from the ``grid``, ``train`` and ``infer`` sections (the only
        source of defaults), the model and the seed; section keys the detector does not take
        (``hit_min_radius_mm``, ``explain_top``) stay with the task."""
        values = {**cfg.grid.model_dump(), **cfg.train.model_dump(), **cfg.infer.model_dump(),
                  "model_name": cfg.model.name, "model_params": dict(cfg.model.params), "seed": cfg.seed}
        names = _param_names(cls)
        missing = set(names) - set(values)
        if missing:  # a constructor parameter the config does not provide would fall back to a second default
            raise TypeError(f"the config provides no {sorted(missing)} for {cls.__name__}")
        return cls(**{k: v for k, v in values.items() if k in names})

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters (as sklearn's ``get_params``; saved in ``detector.json``)."""
        return {k: getattr(self, k) for k in _param_names(type(self))}

    # ------------------------------------------------------------------------------ fit
    def fit(self, scans: list[GridScan], progress: bool = True) -> NoduleDetector:
        """Train the network on patches of simulated scans (already on the detector grid).

        Runs the shared training loop (:func:`medanomaly.train.engine.train`, so also under
        ``torchrun``): a step-wise patch sampler (``steps`` steps of ``batch_size`` patches, each
        process drawing its share), Dice + BCE (MONAI ``DiceCELoss``), AdamW with a one-cycle rate,
        one log line every tenth of the steps. ``history_`` holds every step's loss.
        """
        import torch
        from monai.losses import DiceCELoss

        from medanomaly.train.batches import SampledBatches
        from medanomaly.train.engine import Hooks, LoopOptions, train

        torch.manual_seed(self.seed)
        old_threads = torch.get_num_threads()
        torch.set_num_threads(max(1, self.threads))
        try:
            model = _build(self.model_name, self.model_params)
            sampler = PatchSampler(scans, self.patch_size, self.positive_fraction, self.hard_negative_fraction)
            dice_ce = DiceCELoss(sigmoid=True, batch=True, smooth_nr=1e-3, smooth_dr=1e-3)

            def optimizer(net: Any, steps: int, total: int) -> tuple[Any, Any]:
                opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=1e-4)
                return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, total_steps=total)

            hooks = Hooks(loss=lambda x, y, net, extras: dice_ce(net(x), y), optimizer=optimizer)
            options = LoopOptions(epochs=1, seed=self.seed, progress=progress, record_steps=True,
                                  title="train detector (synthetic nodules)", log_every=max(self.steps // 10, 1))
            result = train(model, lambda ctx: SampledBatches(sampler.sample, self.batch_size, self.steps,
                                                             self.seed, ctx), hooks, options)
            model.eval()
        finally:
            torch.set_num_threads(old_threads)
        self.model_ = model
        self.history_ = list(result.step_losses)
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
        import torch

        self._check_fitted()
        old = torch.get_num_threads()
        torch.set_num_threads(max(1, self.threads))
        try:
            return heatmap(
                self.model_, ct, self.spacing_mm, self.hu_window, self.roi_size, self.overlap, region  # type: ignore[arg-type]
            )
        finally:
            torch.set_num_threads(old)

    def detect(self, ct: Volume, lung: Volume | None = None, side: int | None = None) -> list[Finding]:
        """Findings in a chest CT (HU), best first, each with centre, box, score, mask, measurements.

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
        core = grid_region(lung, self.spacing_mm, side, 0.0)  # type: ignore[arg-type]
        return findings_from_heatmap(
            prob, ct, region, self.candidate_threshold, self.mask_threshold, self.max_findings, centre_mask=core
        )

    # ------------------------------------------------------------------------------ persist
    def save(self, run_dir: str | Path) -> Path:
        """Write ``model.safetensors`` and ``detector.json`` into ``run_dir``."""
        from safetensors.torch import save_file

        self._check_fitted()
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        # DynUNet registers some blocks twice (shared tensors): clone so every key is saved.
        state = {k: v.detach().clone().contiguous() for k, v in self.model_.state_dict().items()}
        save_file(state, str(run_dir / WEIGHTS_FILE))
        params = self.get_params()
        (run_dir / SIDECAR_FILE).write_text(json.dumps(params, indent=2))
        return run_dir / WEIGHTS_FILE

    @classmethod
    def load(cls, run_dir: str | Path) -> NoduleDetector:
        """Load a detector saved by :meth:`save` (safetensors weights, JSON parameters).

        Raises:
            InputError: the folder has no detector weights.
        """
        from safetensors.torch import load_file

        run_dir = Path(run_dir)
        if not (run_dir / WEIGHTS_FILE).is_file() or not (run_dir / SIDECAR_FILE).is_file():
            raise InputError(f"not a trained lung_nodule run (no {WEIGHTS_FILE} / {SIDECAR_FILE})", run_dir)
        det = cls(**json.loads((run_dir / SIDECAR_FILE).read_text()))
        model = _build(det.model_name, det.model_params)
        model.load_state_dict(load_file(str(run_dir / WEIGHTS_FILE)))
        det.model_ = model.eval()
        det.history_ = []
        return det
