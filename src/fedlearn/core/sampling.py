"""Which clients take part in a round."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedlearn.errors import ConfigError

__all__ = ["round_rng", "sample_clients", "sample_size"]


def round_rng(seed: int, round_number: int) -> np.random.Generator:
    """A generator that depends only on the run seed and the round number."""
    return np.random.default_rng([seed, round_number])


def sample_size(
    available: int, *, min_clients: int, clients_per_round: int | None, fraction: float | None
) -> int:
    """How many of ``available`` clients to select (at least ``min_clients``)."""
    if clients_per_round is not None and fraction is not None:
        raise ConfigError("give clients_per_round or fraction, not both")
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise ConfigError(f"fraction must be in (0, 1], got {fraction}")
        wanted = int(np.ceil(fraction * available))
    elif clients_per_round is not None:
        wanted = clients_per_round
    else:
        wanted = available
    return min(available, max(wanted, min_clients))


def sample_clients(
    candidates: Sequence[str], k: int, *, rng: np.random.Generator
) -> tuple[str, ...]:
    """``k`` distinct clients chosen uniformly; the result is sorted for stable storage."""
    if k > len(candidates):
        raise ConfigError(f"cannot select {k} clients out of {len(candidates)}")
    pool = sorted(candidates)
    chosen = rng.choice(len(pool), size=k, replace=False)
    return tuple(sorted(pool[int(i)] for i in chosen))
