"""Tiny models trained in seconds on a toy task where the evidence is localised.

Abnormal = a bright Gaussian blob somewhere on noise, normal = noise only. A faithful explanation
must point at the blob; the blob's mask is the ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn


def blob_sample(rng: np.random.Generator, size: int, dims: int, abnormal: bool, radius: float = 2.0):
    """(image, mask) float32/uint8 arrays of shape (size,)*dims."""
    img = rng.normal(0.0, 0.3, (size,) * dims).astype(np.float32)
    mask = np.zeros((size,) * dims, np.uint8)
    if abnormal:
        centre = rng.uniform(radius + 1, size - radius - 2, dims)
        grid = np.indices((size,) * dims).astype(np.float32)
        d2 = sum((g - c) ** 2 for g, c in zip(grid, centre))
        img += 1.5 * np.exp(-d2 / (2 * radius**2)).astype(np.float32)
        mask[d2 <= (1.5 * radius) ** 2] = 1
    return img, mask


def tiny_cnn(dims: int, width: int = 8) -> nn.Module:
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    pool = nn.AdaptiveMaxPool2d if dims == 2 else nn.AdaptiveMaxPool3d
    return nn.Sequential(
        conv(1, width, 3, padding=1), nn.ReLU(),
        conv(width, width, 3, padding=1), nn.ReLU(),
        pool(1), nn.Flatten(), nn.Linear(width, 2),
    )  # fmt: skip


@dataclass
class Toy:
    model: nn.Module
    dims: int
    size: int
    accuracy: float

    def sample(self, seed: int, abnormal: bool = True):
        return blob_sample(np.random.default_rng(seed), self.size, self.dims, abnormal)


def _train(dims: int, size: int, steps: int, seed: int = 0) -> Toy:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = tiny_cnn(dims)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        labels = rng.integers(0, 2, 16)
        xs = np.stack([blob_sample(rng, size, dims, bool(lab))[0] for lab in labels])[:, None]
        loss = nn.functional.cross_entropy(model(torch.from_numpy(xs)), torch.from_numpy(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    test_rng = np.random.default_rng(seed + 1000)
    labels = test_rng.integers(0, 2, 64)
    xs = np.stack([blob_sample(test_rng, size, dims, bool(lab))[0] for lab in labels])[:, None]
    with torch.no_grad():
        acc = float((model(torch.from_numpy(xs)).argmax(1).numpy() == labels).mean())
    return Toy(model, dims, size, acc)


@pytest.fixture(scope="session")
def toy2d() -> Toy:
    return _train(dims=2, size=24, steps=80)


@pytest.fixture(scope="session")
def toy3d() -> Toy:
    return _train(dims=3, size=16, steps=60)
