"""Exponential backoff with full jitter, as pure arithmetic."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from fedlearn.errors import ConfigError

__all__ = ["RetryPolicy", "backoff_delays", "busy_delays"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Delays grow as ``initial_s * multiplier**n`` up to ``max_delay_s``, for ``total_s``.

    ``busy_total_s`` is a separate, longer budget for a server that answers but is too
    busy to take the call now (it says so, and when to come back): such refusals do not
    count as the server being unreachable.
    """

    initial_s: float = 0.2
    multiplier: float = 2.0
    max_delay_s: float = 5.0
    total_s: float = 60.0
    busy_total_s: float = 1800.0

    def __post_init__(self) -> None:
        if (
            self.initial_s <= 0
            or self.multiplier < 1
            or self.max_delay_s < self.initial_s
            or self.busy_total_s < 0
        ):
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


def busy_delays(
    policy: RetryPolicy, *, rng: np.random.Generator, first_s: float
) -> Iterator[float]:
    """Sleep lengths after successive "busy, come back in ``first_s``" refusals.

    They start at the server's own hint and double up to ``max_delay_s`` (each uniform
    in ``[cap/2, cap]``, so that refused clients spread out), stopping once
    ``busy_total_s`` would be exceeded.
    """
    cap = min(max(first_s, 0.01), policy.max_delay_s)
    return backoff_delays(
        RetryPolicy(
            initial_s=cap,
            multiplier=policy.multiplier,
            max_delay_s=policy.max_delay_s,
            total_s=policy.busy_total_s,
        ),
        rng=rng,
    )
