"""MONAI ResNet (2D or 3D) as a classifier (``monai.networks.nets.ResNet``).

Example:
    >>> import torch
    >>> from medanomaly.registry import MODELS
    >>> net = MODELS.create("resnet", in_channels=1, num_classes=2, depth=10, widen_factor=0.125)
    >>> net(torch.zeros(1, 1, 32, 32)).shape
    torch.Size([1, 2])
"""

from __future__ import annotations

from medanomaly.models._classifier import register_classifier

#: depth -> (block, layers)
DEPTHS = {10: ("basic", [1, 1, 1, 1]), 18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]),
          50: ("bottleneck", [3, 4, 6, 3])}


@register_classifier("resnet", example_params={"depth": 10, "widen_factor": 0.125})
def resnet(in_channels: int, num_classes: int, spatial_dims: int = 2, depth: int = 18,
           widen_factor: float = 1.0, dropout: float = 0.0, conv1_stride: int = 2):
    """MONAI ResNet-``depth`` (10, 18, 34, 50), random init; ``dropout`` before the final layer."""
    from monai.networks.nets import ResNet
    from torch import nn

    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {sorted(DEPTHS)}, got {depth}")
    block, layers = DEPTHS[depth]
    net = ResNet(block, layers, [64, 128, 256, 512], spatial_dims=spatial_dims,
                 n_input_channels=in_channels, conv1_t_stride=conv1_stride, widen_factor=widen_factor,
                 num_classes=num_classes)
    if dropout:
        net.fc = nn.Sequential(nn.Dropout(dropout), net.fc)
    return net
