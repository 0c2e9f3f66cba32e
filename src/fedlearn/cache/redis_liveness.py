"""A ``LivenessStore`` on Redis: client heartbeats every replica sees.

One sorted set per group, scored by expiry in milliseconds of the server's clock::

    PREFIXalive:{GROUP}   zset client_id -> expires_ms; the key's own time to live is
                          raised to each heartbeat's (never lowered), so it outlives
                          its members and an idle group leaves nothing behind

A heartbeat (one Lua script, atomic) drops the expired members and sets its own.
"""

from __future__ import annotations

import redis

from fedlearn.cache._redis import NOW_MS, text, translated
from fedlearn.cache._ttl import ttl_ms

__all__ = ["RedisLivenessStore"]

# KEYS: the group's zset. ARGV: client_id, ttl_ms.
_HEARTBEAT = (
    NOW_MS
    + """
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
redis.call('ZADD', KEYS[1], now_ms + ttl, ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"""
)

# KEYS: the group's zset. -> the members whose expiry is still ahead.
_ALIVE = (
    NOW_MS
    + """
return redis.call('ZRANGE', KEYS[1], string.format('(%d', now_ms), '+inf', 'BYSCORE')
"""
)


class RedisLivenessStore:
    """Heartbeats of the clients of ``group`` (a run id, say), in Redis under ``prefix``."""

    def __init__(self, client: redis.Redis, *, group: str, prefix: str = "fedlearn:") -> None:
        self._key = f"{prefix}alive:{{{group}}}"
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._alive = client.register_script(_ALIVE)

    def heartbeat(self, client_id: str, ttl_s: float) -> None:
        ms = ttl_ms(ttl_s)
        with translated(f"record a heartbeat of client {client_id!r}"):
            self._heartbeat(keys=[self._key], args=[client_id, ms])

    def alive(self) -> frozenset[str]:
        with translated("read the live clients"):
            members = self._alive(keys=[self._key])
        return frozenset(text(m) for m in members)
