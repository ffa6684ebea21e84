"""Explicit L1 / L2 weight penalties (added to the loss) and dropout control.

L2 can also be applied as optimiser weight decay (``train.weight_decay``); the explicit form here
works with every optimiser and is what ``train.l2`` means. Biases and normalisation parameters
(1-D tensors) are not penalised.

Example:
    >>> import torch
    >>> net = torch.nn.Linear(2, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = net.weight.fill_(2.0)
    >>> float(weight_penalty(net, l1=1.0).detach()), float(weight_penalty(net, l2=1.0).detach())
    (4.0, 8.0)
"""

from __future__ import annotations


def penalised_parameters(model) -> list:
    """Weights of conv and linear layers (parameters with 2 or more dimensions)."""
    return [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]


def weight_penalty(model, l1: float = 0.0, l2: float = 0.0, params: list | None = None):
    """``l1 * sum|w| + l2 * sum w^2`` over the penalised weights (a scalar tensor)."""
    import torch

    params = penalised_parameters(model) if params is None else params
    total = torch.zeros((), device=params[0].device if params else "cpu")
    if l1:
        total = total + l1 * sum(p.abs().sum() for p in params)
    if l2:
        total = total + l2 * sum(p.pow(2).sum() for p in params)
    return total


def set_dropout(model, p: float) -> int:
    """Set the probability of every dropout layer in ``model``; returns how many were changed."""
    from torch import nn

    n = 0
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = float(p)
            n += 1
    return n
