"""Losses, optimisers, schedules and penalties against their definitions."""

from __future__ import annotations

import math

import pytest
import torch

from medanomaly.train.losses import make_loss
from medanomaly.train.optim import make_optimizer, make_scheduler
from medanomaly.train.regularise import set_dropout, weight_penalty

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [0.0, 0.0, 4.0]])
TARGETS = torch.tensor([0, 2, 1, 0])


def test_train_ce_and_class_weights_match_torch() -> None:
    w = [1.0, 2.0, 0.5]
    expected = torch.nn.functional.cross_entropy(LOGITS, TARGETS, weight=torch.tensor(w))
    assert torch.isclose(make_loss("ce", 3, w)(LOGITS, TARGETS), expected)


def test_train_focal_loss_definition() -> None:
    p_t = torch.softmax(LOGITS, 1)[torch.arange(4), TARGETS]
    expected = (-(1 - p_t) ** 2 * torch.log(p_t)).mean()
    assert torch.isclose(make_loss("focal", 3, gamma=2.0)(LOGITS, TARGETS), expected, atol=1e-5)
    # gamma = 0 is cross-entropy
    ce = torch.nn.functional.cross_entropy(LOGITS, TARGETS)
    assert torch.isclose(make_loss("focal", 3, gamma=0.0)(LOGITS, TARGETS), ce, atol=1e-5)


def test_train_bce_is_one_vs_rest() -> None:
    onehot = torch.nn.functional.one_hot(TARGETS, 3).float()
    expected = torch.nn.functional.binary_cross_entropy_with_logits(LOGITS, onehot, reduction="sum") / 4
    assert torch.isclose(make_loss("bce", 3)(LOGITS, TARGETS), expected)
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("hinge", 3)


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_train_optimizers_and_cosine_schedule(name: str) -> None:
    net = torch.nn.Linear(2, 2)
    opt = make_optimizer(name, net.parameters(), lr=0.1)
    sched = make_scheduler("cosine", opt, total_steps=10, warmup_steps=2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.05) and lrs[1] == pytest.approx(0.1)  # linear warm-up
    assert lrs[-1] < 0.01 and all(a >= b for a, b in zip(lrs[1:], lrs[2:], strict=False))
    step = make_scheduler("step", make_optimizer(name, net.parameters(), lr=1.0), 10, steps_per_epoch=1,
                          step_epochs=3, gamma=0.5)
    assert math.isclose(step.lr_lambdas[0](6), 0.25)


def test_train_penalties_and_dropout() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.1), torch.nn.Linear(2, 1))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(-0.5)
    # weights only (6 entries), biases not penalised
    assert float(weight_penalty(net, l1=1.0).detach()) == pytest.approx(3.0)
    assert float(weight_penalty(net, l2=2.0).detach()) == pytest.approx(3.0)
    assert set_dropout(net, 0.4) == 1 and net[1].p == 0.4
