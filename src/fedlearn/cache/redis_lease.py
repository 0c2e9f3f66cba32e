"""A ``LeaseStore`` on Redis, shared by the replicas of a coordinator cluster.

Each name uses two keys, in one hash slot (the ``{name}`` tag), so that the scripts
below also run on Redis Cluster::

    PREFIXlease:{NAME}        hash {holder, token, expires_ms}, with a PEXPIRE time to live
    PREFIXlease:{NAME}:token  integer, the newest token issued; never expires

Acquire, renew and release are Lua scripts, each atomic on the server; a lease key
that has expired is gone for every command, so ``current`` is one HMGET.
Expiry times come from the server's clock (``TIME``), in milliseconds; ``expires_ms``
repeats, for readers, the expiry that PEXPIRE set.
"""

from __future__ import annotations

import redis

from fedlearn.cache._redis import NOW_MS, text, translated
from fedlearn.cache._ttl import ttl_ms
from fedlearn.core.types import Lease

__all__ = ["RedisLeaseStore"]

# KEYS: lease, counter. ARGV: holder, ttl_ms. -> {token, expires_ms} or nil if held.
_ACQUIRE = (
    NOW_MS
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
local expires_ms = now_ms + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'token', token, 'expires_ms', expires_ms)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {token, expires_ms}
"""
)

# KEYS: lease. ARGV: holder, token, ttl_ms. -> 1 if renewed, 0 if not held so.
_RENEW = (
    NOW_MS
    + """
local v = redis.call('HMGET', KEYS[1], 'holder', 'token')
if v[1] ~= ARGV[1] or v[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'expires_ms', now_ms + tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
)

# KEYS: lease. ARGV: holder, token. -> 1 if released, 0 if not held so.
_RELEASE = """
local v = redis.call('HMGET', KEYS[1], 'holder', 'token')
if v[1] ~= ARGV[1] or v[2] ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""


class RedisLeaseStore:
    """Leases in Redis under ``prefix`` (``"fedlearn:"``), through ``client``.

    ``client`` may decode responses or not. Tokens survive the lease key's expiry and
    deletion; they are as durable as the Redis server's persistence (AOF or RDB): a
    server that loses its data starts counting again from 1.
    """

    def __init__(self, client: redis.Redis, *, prefix: str = "fedlearn:") -> None:
        self._client = client
        self._prefix = prefix
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def acquire(self, name: str, holder: str, ttl_s: float) -> Lease | None:
        ms = ttl_ms(ttl_s)
        with translated(f"acquire lease {name!r}"):
            reply = self._acquire(keys=self._keys(name), args=[holder, ms])
        if reply is None:
            return None
        token, expires_ms = reply
        return Lease(name, holder, token=int(token), expires_at=int(expires_ms) / 1000)

    def renew(self, lease: Lease, ttl_s: float) -> bool:
        ms = ttl_ms(ttl_s)
        with translated(f"renew lease {lease.name!r}"):
            reply = self._renew(
                keys=self._keys(lease.name)[:1], args=[lease.holder, lease.token, ms]
            )
        return bool(reply)

    def release(self, lease: Lease) -> bool:
        with translated(f"release lease {lease.name!r}"):
            reply = self._release(keys=self._keys(lease.name)[:1], args=[lease.holder, lease.token])
        return bool(reply)

    def current(self, name: str) -> Lease | None:
        with translated(f"read lease {name!r}"):
            holder, token, expires_ms = self._client.hmget(
                self._keys(name)[0], ["holder", "token", "expires_ms"]
            )
        if holder is None or token is None or expires_ms is None:
            return None
        return Lease(name, text(holder), token=int(token), expires_at=int(expires_ms) / 1000)

    def check_token(self, name: str, token: int) -> bool:
        with translated(f"read the token of lease {name!r}"):
            newest = self._client.get(self._keys(name)[1])
        return token > 0 and newest is not None and int(newest) == token

    def _keys(self, name: str) -> list[str]:
        lease_key = f"{self._prefix}lease:{{{name}}}"
        return [lease_key, f"{lease_key}:token"]
