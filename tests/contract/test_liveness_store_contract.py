"""The ``LivenessStore`` contract, run against the in-memory and the Redis store.

As for leases, time passes on a fake clock for the in-memory store and for real
(the server's clock) for Redis.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import redis
from fedlearn_testing import FakeClock, free_port

from fedlearn.cache import InMemoryLivenessStore, RedisLivenessStore
from fedlearn.errors import StorageError
from fedlearn.service.ports import LivenessStore

LONG = 30.0  # seconds: a heartbeat that must not expire during a test
SHORT = 0.15  # seconds: a heartbeat a test lets expire


@dataclass(frozen=True)
class Backend:
    store: LivenessStore
    wait: Callable[[float], None]
    """Let this many seconds pass on the store's clock."""


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "memory":
        clock = FakeClock()
        return Backend(InMemoryLivenessStore(clock), clock.advance)
    client: redis.Redis = request.getfixturevalue("redis_client")
    prefix: str = request.getfixturevalue("redis_prefix")
    return Backend(RedisLivenessStore(client, group="run-1", prefix=prefix), time.sleep)


def test_nobody_is_alive_before_a_heartbeat(backend: Backend) -> None:
    assert backend.store.alive() == frozenset()


def test_a_heartbeat_keeps_a_client_alive_until_it_expires(backend: Backend) -> None:
    store = backend.store
    store.heartbeat("client-a", SHORT)
    store.heartbeat("client-b", LONG)
    assert store.alive() == {"client-a", "client-b"}

    backend.wait(SHORT * 2)
    assert store.alive() == {"client-b"}


def test_a_new_heartbeat_replaces_the_last_one(backend: Backend) -> None:
    store = backend.store
    store.heartbeat("client-a", SHORT)
    store.heartbeat("client-a", LONG)
    backend.wait(SHORT * 2)
    assert store.alive() == {"client-a"}

    store.heartbeat("client-a", SHORT)
    backend.wait(SHORT * 2)
    assert store.alive() == frozenset()


def test_an_expired_client_comes_back_with_its_next_heartbeat(backend: Backend) -> None:
    store = backend.store
    store.heartbeat("client-a", SHORT)
    backend.wait(SHORT * 2)
    store.heartbeat("client-b", LONG)
    assert store.alive() == {"client-b"}

    store.heartbeat("client-a", LONG)
    assert store.alive() == {"client-a", "client-b"}


@pytest.mark.parametrize("ttl_s", [0.0, -1.0, math.nan, math.inf])
def test_a_time_to_live_that_is_not_positive_and_finite_is_refused(
    backend: Backend, ttl_s: float
) -> None:
    with pytest.raises(ValueError):
        backend.store.heartbeat("client-a", ttl_s)
    assert backend.store.alive() == frozenset()


# Redis adapter details


@pytest.mark.redis
def test_redis_replicas_see_each_others_heartbeats_within_their_group(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    replica_a = RedisLivenessStore(redis_client, group="run-1", prefix=redis_prefix)
    replica_b = RedisLivenessStore(redis_client, group="run-1", prefix=redis_prefix)
    other_run = RedisLivenessStore(redis_client, group="run-2", prefix=redis_prefix)

    replica_a.heartbeat("client-a", LONG)
    replica_b.heartbeat("client-b", LONG)
    assert replica_a.alive() == replica_b.alive() == {"client-a", "client-b"}
    assert other_run.alive() == frozenset()


@pytest.mark.redis
def test_redis_group_key_outlives_every_heartbeat_then_goes(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    store = RedisLivenessStore(redis_client, group="run-1", prefix=redis_prefix)
    key = f"{redis_prefix}alive:{{run-1}}"
    store.heartbeat("client-a", SHORT)
    store.heartbeat("client-b", SHORT)
    time.sleep(SHORT * 2)
    assert redis_client.exists(key) == 0  # an idle group leaves nothing behind

    store.heartbeat("client-a", LONG)
    store.heartbeat("client-b", SHORT)
    assert LONG * 1000 - 5_000 < redis_client.pttl(key) <= LONG * 1000


def test_redis_liveness_reports_an_unreachable_server_as_a_storage_error() -> None:
    client = redis.Redis(port=free_port(), socket_connect_timeout=1, retry=None)
    store = RedisLivenessStore(client, group="run-1")
    with pytest.raises(StorageError, match="Redis"):
        store.heartbeat("client-a", LONG)
    with pytest.raises(StorageError):
        store.alive()
    client.close()
