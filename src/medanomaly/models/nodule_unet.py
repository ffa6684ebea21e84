"""``nodule_unet``: a small anisotropic 3D U-Net (MONAI ``DynUNet``) for lung-nodule heatmaps.

Input: one channel, CT windowed to [0, 1] on the detector grid (default 1.25 x 1.25 x 5 mm).
Output: one channel of logits; ``sigmoid`` gives the per-voxel nodule probability (higher =
more abnormal). The first level convolves in-plane only (``1x3x3``) and the first down-sampling
is in-plane only, because thick-slice CT (5 mm) has 4x coarser z than x/y. Batch norm rather than
instance norm, so a window's output does not depend on which window it was computed in
(sliding-window inference over different window sizes gives the same map).

Input sizes must be divisible by ``(2, 4, 4)`` (z, y, x) with the default three levels.

Example:
    >>> import torch
    >>> net = nodule_unet(filters=(4, 8, 16)).eval()
    >>> net(torch.zeros(1, 1, 8, 32, 32)).shape
    torch.Size([1, 1, 8, 32, 32])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medanomaly.registry import MODELS

#: Total down-sampling factor (z, y, x) of the default network: input sizes must be multiples.
DIVISOR = (2, 4, 4)


@MODELS.register("nodule_unet")
def nodule_unet(filters: Sequence[int] = (8, 16, 32), in_channels: int = 1, dropout: float = 0.0) -> Any:
    """Build the nodule heatmap network (MONAI DynUNet, 3 levels, anisotropic kernels).

    Args:
        filters: channels per level (3 values).
        in_channels: input channels (1: one CT window).
        dropout: dropout probability inside the blocks.
    """
    from monai.networks.nets import DynUNet

    if len(filters) != 3:
        raise ValueError(f"nodule_unet needs 3 filter sizes, got {list(filters)}")
    return DynUNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=1,
        kernel_size=[[1, 3, 3], [3, 3, 3], [3, 3, 3]],
        strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]],
        upsample_kernel_size=[[1, 2, 2], [2, 2, 2]],
        filters=list(filters),
        dropout=dropout or None,
        norm_name="batch",
    )
