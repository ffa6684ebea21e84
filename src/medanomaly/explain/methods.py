"""Attribution methods for 2D and 3D models: Grad-CAM, Grad-CAM++, occlusion, IG, guided backprop.

Every method is a function ``(model, x, *, target, layer, **options) -> np.ndarray`` registered in
:data:`medanomaly.registry.EXPLAINERS`. ``x`` is one input tensor ``(1, C, [Z,] Y, X)``; the
returned map has the spatial shape of ``x`` (``(Z, Y, X)`` or ``(Y, X)``), float32, and **higher =
more evidence for the target class** (the class being explained, by default the predicted one).

The heavy lifting is done by MONAI (``GradCAM``, ``GradCAMpp``, ``OcclusionSensitivity``) and captum
(``IntegratedGradients``, ``GuidedBackprop``); this module adds what they leave to the caller:

* a model whose output is a map (a detector or segmenter, ``(B, K, *spatial)``) is explained through
  its spatial maximum, so one code path serves classifiers and detectors;
* the target layer of the CAM methods is chosen automatically (a model may name it in an
  ``explain_layer`` attribute, else the last convolution is used) and checked: an unknown name
  raises :class:`~medanomaly.errors.InputError` listing the valid ones;
* a gradient method on a model without gradients (an ONNX session, a callable, a model whose
  output is detached from its input) raises a clear InputError instead of a silent zero map;
* MONAI's CAM classes leave hooks on the model; they are removed after each call here, so
  explaining many findings with one model does not slow it down or leak memory.

Example:
    >>> import torch
    >>> from medanomaly.explain.methods import attribute
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
    ...                           torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    >>> attribute(net, torch.rand(1, 1, 16, 16), "gradcam").shape
    (16, 16)
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from medanomaly.errors import InputError
from medanomaly.registry import EXPLAINERS

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

#: Methods that need gradients of the model (occlusion does not).
GRADIENT_METHODS = frozenset({"gradcam", "gradcampp", "integrated_gradients", "guided_backprop"})
_CONV_NAMES = ("Conv1d", "Conv2d", "Conv3d")
_MAX_LISTED = 40


# --------------------------------------------------------------------------------------- model adapters
def _scorer_class() -> type:
    """Build the wrapper class lazily (torch is imported only when a method runs)."""
    from torch import nn

    class Scorer(nn.Module):
        """Wraps any model so its output is ``(B, K)`` class scores.

        ``(B,)`` becomes ``(B, 1)``; a map ``(B, K, *spatial)`` is reduced by its spatial max (a
        detector's "is there a lesion here" score). ``output_fn`` picks a tensor out of a dict/tuple.
        """

        def __init__(self, net: Any, output_fn: Callable[[Any], Any] | None = None) -> None:
            super().__init__()
            if isinstance(net, nn.Module):
                self.net = net
            else:  # a plain callable (ONNX session wrapper, numpy model): kept, not registered
                object.__setattr__(self, "_callable", net)
                self.net = nn.Identity()
            self.output_fn = output_fn

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            import torch

            fn = self.__dict__.get("_callable")
            out = fn(x) if fn is not None else self.net(x)
            if self.output_fn is not None:
                out = self.output_fn(out)
            if isinstance(out, (tuple, list)):
                out = out[0]
            if isinstance(out, dict):
                out = next(iter(out.values()))
            out = torch.as_tensor(out)
            if out.ndim == 1:
                out = out[:, None]
            if out.ndim > 2:
                out = out.flatten(2).amax(dim=2)
            return out

    return Scorer


def as_scorer(model: Any, output_fn: Callable[[Any], Any] | None = None) -> nn.Module:
    """Wrap ``model`` so it returns ``(B, K)`` scores (see the module docstring).

    The wrapper takes the model's train/eval mode: MONAI's CAM classes restore the mode of the
    module they are given, and a fresh wrapper (``training=True``) would switch an eval-mode model
    to training mode, so batch norm would use batch statistics in every later prediction.
    """
    scorer = _scorer_class()(model, output_fn)
    scorer.training = bool(getattr(model, "training", False))
    return scorer


def is_torch_module(model: Any) -> bool:
    from torch import nn

    return isinstance(model, nn.Module)


def spatial_dims_of(model: Any, default: int = 3) -> int:
    """2 or 3: the model's ``spatial_dims`` attribute, else the kind of its first convolution."""
    dims = getattr(model, "spatial_dims", None)
    if dims in (2, 3):
        return int(dims)
    if is_torch_module(model):
        for module in model.modules():
            kind = type(module).__name__
            if kind in ("Conv2d", "ConvTranspose2d"):
                return 2
            if kind in ("Conv3d", "ConvTranspose3d"):
                return 3
    return default


def layer_names(model: nn.Module) -> list[str]:
    """Every named sub-module (the names ``--layer`` accepts)."""
    return [name for name, _ in model.named_modules() if name]


def default_layer(model: nn.Module) -> str:
    """The layer CAM methods use: ``model.explain_layer`` if declared, else the last convolution
    with more than one output channel.

    The last convolution (in registration order, which is execution order for the usual
    ``Sequential``-style networks) has the finest semantics that still keeps a spatial grid.
    """
    declared = getattr(model, "explain_layer", None)
    if declared:
        return resolve_layer(model, str(declared))
    convs = [(name, m) for name, m in model.named_modules() if name and type(m).__name__ in _CONV_NAMES]
    # A segmenter's last convolution maps features to its output classes (1 channel): its "CAM"
    # would only repeat the output; the decoder layer before it carries the evidence.
    wide = [name for name, m in convs if getattr(m, "out_channels", 2) > 1]
    if wide:
        return wide[-1]
    if not convs:
        raise InputError(
            "model has no convolution layer for a CAM method; pass --layer "
            f"(valid: {_listing(layer_names(model))}) or use occlusion / integrated_gradients"
        )
    return convs[-1][0]


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return shown + (f", ... ({more} more)" if more > 0 else "") if names else "(none)"


def resolve_layer(model: nn.Module, layer: str | None) -> str:
    """Check ``layer`` exists in ``model`` (None: the default layer); unknown names list valid ones."""
    if layer is None:
        return default_layer(model)
    names = layer_names(model)
    if layer not in names:
        raise InputError(f"unknown layer {layer!r}; valid layers: {_listing(names)}")
    return layer


# --------------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _temporary_hooks(model: nn.Module) -> Iterator[None]:
    """Remove every hook added to ``model`` inside the block (MONAI's CAM never removes its own)."""
    before = {id(m): (set(m._forward_hooks), set(m._backward_hooks)) for m in model.modules()}
    try:
        yield
    finally:
        for module in model.modules():
            fwd, bwd = before.get(id(module), (set(), set()))
            for key in set(module._forward_hooks) - fwd:
                del module._forward_hooks[key]
            for key in set(module._backward_hooks) - bwd:
                del module._backward_hooks[key]
            if not module._backward_hooks:
                module._is_full_backward_hook = None


def _check_input(x: torch.Tensor) -> None:
    if x.ndim not in (4, 5) or x.shape[0] != 1:
        raise InputError(f"expected one input (1, C, [Z,] Y, X), got shape {tuple(x.shape)}")


def scores(model: Any, x: torch.Tensor, output_fn: Callable[[Any], Any] | None = None) -> torch.Tensor:
    """``(B, K)`` probabilities (softmax for K > 1, sigmoid for K == 1) without gradients."""
    import torch

    scorer = as_scorer(model, output_fn)
    was_training = bool(getattr(model, "training", False))
    if is_torch_module(model):
        model.eval()
    try:
        with torch.no_grad():
            return activate(scorer(x))
    finally:
        if was_training:
            model.train()


def activate(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over classes, or sigmoid for a single logit."""
    return logits.softmax(1) if logits.shape[1] > 1 else logits.sigmoid()


def default_target(model: Any, x: torch.Tensor, output_fn: Callable[[Any], Any] | None = None) -> int:
    """The predicted class (argmax), or 0 for a single-output model."""
    probs = scores(model, x, output_fn)
    return 0 if probs.shape[1] == 1 else int(probs[0].argmax())


def _check_target(target: int, n_classes: int) -> int:
    if not 0 <= int(target) < n_classes:
        raise InputError(f"target class {target} out of range; the model has {n_classes} output(s)")
    return int(target)


def _probe(model: Any, x: torch.Tensor, method: str, scorer: nn.Module, target: int | None,
           need_gradients: bool) -> tuple[torch.Tensor, int]:  # fmt: skip
    """One forward pass (eval mode): class probabilities and the checked target.

    For gradient methods it also checks, on the same pass, that the output depends
    differentiably on the input; otherwise a clear InputError says to use occlusion.
    """
    import torch

    hint = "use --method occlusion, which needs only forward passes"
    if need_gradients and not is_torch_module(model):
        raise InputError(
            f"{method} needs gradients but the model is not a PyTorch module "
            f"({type(model).__name__}, e.g. an ONNX session); {hint}"
        )
    was_training = bool(getattr(model, "training", False))
    if is_torch_module(model):
        model.eval()
    try:
        if need_gradients:
            with torch.enable_grad():
                out = scorer(x.detach().clone().requires_grad_(True))
            if not out.requires_grad:
                raise InputError(
                    f"{method} needs gradients but the model output is not differentiable "
                    f"(computed under no_grad, detached or through non-torch code); {hint}"
                )
            out = out.detach()
        else:
            with torch.no_grad():
                out = scorer(x)
    finally:
        if was_training:
            model.train()
    probs = activate(out)
    if target is None:
        target = 0 if probs.shape[1] == 1 else int(probs[0].argmax())
    return probs, _check_target(target, int(probs.shape[1]))


def _as_map(t: Any, spatial: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(t.detach().cpu().numpy() if hasattr(t, "detach") else t, dtype=np.float32)
    arr = arr.reshape(arr.shape[-len(spatial) :]) if arr.size == int(np.prod(spatial)) else arr
    if arr.shape != tuple(spatial):
        raise RuntimeError(f"attribution shape {arr.shape} does not match input {spatial}")
    return np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)


# --------------------------------------------------------------------------------------- methods
def _unit_range(t: torch.Tensor) -> torch.Tensor:
    """Scale each map of a batch to [0, 1] (a flat map becomes all zeros)."""
    flat = t.detach().flatten(1)
    lo = flat.min(1).values.view(-1, *[1] * (t.ndim - 1))
    span = (flat.max(1).values.view(-1, *[1] * (t.ndim - 1)) - lo).clamp_min(1e-12)
    return (t.detach() - lo) / span


def _cam(cls_name: str, model: Any, x: torch.Tensor, target: int | None, layer: str | None,
         output_fn: Callable[[Any], Any] | None, method: str) -> np.ndarray:  # fmt: skip
    import monai.visualize as mv
    import torch

    _check_input(x)
    scorer = as_scorer(model, output_fn)
    name = resolve_layer(model, layer) if is_torch_module(model) else ""
    _, target = _probe(model, x, method, scorer, target, need_gradients=True)
    # Input requires grad so frozen models (all parameters requires_grad=False) still get
    # gradients at the target layer.
    xin = x.detach().clone().requires_grad_(True)
    with _temporary_hooks(model), torch.enable_grad():
        # MONAI's default post-processing maps (min, max) to (1, 0), i.e. flips the map; ours keeps
        # "higher = more evidence" and scales to [0, 1].
        cam = getattr(mv, cls_name)(nn_module=scorer, target_layers=f"net.{name}", postprocessing=_unit_range)
        try:
            out = cam(xin, class_idx=target)
        except KeyError:
            raise InputError(
                f"layer {name!r} did not run in the forward pass, so it has no activation; "
                f"valid layers: {_listing(layer_names(model))}"
            ) from None
    model.zero_grad(set_to_none=True)
    return _as_map(out[0, 0], tuple(x.shape[2:]))


@EXPLAINERS.register("gradcam")
def gradcam(model: Any, x: torch.Tensor, *, target: int | None = None, layer: str | None = None,
            output_fn: Callable[[Any], Any] | None = None) -> np.ndarray:  # fmt: skip
    """Grad-CAM (Selvaraju et al. 2017) with MONAI ``GradCAM``; map in [0, 1] on the input grid."""
    return _cam("GradCAM", model, x, target, layer, output_fn, "gradcam")


@EXPLAINERS.register("gradcampp")
def gradcampp(model: Any, x: torch.Tensor, *, target: int | None = None, layer: str | None = None,
              output_fn: Callable[[Any], Any] | None = None) -> np.ndarray:  # fmt: skip
    """Grad-CAM++ (Chattopadhyay et al. 2018) with MONAI ``GradCAMpp``; map in [0, 1]."""
    return _cam("GradCAMpp", model, x, target, layer, output_fn, "gradcampp")


def _default_mask_size(spatial: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(max(1, min(s, max(3, s // 4)))) for s in spatial)


@EXPLAINERS.register("occlusion")
def occlusion(model: Any, x: torch.Tensor, *, target: int | None = None, layer: str | None = None,
              output_fn: Callable[[Any], Any] | None = None, mask_size: int | tuple[int, ...] | None = None,
              overlap: float = 0.5, n_batch: int = 16, mode: str | float = "gaussian") -> np.ndarray:  # fmt: skip
    """Occlusion sensitivity with MONAI ``OcclusionSensitivity``: drop in target probability.

    Needs only forward passes, so it also explains ONNX sessions and other callables. Memory is
    bounded by ``n_batch`` copies of the input (the occlusions run ``n_batch`` at a time), so a
    large CT is explained in chunks without holding all occluded copies at once.

    Args:
        mask_size: occluder size in voxels per axis (default: a quarter of each axis, at least 3).
        overlap: overlap of neighbouring occluder positions, 0..1.
        n_batch: occluded copies per forward pass (the memory/speed trade-off).
        mode: "gaussian" (soft occluder), "mean_patch", "mean_img" or a constant fill value.
    """
    import torch
    from monai.visualize import OcclusionSensitivity

    del layer  # occlusion has no layer
    _check_input(x)
    scorer = as_scorer(model, output_fn)
    spatial = tuple(int(s) for s in x.shape[2:])
    base, target = _probe(model, x, "occlusion", scorer, target, need_gradients=False)
    size = _default_mask_size(spatial) if mask_size is None else mask_size
    if isinstance(size, int):
        size = (size,) * len(spatial)
    size = tuple(min(int(m), s) for m, s in zip(size, spatial, strict=True))
    occ = OcclusionSensitivity(nn_module=scorer, mask_size=size, n_batch=max(1, int(n_batch)),
                               verbose=False, mode=mode, overlap=overlap, activate=activate)  # fmt: skip
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MONAI's list indexing deprecation notes
        occ_map, _ = occ(x.detach())
    drop = base[0, target] - occ_map[0, target]
    return _as_map(drop, spatial)


@EXPLAINERS.register("integrated_gradients")
def integrated_gradients(model: Any, x: torch.Tensor, *, target: int | None = None, layer: str | None = None,
                         output_fn: Callable[[Any], Any] | None = None, n_steps: int = 32,
                         internal_batch_size: int = 4, baseline: float | str = 0.0) -> np.ndarray:  # fmt: skip
    """Integrated gradients (Sundararajan et al. 2017) with captum, summed over input channels.

    Signed: positive voxels push the target score up. The ``n_steps`` interpolated inputs run
    ``internal_batch_size`` at a time, which bounds memory on large volumes.

    Args:
        baseline: constant baseline value, or "min" for the image minimum (e.g. air in CT).
    """
    import torch
    from captum.attr import IntegratedGradients

    del layer
    _check_input(x)
    scorer = as_scorer(model, output_fn)
    _, target = _probe(model, x, "integrated_gradients", scorer, target, need_gradients=True)
    base_value = float(x.min()) if baseline == "min" else float(baseline)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            attr = IntegratedGradients(scorer).attribute(
                x.detach().clone(), baselines=base_value, target=target, n_steps=int(n_steps),
                internal_batch_size=max(1, int(internal_batch_size)),
            )  # fmt: skip
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    return _as_map(attr[0].sum(0), tuple(x.shape[2:]))


@EXPLAINERS.register("guided_backprop")
def guided_backprop(model: Any, x: torch.Tensor, *, target: int | None = None, layer: str | None = None,
                    output_fn: Callable[[Any], Any] | None = None) -> np.ndarray:  # fmt: skip
    """Guided backpropagation (Springenberg et al. 2015) with captum; |attribution| summed over channels.

    captum overrides the gradient of ``nn.ReLU`` modules; functional ReLUs or other activations
    are back-propagated as plain gradients.
    """
    import torch
    from captum.attr import GuidedBackprop

    del layer
    _check_input(x)
    scorer = as_scorer(model, output_fn)
    _, target = _probe(model, x, "guided_backprop", scorer, target, need_gradients=True)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # captum's "setting hooks on ReLU" note
            attr = GuidedBackprop(scorer).attribute(x.detach().clone().requires_grad_(True), target=target)
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    return _as_map(attr[0].abs().sum(0), tuple(x.shape[2:]))


# --------------------------------------------------------------------------------------- entry point
def method_names() -> list[str]:
    """Registered explanation methods."""
    return EXPLAINERS.names()


def attribute(model: Any, x: torch.Tensor, method: str = "gradcam", *, target: int | None = None,
              layer: str | None = None, **options: Any) -> np.ndarray:  # fmt: skip
    """Run the registered ``method`` on one input tensor; returns a spatial map (higher = more evidence).

    Raises:
        InputError: unknown method (lists valid ones), unknown layer, no gradients, bad target.
    """
    fn = EXPLAINERS.get(method)  # ConfigError (an InputError) listing valid methods
    return fn(model, x, target=target, layer=layer, **options)
