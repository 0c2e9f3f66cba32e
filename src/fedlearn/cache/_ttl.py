"""Checks shared by the cache adapters."""

from __future__ import annotations

import math

__all__ = ["check_ttl", "ttl_ms"]


def check_ttl(ttl_s: float) -> float:
    """``ttl_s`` if it is a positive, finite number of seconds; ``ValueError`` if not."""
    if not (math.isfinite(ttl_s) and ttl_s > 0):
        raise ValueError(f"a time to live must be a positive number of seconds, not {ttl_s}")
    return ttl_s


def ttl_ms(ttl_s: float) -> int:
    """``ttl_s`` in whole milliseconds, rounded up (at least 1), for PEXPIRE."""
    return max(1, math.ceil(check_ttl(ttl_s) * 1000))
