"""Early fusion: modalities stacked as channels of one CNN (the seed's dual-channel CNN), 2D or 3D.

Each modality is one input channel; a missing modality is zeroed and the network also receives
the presence vector as constant indicator channels, so with modality-dropout training it learns
to predict from what is there. With one modality it is the single-modality baseline.

Example:
    >>> import torch
    >>> from medanomaly.registry import MODELS
    >>> net = MODELS.create("fusion_early", modalities=("CT", "MR"), widths=(4, 8))
    >>> net(torch.zeros(2, 2, 32, 32)).shape
    torch.Size([2, 2])
"""

from __future__ import annotations

from collections.abc import Sequence

from medanomaly.models.fusion_common import ENCODER_WIDTHS, conv_encoder, feature_width, make_base, register_fusion


@register_fusion("fusion_early", example_params={"widths": (4, 8)})
def fusion_early(
    modalities: tuple[str, ...],
    num_classes: int = 2,
    spatial_dims: int = 2,
    widths: Sequence[int] = ENCODER_WIDTHS,
    dropout: float = 0.0,
):
    """Early (input-level) fusion: one encoder over stacked modalities + presence channels."""
    import torch
    from torch import nn

    base = make_base()

    class EarlyFusion(base):
        def __init__(self) -> None:
            super().__init__(modalities, num_classes, spatial_dims)
            m = len(modalities)
            self.encoder = conv_encoder(2 * m if m > 1 else 1, spatial_dims, widths, dropout)
            self.head = nn.Linear(feature_width(widths), num_classes)

        def forward_all(self, x, present=None):
            x, pf = self.mask_inputs(x, present)
            if len(self.modalities) > 1:
                indicators = pf.reshape(*pf.shape, *([1] * self.spatial_dims)).expand_as(x)
                x = torch.cat([x, indicators], dim=1)
            return self.head(self.encoder(x)), None

    return EarlyFusion()
