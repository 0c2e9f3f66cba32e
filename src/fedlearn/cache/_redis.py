"""Pieces shared by the Redis adapters."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis

from fedlearn.errors import StorageError

__all__ = ["NOW_MS", "text", "translated"]

NOW_MS = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
"""Lua that sets ``now_ms``, the server's clock in milliseconds since the epoch."""


def text(value: object) -> str:
    """A reply as ``str``, whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else str(value)


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn Redis errors raised in the block into ``StorageError("could not WHAT ...")``."""
    try:
        yield
    except redis.RedisError as exc:
        raise StorageError(f"could not {what} in Redis: {exc}") from exc
