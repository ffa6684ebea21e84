"""MONAI EfficientNet (2D or 3D) as a classifier (``monai.networks.nets.EfficientNetBN``).

Always randomly initialised (``pretrained=False``): no weights are downloaded at run time.

Example:
    >>> import torch
    >>> from medanomaly.registry import MODELS
    >>> net = MODELS.create("efficientnet", num_classes=2)
    >>> net(torch.zeros(1, 1, 32, 32)).shape
    torch.Size([1, 2])
"""

from __future__ import annotations

from medanomaly.models._classifier import register_classifier


@register_classifier("efficientnet", example_params={"variant": "b0"}, example_size=32)
def efficientnet(in_channels: int, num_classes: int, spatial_dims: int = 2, variant: str = "b0"):
    """MONAI EfficientNet-``variant`` (b0..b7), random init."""
    from monai.networks.nets import EfficientNetBN

    return EfficientNetBN(f"efficientnet-{variant}", pretrained=False, progress=False,
                          spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes)
