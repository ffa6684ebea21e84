"""DRAEM-style reconstructive + discriminative network for normal-only anomaly detection.

Registered as ``anomaly_draem``. Two MONAI networks in one module: ``recon``, the 1-channel
autoencoder of :mod:`medanomaly.models.anomaly_autoencoder`, trained to give back the normal slice
from one with a synthetic anomaly in it; and ``disc``, a MONAI ``UNet`` that reads the slice and
its reconstruction side by side (2 channels) and segments what differs (1 logit per pixel).
``forward(x)`` is the anomaly map, the discriminator's probability (0..1) per pixel, so the whole
method is one exportable graph; ``parts(x)`` gives (reconstruction, logits) for training.
After Zavrtanik et al., "DRAEM: a discriminatively trained reconstruction embedding for surface
anomaly detection" (ICCV 2021); written here from the paper, no weights are downloaded.

Example:
    >>> import torch
    >>> net = anomaly_draem(channels=(4, 8), disc_channels=(4, 8))
    >>> net(torch.zeros(1, 1, 32, 32)).shape
    torch.Size([1, 1, 32, 32])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medanomaly.registry import MODELS

__all__ = ["anomaly_draem"]


def anomaly_draem(channels: Sequence[int] = (16, 32, 64), disc_channels: Sequence[int] = (16, 32, 64),
                  num_res_units: int = 1) -> Any:  # fmt: skip
    """The reconstructive autoencoder (``channels``) and the discriminative UNet (``disc_channels``), 2D."""
    import torch
    from monai.networks.nets import UNet

    from medanomaly.models.anomaly_autoencoder import anomaly_autoencoder

    class AnomalyDraem(torch.nn.Module):
        task = "anomaly"

        def __init__(self) -> None:
            super().__init__()
            self.channels, self.disc_channels = tuple(channels), tuple(disc_channels)
            self.recon = anomaly_autoencoder(channels=channels, num_res_units=num_res_units)
            self.disc = UNet(spatial_dims=2, in_channels=2, out_channels=1, channels=tuple(disc_channels),
                             strides=(2,) * (len(disc_channels) - 1), num_res_units=num_res_units)  # fmt: skip

        def parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """(reconstruction (N, 1, S, S), discriminator logits (N, 1, S, S)) of slices ``x`` (N, 1, S, S)."""
            rec = self.recon(x)
            return rec, self.disc(torch.cat([x, rec], dim=1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.parts(x)[1])

    return AnomalyDraem()


MODELS.register("anomaly_draem")(anomaly_draem)
