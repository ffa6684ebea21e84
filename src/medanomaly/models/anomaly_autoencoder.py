"""Convolutional autoencoder for normal-only anomaly detection (MONAI ``AutoEncoder``).

Registered as ``anomaly_autoencoder``. ``features(x)`` returns the encoder's intermediate maps
(after the first two strided blocks, pooled to the same size), which the PaDiM-style method of
:mod:`medanomaly.anomaly.methods` models per position: the encoder is trained self-supervised
(reconstruction of normal slices), never from downloaded weights.

Example:
    >>> import torch
    >>> net = anomaly_autoencoder(channels=(4, 8, 8))
    >>> net(torch.zeros(1, 1, 32, 32)).shape
    torch.Size([1, 1, 32, 32])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medanomaly.registry import MODELS

__all__ = ["anomaly_autoencoder"]


def anomaly_autoencoder(channels: Sequence[int] = (16, 32, 64), strides: Sequence[int] | None = None,
                        spatial_dims: int = 2, num_res_units: int = 1, dropout: float = 0.0) -> Any:  # fmt: skip
    """A 1-channel MONAI AutoEncoder with a ``features`` method (see the module docstring)."""
    import torch
    from monai.networks.nets import AutoEncoder

    class AnomalyAutoEncoder(AutoEncoder):
        task = "anomaly"

        def features(self, x: torch.Tensor) -> torch.Tensor:
            """Encoder maps of the first two blocks, pooled to the second one's size, concatenated."""
            maps = []
            for i, block in enumerate(self.encode):
                x = block(x)
                maps.append(x)
                if i == 1:
                    break
            size = tuple(int(s) for s in maps[-1].shape[2:])  # constant sizes: exportable to ONNX
            pool = torch.nn.functional.adaptive_avg_pool2d if spatial_dims == 2 else torch.nn.functional.adaptive_avg_pool3d
            return torch.cat([pool(m, size) for m in maps], dim=1)

    strides = tuple(strides) if strides is not None else (2,) * len(channels)
    return AnomalyAutoEncoder(spatial_dims=spatial_dims, in_channels=1, out_channels=1, channels=tuple(channels),
                              strides=strides, num_res_units=num_res_units, dropout=dropout)  # fmt: skip


MODELS.register("anomaly_autoencoder")(anomaly_autoencoder)
