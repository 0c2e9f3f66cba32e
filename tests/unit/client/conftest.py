"""Synthetic, easily separable MNIST-shaped data for the client tests."""

from __future__ import annotations

import numpy as np
import pytest


def make_separable(count: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` noisy uint8 images whose class is a bright 5x5 patch at one of 10 spots."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=count).astype(np.int64)
    images = rng.integers(0, 60, size=(count, 28, 28)).astype(np.uint8)
    for index, label in enumerate(labels):
        row = 4 if label < 5 else 18
        col = 1 + 5 * (label % 5)
        images[index, row : row + 5, col : col + 5] = rng.integers(200, 256, size=(5, 5))
    return images, labels


@pytest.fixture
def separable() -> tuple[np.ndarray, np.ndarray]:
    return make_separable(200, seed=1)


@pytest.fixture
def separable_holdout() -> tuple[np.ndarray, np.ndarray]:
    return make_separable(100, seed=2)
