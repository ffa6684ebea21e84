"""What every fusion network shares: the modality-presence contract, encoders, registration.

A fusion network takes ``x`` of shape (B, M, *spatial) (one channel per modality, in the order of
its ``modalities``, co-registered on one grid) and an optional boolean ``present`` of shape
(B, M). Missing modalities (``present[b, m] == False``) are zeroed inside the network, whatever
the caller put there, and each architecture predicts from the rest. It returns logits
(B, num_classes); ``forward_all`` also returns per-modality logits (B, M, num_classes) for the
architectures that have them (decision, hybrid), so training can supervise each branch.

Factories are registered with :func:`register_fusion`: ``task = "fusion"`` (so classifier
contract tests skip them) and ``example_params`` for fusion contract tests.

The encoder is a small conv-norm-ReLU-pool stack built from MONAI's layer factories (2D and 3D
share code). Written here, not taken from MONAI's classifiers, because fusion needs the pooled
feature vector and per-branch heads, which MONAI's classifier networks do not expose.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from medanomaly.models._tagging import model_names_for_task, register_tagged

TASK = "fusion"


def register_fusion(name: str, example_params: dict[str, Any] | None = None, example_size: int = 16):
    """Register a fusion network factory under ``name`` (tags ``task``, ``model_name``, sizes)."""

    def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
        def build(
            modalities: Sequence[str] = ("CT", "MR"), num_classes: int = 2, spatial_dims: int = 2, **params: Any
        ) -> Any:
            modalities = tuple(str(m) for m in modalities)
            if spatial_dims not in (2, 3):
                raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
            if not modalities or len(set(modalities)) != len(modalities):
                raise ValueError(f"modalities must be distinct names, got {modalities}")
            if num_classes < 2:
                raise ValueError("need num_classes >= 2")
            module = factory(modalities=modalities, num_classes=num_classes, spatial_dims=spatial_dims, **params)
            module.task = TASK
            module.model_name = name
            return module

        return register_tagged(name, TASK, build, factory, example_params, example_size)

    return decorator


def fusion_names() -> list[str]:
    """Registered model names whose factory declares ``task == "fusion"``."""
    return model_names_for_task(TASK)


#: The encoders' default channels per level (each level ends in a 2x max pooling).
ENCODER_WIDTHS = (16, 32, 64)


def conv_encoder(in_channels: int, spatial_dims: int, widths: Sequence[int] = ENCODER_WIDTHS, dropout: float = 0.0):
    """Conv(3)-BatchNorm-ReLU-MaxPool blocks, then global max+average pooling: (B, C, *S) -> (B, 2*widths[-1])."""
    from monai.networks.layers import Act, Conv, Norm, Pool
    from torch import nn

    layers: list[nn.Module] = []
    cin = in_channels
    for width in widths:
        layers += [
            Conv[Conv.CONV, spatial_dims](cin, width, 3, padding=1, bias=False),
            Norm[Norm.BATCH, spatial_dims](width),
            Act[Act.RELU](inplace=True),
            Pool[Pool.MAX, spatial_dims](2),
        ]
        cin = width
    return _pooled_encoder_class()(nn.Sequential(*layers), spatial_dims, dropout)


@lru_cache(maxsize=1)
def _pooled_encoder_class():
    import torch
    from torch import nn

    class Encoder(nn.Module):
        """Conv stack, then global max and average pooling concatenated (2 x width features).

        Max pooling keeps a small lesion's response that averaging over the image would dilute.
        """

        def __init__(self, body: nn.Module, spatial_dims: int, dropout: float) -> None:
            super().__init__()
            self.body = body
            self.spatial_dims = spatial_dims
            self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.body(x).flatten(2)
            return self.drop(torch.cat([h.amax(dim=2), h.mean(dim=2)], dim=1))

    return Encoder


def feature_width(widths: Sequence[int]) -> int:
    """Length of the feature vector :func:`conv_encoder` returns."""
    return 2 * int(widths[-1])


@lru_cache(maxsize=1)
def make_base():
    """The fusion base class (built lazily so importing the registry does not import torch)."""
    import torch
    from torch import nn

    class FusionNet(nn.Module):
        """Base: stores modalities, validates and applies the presence mask."""

        has_branches = False

        def __init__(self, modalities: tuple[str, ...], num_classes: int, spatial_dims: int) -> None:
            super().__init__()
            self.modalities = tuple(modalities)
            self.num_classes = num_classes
            self.spatial_dims = spatial_dims
            self.in_channels = len(modalities)

        def mask_inputs(self, x: torch.Tensor, present: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            """Check shapes; return (x with missing channels zeroed, present as float (B, M))."""
            m = len(self.modalities)
            if x.ndim != 2 + self.spatial_dims or x.shape[1] != m:
                raise ValueError(
                    f"expected input (B, {m}, *{self.spatial_dims}D) for modalities {self.modalities}, "
                    f"got {tuple(x.shape)}"
                )
            if present is None:
                present = torch.ones(x.shape[0], m, dtype=torch.bool, device=x.device)
            present = present.to(device=x.device, dtype=torch.bool)
            if present.shape != (x.shape[0], m):
                raise ValueError(f"present must be (B, {m}), got {tuple(present.shape)}")
            if not bool(present.any(dim=1).all()):
                raise ValueError("every sample needs at least one modality present")
            pf = present.to(x.dtype)
            view = pf.reshape(*pf.shape, *([1] * self.spatial_dims))
            return x * view, pf

        def forward_all(self, x: torch.Tensor, present: torch.Tensor | None = None):
            """(logits (B, K), per-modality logits (B, M, K) or None)."""
            raise NotImplementedError

        def forward(self, x: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
            return self.forward_all(x, present)[0]

    return FusionNet


def masked_mean(values, present_f):
    """Mean over modalities (dim 1) of (B, M, K) values, counting only present ones (B, M float)."""
    weights = present_f.unsqueeze(-1)
    return (values * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
