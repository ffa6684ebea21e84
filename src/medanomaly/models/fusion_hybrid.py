"""Hybrid fusion: feature-level and decision-level fusion in one network.

Per-modality encoders feed (a) a feature-fusion head (concat or attention, as in
``fusion_feature``) and (b) per-modality classifiers combined as in ``fusion_decision``. The
final logits mix the two with a learned gate: ``g * feature + (1 - g) * decision``. Branch logits
are returned by ``forward_all`` for supervision; a missing modality drops out of both paths.

Example:
    >>> import torch
    >>> from medanomaly.registry import MODELS
    >>> net = MODELS.create("fusion_hybrid", modalities=("CT", "MR"), widths=(4, 8))
    >>> net(torch.zeros(2, 2, 32, 32)).shape
    torch.Size([2, 2])
"""

from __future__ import annotations

from collections.abc import Sequence

from medanomaly.models.fusion_common import ENCODER_WIDTHS, conv_encoder, feature_width, make_base, register_fusion
from medanomaly.models.fusion_decision import build_combiner
from medanomaly.models.fusion_feature import build_feature_fuser


@register_fusion("fusion_hybrid", example_params={"widths": (4, 8)})
def fusion_hybrid(
    modalities: tuple[str, ...],
    num_classes: int = 2,
    spatial_dims: int = 2,
    widths: Sequence[int] = ENCODER_WIDTHS,
    mode: str = "attention",
    combine: str = "mean",
    hidden: int = 32,
    dropout: float = 0.0,
):
    """Hybrid fusion: gated mix of a feature-fusion head and a decision-level combination."""
    import torch
    from torch import nn

    base = make_base()

    class HybridFusion(base):
        has_branches = True

        def __init__(self) -> None:
            super().__init__(modalities, num_classes, spatial_dims)
            m = len(modalities)
            self.encoders = nn.ModuleList(conv_encoder(1, spatial_dims, widths, dropout) for _ in modalities)
            self.fuser = build_feature_fuser(m, feature_width(widths), mode)
            self.feature_head = nn.Sequential(
                nn.Linear(self.fuser.out_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes)
            )
            self.heads = nn.ModuleList(nn.Linear(feature_width(widths), num_classes) for _ in modalities)
            self.combiner = build_combiner(m, num_classes, combine)
            self.gate = nn.Parameter(torch.zeros(1))

        def forward_all(self, x, present=None):
            x, pf = self.mask_inputs(x, present)
            feats = torch.stack([enc(x[:, i : i + 1]) for i, enc in enumerate(self.encoders)], dim=1)
            feature_logits = self.feature_head(self.fuser(feats, pf))
            branches = torch.stack([head(feats[:, i]) for i, head in enumerate(self.heads)], dim=1)
            decision_logits = self.combiner(branches, pf)
            g = torch.sigmoid(self.gate)
            return g * feature_logits + (1 - g) * decision_logits, branches

    return HybridFusion()
