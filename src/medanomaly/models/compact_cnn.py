"""Compact CNN: convolution + pooling blocks, then fully connected layers (2D or 3D).

The small classifier the seed describes, fast enough to train on a CPU in minutes. With
``separable=True`` (registered as ``compact_cnn_dw``) each 3x3 convolution is depthwise-separable
(a per-channel 3x3 convolution then a 1x1 pointwise one), cutting multiply-adds about 8x for
wide layers, as in MobileNet.

Written here rather than taken from MONAI because MONAI has no plain conv-pool-FC classifier
with a depthwise-separable option; it is built from MONAI's layer factories so 2D and 3D share code.

Example:
    >>> import torch
    >>> from medanomaly.registry import MODELS
    >>> net = MODELS.create("compact_cnn", in_channels=1, num_classes=3, widths=(4, 8))
    >>> net(torch.zeros(2, 1, 32, 32)).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

from collections.abc import Sequence

from medanomaly.models._classifier import register_classifier


def _conv_block(dims: int, cin: int, cout: int, separable: bool, stride: int = 1):
    from monai.networks.layers import Act, Conv, Norm
    from torch import nn

    conv = Conv[Conv.CONV, dims]
    if separable and cin > 1:
        layers = [conv(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False),
                  conv(cin, cout, 1, bias=False)]
    else:
        layers = [conv(cin, cout, 3, stride=stride, padding=1, bias=False)]
    return nn.Sequential(*layers, Norm[Norm.BATCH, dims](cout), Act[Act.RELU](inplace=True))




#: Most conv blocks (each after the first halves the image: 2^13 is the longest side the resize limit allows).
MAX_LEVELS = 14


def build_compact_cnn(in_channels: int, num_classes: int, spatial_dims: int = 2,
                      widths: Sequence[int] = (16, 32, 64, 128), hidden: int = 64,
                      dropout: float = 0.2, separable: bool = False, stem_stride: int = 2):
    """Build the network.

    Args:
        in_channels: input channels; num_classes: output logits; spatial_dims: 2 or 3.
        widths: channels of the conv blocks; each block after the first is preceded by 2x max-pooling.
        hidden: units of the hidden fully connected layer (0 = none).
        dropout: dropout before each fully connected layer.
        separable: depthwise-separable convolutions (after the stem).
        stem_stride: stride of the first convolution (2 halves the input at once).
    """
    from monai.networks.layers import Pool
    from torch import nn

    if not 1 <= len(widths) <= MAX_LEVELS:  # each level halves the image: more cannot be used, and a config's
        raise ValueError(f"widths must list 1 to {MAX_LEVELS} levels, got {len(widths)}")  # 10^6 took minutes to build
    layers: list = [_conv_block(spatial_dims, in_channels, widths[0], False, stride=stem_stride)]
    for cin, cout in zip(widths[:-1], widths[1:], strict=True):
        layers += [Pool[Pool.MAX, spatial_dims](2), _conv_block(spatial_dims, cin, cout, separable)]
    layers += [Pool[Pool.ADAPTIVEAVG, spatial_dims](1), nn.Flatten()]
    head: list = []
    features = widths[-1]
    if hidden:
        head += [nn.Dropout(dropout), nn.Linear(features, hidden), nn.ReLU(inplace=True)]
        features = hidden
    head += [nn.Dropout(dropout), nn.Linear(features, num_classes)]
    return nn.Sequential(nn.Sequential(*layers), nn.Sequential(*head))


@register_classifier("compact_cnn", example_params={"widths": (4, 8), "hidden": 8})
def compact_cnn(in_channels: int, num_classes: int, spatial_dims: int = 2, **params):
    """Compact conv + pooling + FC classifier (see :func:`build_compact_cnn` for parameters)."""
    return build_compact_cnn(in_channels, num_classes, spatial_dims, **params)


@register_classifier("compact_cnn_dw", example_params={"widths": (4, 8), "hidden": 8})
def compact_cnn_dw(in_channels: int, num_classes: int, spatial_dims: int = 2, **params):
    """Compact CNN with depthwise-separable convolutions (see :func:`build_compact_cnn`)."""
    params.setdefault("separable", True)
    return build_compact_cnn(in_channels, num_classes, spatial_dims, **params)
