"""Decision-level fusion: one classifier per modality, their outputs combined.

``combine``: ``"mean"`` (average of the present modalities' logits), ``"weighted"`` (learned
per-modality voting weights, renormalised over the present modalities) or ``"stacker"`` (a learned
linear layer over the branch logits and the presence vector). Each branch is also returned by
``forward_all`` so training supervises every classifier on its own modality.

Example:
    >>> import torch
    >>> from medanomaly.registry import MODELS
    >>> net = MODELS.create("fusion_decision", modalities=("CT", "MR"), widths=(4, 8), combine="weighted")
    >>> logits, branches = net.forward_all(torch.zeros(2, 2, 32, 32))
    >>> tuple(logits.shape), tuple(branches.shape)
    ((2, 2), (2, 2, 2))
"""

from __future__ import annotations

from collections.abc import Sequence

from medanomaly.models.fusion_common import ENCODER_WIDTHS, conv_encoder, feature_width, make_base, masked_mean, register_fusion

COMBINERS = ("mean", "weighted", "stacker")


def build_combiner(n_modalities: int, num_classes: int, combine: str):
    """Module mapping branch logits (B, M, K) and presence (B, M) to fused logits (B, K)."""
    import torch
    from torch import nn

    if combine not in COMBINERS:
        raise ValueError(f"combine must be one of {COMBINERS}, got {combine!r}")

    class Combiner(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.combine = combine
            if combine == "weighted":
                self.vote = nn.Parameter(torch.zeros(n_modalities))
            elif combine == "stacker":
                self.stack = nn.Linear(n_modalities * num_classes + n_modalities, num_classes)

        def forward(self, branch_logits, pf):
            if self.combine == "mean":
                return masked_mean(branch_logits, pf)
            if self.combine == "weighted":
                w = torch.softmax(self.vote.expand_as(pf).masked_fill(pf == 0, float("-inf")), dim=1)
                return (w.unsqueeze(-1) * branch_logits).sum(dim=1)
            masked = branch_logits * pf.unsqueeze(-1)
            return self.stack(torch.cat([masked.flatten(1), pf], dim=1))

    return Combiner()


@register_fusion("fusion_decision", example_params={"widths": (4, 8)})
def fusion_decision(
    modalities: tuple[str, ...],
    num_classes: int = 2,
    spatial_dims: int = 2,
    widths: Sequence[int] = ENCODER_WIDTHS,
    combine: str = "mean",
    dropout: float = 0.0,
):
    """Decision-level fusion: per-modality classifiers combined by mean, weighted vote or stacker."""
    import torch
    from torch import nn

    base = make_base()

    class DecisionFusion(base):
        has_branches = True

        def __init__(self) -> None:
            super().__init__(modalities, num_classes, spatial_dims)
            self.encoders = nn.ModuleList(conv_encoder(1, spatial_dims, widths, dropout) for _ in modalities)
            self.heads = nn.ModuleList(nn.Linear(feature_width(widths), num_classes) for _ in modalities)
            self.combiner = build_combiner(len(modalities), num_classes, combine)

        def forward_all(self, x, present=None):
            x, pf = self.mask_inputs(x, present)
            branches = torch.stack(
                [head(enc(x[:, i : i + 1])) for i, (enc, head) in enumerate(zip(self.encoders, self.heads, strict=False))], dim=1
            )
            return self.combiner(branches, pf), branches

    return DecisionFusion()
