"""MONAI DenseNet (2D or 3D) as a classifier (``monai.networks.nets.DenseNet``; 121 by default).

Example:
    >>> import torch
    >>> from medanomaly.registry import MODELS
    >>> net = MODELS.create("densenet", num_classes=3, init_features=8, growth_rate=4, block_config=(2, 2))
    >>> net(torch.zeros(1, 1, 32, 32)).shape
    torch.Size([1, 3])
"""

from __future__ import annotations

from collections.abc import Sequence

from medanomaly.models._classifier import register_classifier


#: Dense blocks and layers per block a config may ask for (DenseNet-264, the deepest published, has 4 blocks of at most
#: 64 layers; each block after the first halves the image).
MAX_BLOCKS, MAX_BLOCK_LAYERS = 8, 256


@register_classifier("densenet", example_params={"init_features": 8, "growth_rate": 4, "block_config": (2, 2)})
def densenet(in_channels: int, num_classes: int, spatial_dims: int = 2, init_features: int = 64,
             growth_rate: int = 32, block_config: Sequence[int] = (6, 12, 24, 16), dropout: float = 0.0):
    """MONAI DenseNet (defaults = DenseNet-121), random init; ``dropout`` inside dense layers."""
    from monai.networks.nets import DenseNet

    if not 1 <= len(block_config) <= MAX_BLOCKS or not all(1 <= int(n) <= MAX_BLOCK_LAYERS for n in block_config):
        raise ValueError(f"block_config must list 1 to {MAX_BLOCKS} dense blocks of 1 to {MAX_BLOCK_LAYERS} layers, "
                         f"got {list(block_config)[:MAX_BLOCKS + 1]}")  # a 10^6-layer block never finished building
    return DenseNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes,
                    init_features=init_features, growth_rate=growth_rate,
                    block_config=tuple(block_config), dropout_prob=dropout)
