"""Exponential backoff with full jitter, as pure arithmetic."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from fedlearn.errors import ConfigError

__all__ = ["RetryPolicy", "backoff_delays"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Delays grow as ``initial_s * multiplier**n`` up to ``max_delay_s``, for ``total_s``."""

    initial_s: float = 0.2
    multiplier: float = 2.0
    max_delay_s: float = 5.0
    total_s: float = 60.0

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.multiplier < 1 or self.max_delay_s < self.initial_s:
            raise ConfigError(f"invalid retry policy {self}")


def backoff_delays(policy: RetryPolicy, *, rng: np.random.Generator) -> Iterator[float]:
    """Sleep lengths for successive retries, stopping once ``total_s`` would be exceeded.

    Jitter (each delay uniform in ``[cap/2, cap]``) keeps many clients that
    failed together from retrying together.
    """
    spent = 0.0
    cap = policy.initial_s
    while True:
        delay = cap / 2 + float(rng.uniform(0.0, cap / 2))
        if spent + delay > policy.total_s:
            return
        spent += delay
        yield delay
        cap = min(cap * policy.multiplier, policy.max_delay_s)
