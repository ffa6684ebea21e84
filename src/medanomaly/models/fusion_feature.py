"""Feature-level fusion: one encoder per modality, features concatenated or attention-weighted.

``mode="concat"``: the per-modality feature vectors (zeros for a missing modality) and the
presence vector are concatenated and classified by a small MLP. ``mode="attention"``: each
present modality's features get a learned score; a softmax over the *present* modalities weights
their sum (a missing modality gets no weight), so the head sees one feature vector whatever is
missing. The attention weights of the last forward pass are kept in ``last_attention_``.

Example:
    >>> import torch
    >>> from medanomaly.registry import MODELS
    >>> net = MODELS.create("fusion_feature", modalities=("CT", "MR"), widths=(4, 8), mode="attention")
    >>> net(torch.zeros(2, 2, 32, 32), torch.tensor([[True, True], [True, False]])).shape
    torch.Size([2, 2])
"""

from __future__ import annotations

from collections.abc import Sequence

from medanomaly.models.fusion_common import ENCODER_WIDTHS, conv_encoder, feature_width, make_base, register_fusion

MODES = ("concat", "attention")


def build_feature_fuser(n_modalities: int, width: int, mode: str):
    """Module mapping per-modality features (B, M, F) and presence (B, M) to one vector."""
    import torch
    from torch import nn

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")

    class FeatureFuser(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mode = mode
            self.out_features = n_modalities * width + n_modalities if mode == "concat" else width
            if mode == "attention":
                self.score = nn.Sequential(nn.Linear(width, width // 2 or 1), nn.Tanh(), nn.Linear(width // 2 or 1, 1))
            self.last_attention_ = None

        def forward(self, feats, pf):
            feats = feats * pf.unsqueeze(-1)
            if self.mode == "concat":
                return torch.cat([feats.flatten(1), pf], dim=1)
            scores = self.score(feats).squeeze(-1).masked_fill(pf == 0, float("-inf"))
            weights = torch.softmax(scores, dim=1)
            self.last_attention_ = weights.detach()
            return (weights.unsqueeze(-1) * feats).sum(dim=1)

    return FeatureFuser()


@register_fusion("fusion_feature", example_params={"widths": (4, 8)})
def fusion_feature(
    modalities: tuple[str, ...],
    num_classes: int = 2,
    spatial_dims: int = 2,
    widths: Sequence[int] = ENCODER_WIDTHS,
    mode: str = "concat",
    hidden: int = 32,
    dropout: float = 0.0,
):
    """Feature-level fusion: per-modality encoders, concat or attention, then an MLP head."""
    import torch
    from torch import nn

    base = make_base()

    class FeatureFusion(base):
        def __init__(self) -> None:
            super().__init__(modalities, num_classes, spatial_dims)
            self.encoders = nn.ModuleList(conv_encoder(1, spatial_dims, widths, dropout) for _ in modalities)
            self.fuser = build_feature_fuser(len(modalities), feature_width(widths), mode)
            self.head = nn.Sequential(
                nn.Linear(self.fuser.out_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes)
            )

        def forward_all(self, x, present=None):
            x, pf = self.mask_inputs(x, present)
            feats = torch.stack([enc(x[:, i : i + 1]) for i, enc in enumerate(self.encoders)], dim=1)
            return self.head(self.fuser(feats, pf)), None

    return FeatureFusion()
