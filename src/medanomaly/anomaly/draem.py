"""``draem``: a reconstructive and a discriminative network trained on synthetic anomalies (DRAEM-style).

Registered in :data:`medanomaly.anomaly.methods.METHODS`. The network is
:func:`medanomaly.models.anomaly_draem.anomaly_draem`: an autoencoder learns to give back the normal slice
from one that carries a synthetic anomaly, and a UNet reading the slice beside its reconstruction learns
to segment the anomaly. The training anomalies are irregular blobs (foreign-patch blends and intensity
shifts, :func:`medanomaly.anomaly.synthetic.make_blobs`, new every batch), another family than the
validation's ellipses and CutPaste patches (:func:`~medanomaly.anomaly.synthetic.make_synthetic`), which
choose the epoch as for the autoencoder: so the selection measures how far the learning carries to
anomalies it was not trained on, never the test. Map = the discriminator's probability (0..1) per pixel.
Everything it trains on is normal data with SYNTHETIC anomalies; no lesion label is used.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medanomaly.anomaly.methods import METHODS, AutoencoderMethod, levels

__all__ = ["DraemMethod"]


@METHODS.register("draem")
class DraemMethod(AutoencoderMethod):
    """DRAEM-style method (see the module docstring); ``ssim_weight`` weighs the reconstruction's SSIM loss."""

    name, model_name = "draem", "anomaly_draem"

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64), disc_channels: tuple[int, ...] = (16, 32, 64),
                 ssim_weight: float = 0.5, num_res_units: int = 1) -> None:  # fmt: skip
        self.net = self._create_net(channels, ssim_weight, num_res_units,
                                    disc_channels=levels(self.name, "disc_channels", disc_channels))

    def _reconstruction_net(self) -> Any:
        return self.net.recon

    def check_grid(self, size: int) -> None:
        """The autoencoder's check (:meth:`AutoencoderMethod.check_grid`), then the whole network's: the
        discriminator's levels on ``size`` x ``size`` slices (one ConfigError naming ``data.size``)."""
        import copy

        from medanomaly.models.limits import meta_output_shape

        super().check_grid(size)
        meta_output_shape(copy.deepcopy(self.net).to("meta"), self.model_name, (2, 1, size, size), "data.size")

    def _map(self, images: np.ndarray) -> np.ndarray:
        """The discriminator's probability per pixel (N, S, S): the whole network's output."""
        return self._net_output(images)

    def _losses(self) -> dict[str, Any]:
        from monai.losses import FocalLoss

        return {**super()._losses(), "focal": FocalLoss(gamma=2.0, use_softmax=False)}

    def _step(self, x: np.ndarray, masks: np.ndarray, rng: np.random.Generator, losses: dict[str, Any]) -> Any:
        """The loss of one batch: the reconstruction of the slices with blobs against the clean slices (L1 +
        weighted SSIM), and the discriminator's focal loss on where the blobs are."""
        import torch

        from medanomaly.anomaly.synthetic import make_blobs

        bad, where = make_blobs(x, masks, rng)
        clean = torch.from_numpy(x[:, None])
        rec, logits = self.net.parts(torch.from_numpy(bad[:, None]))
        loss = (rec - clean).abs().mean() + self.ssim_weight * losses["ssim"](rec.clamp(0, 1), clean)
        return loss + losses["focal"](logits, torch.from_numpy(where[:, None].astype(np.float32)))
