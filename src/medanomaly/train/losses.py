"""Classification losses: cross-entropy, one-vs-rest BCE and focal loss, each with class weights.

All take logits (B, K) and integer targets (B,). Focal loss is MONAI's ``FocalLoss`` (softmax
form, Lin et al. 2017); BCE treats each class as a one-vs-rest sigmoid output (with K = 2 this is
ordinary binary cross-entropy on both columns).

Example:
    >>> import torch
    >>> loss = make_loss("focal", num_classes=3, gamma=2.0)
    >>> float(loss(torch.zeros(4, 3), torch.tensor([0, 1, 2, 0]))) > 0
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

LOSSES = ("ce", "bce", "focal")


def make_loss(name: str, num_classes: int, class_weights: Sequence[float] | None = None,
              gamma: float = 2.0, label_smoothing: float = 0.0) -> Callable:
    """A loss ``f(logits, targets) -> scalar``.

    Args:
        name: ``"ce"``, ``"bce"`` or ``"focal"``.
        num_classes: K.
        class_weights: per-class weights (e.g. :func:`medanomaly.data.sampling.class_weights`).
        gamma: focal-loss focusing parameter (0 = weighted cross-entropy).
        label_smoothing: cross-entropy label smoothing.
    """
    import torch
    import torch.nn.functional as F

    weight = None if class_weights is None else torch.as_tensor(list(class_weights), dtype=torch.float32)
    if weight is not None and len(weight) != num_classes:
        raise ValueError(f"{len(weight)} class weights for {num_classes} classes")
    if name == "ce":
        return torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
    if name == "bce":
        def bce(logits, targets):
            onehot = F.one_hot(targets, num_classes).to(logits.dtype)
            per = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
            if weight is not None:
                per = per * weight.to(logits.device)
            return per.sum(dim=1).mean()

        return bce
    if name == "focal":
        from monai.losses import FocalLoss

        focal = FocalLoss(to_onehot_y=True, use_softmax=True, gamma=gamma, weight=weight, reduction="mean")

        def focal_loss(logits, targets):
            return focal(logits, targets[:, None]) * num_classes

        return focal_loss
    raise ValueError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")
