"""Per-round client settings: the learning rate decays geometrically over rounds."""

from __future__ import annotations

from dataclasses import replace

from fedlearn.core.types import RoundConfig
from fedlearn.errors import ConfigError

__all__ = ["round_config_for"]


def round_config_for(base: RoundConfig, round_number: int, *, lr_decay: float) -> RoundConfig:
    """``base`` with learning rate ``lr * lr_decay ** (round_number - 1)``.

    Decaying the clients' step size damps the round-to-round oscillation that
    non-IID clients cause late in training (``lr_decay=1`` keeps it constant).
    """
    if not 0 < lr_decay <= 1:
        raise ConfigError(f"lr_decay must be in (0, 1], got {lr_decay}")
    if round_number < 1:
        raise ConfigError(f"rounds are numbered from 1, got {round_number}")
    return replace(base, learning_rate=base.learning_rate * lr_decay ** (round_number - 1))
