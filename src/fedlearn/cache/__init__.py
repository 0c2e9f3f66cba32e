"""Cache adapters: what the replicas of a coordinator cluster share and need fast.

- :class:`RedisLeaseStore` (the ``LeaseStore`` port: leases with fencing tokens) and
  :class:`InMemoryLeaseStore` for tests and a coordinator that runs alone;
- :class:`RedisLivenessStore` (the ``LivenessStore`` port: client heartbeats) and
  :class:`InMemoryLivenessStore`;
- :class:`RedisEventBus` (the ``EventBus`` port: pub/sub between replicas) and
  :class:`RedisRoundCounters` (the ``RoundCounters`` port), with in-memory twins.

Nothing here connects at import: the caller builds the ``redis.Redis`` client.
"""

from __future__ import annotations

from fedlearn.cache.memory_events import InMemoryEventBus, InMemoryRoundCounters
from fedlearn.cache.memory_lease import InMemoryLeaseStore
from fedlearn.cache.memory_liveness import InMemoryLivenessStore
from fedlearn.cache.redis_events import RedisEventBus, RedisRoundCounters
from fedlearn.cache.redis_lease import RedisLeaseStore
from fedlearn.cache.redis_liveness import RedisLivenessStore

__all__ = [
    "InMemoryEventBus",
    "InMemoryRoundCounters",
    "InMemoryLeaseStore",
    "InMemoryLivenessStore",
    "RedisEventBus",
    "RedisLeaseStore",
    "RedisLivenessStore",
    "RedisRoundCounters",
]
