"""The ``LeaseStore`` contract, run against the in-memory and the Redis store.

Each backend comes with a way to let time pass for its clock: a fake clock moved by
hand for the in-memory store, real sleeps for Redis (whose expiry uses the server's
clock), so expiries are tested as they happen in production.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import redis
from fedlearn_testing import FakeClock, free_port

from fedlearn.cache import InMemoryLeaseStore, RedisLeaseStore, RedisLivenessStore
from fedlearn.core.types import Lease
from fedlearn.errors import ConflictError, FencedError, StorageError
from fedlearn.service.ports import LeaseStore

LONG = 30.0  # seconds: a lease that must not expire during a test
SHORT = 0.15  # seconds: a lease a test lets expire
NAME = "run-1/round-3"


@dataclass(frozen=True)
class Backend:
    store: LeaseStore
    wait: Callable[[float], None]
    """Let this many seconds pass on the store's clock."""
    now: Callable[[], float]
    """The store's clock, give or take the distance to the server."""


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "memory":
        clock = FakeClock()
        return Backend(InMemoryLeaseStore(clock), clock.advance, clock.now)
    client: redis.Redis = request.getfixturevalue("redis_client")
    prefix: str = request.getfixturevalue("redis_prefix")
    return Backend(RedisLeaseStore(client, prefix=prefix), time.sleep, time.time)


def _acquired(store: LeaseStore, name: str, holder: str, ttl_s: float = LONG) -> Lease:
    lease = store.acquire(name, holder, ttl_s)
    assert lease is not None, f"{holder} could not acquire a free lease"
    return lease


def _let_expire(backend: Backend) -> None:
    backend.wait(SHORT * 2)


def test_acquire_gives_a_free_lease_to_one_holder_at_a_time(backend: Backend) -> None:
    store = backend.store
    before = backend.now()
    a = _acquired(store, NAME, "replica-a")

    assert (a.name, a.holder) == (NAME, "replica-a")
    assert a.token >= 1
    assert before + LONG - 5 <= a.expires_at <= backend.now() + LONG + 5
    assert store.acquire(NAME, "replica-b", LONG) is None
    assert store.acquire(NAME, "replica-a", LONG) is None
    assert store.current(NAME) == a


def test_leases_of_different_names_are_independent(backend: Backend) -> None:
    store = backend.store
    a = _acquired(store, "round-1", "replica-a")
    b = _acquired(store, "round-2", "replica-b")

    assert store.current("round-1") == a
    assert store.current("round-2") == b
    assert store.check_token("round-1", a.token)
    assert store.check_token("round-2", b.token)


def test_nobody_holds_a_lease_never_taken(backend: Backend) -> None:
    assert backend.store.current(NAME) is None
    assert not backend.store.check_token(NAME, 1)


def test_an_expired_lease_goes_to_the_next_holder_with_a_higher_token(backend: Backend) -> None:
    store = backend.store
    a = _acquired(store, NAME, "replica-a", SHORT)
    _let_expire(backend)

    assert store.current(NAME) is None
    b = _acquired(store, NAME, "replica-b")
    assert b.token > a.token
    assert store.current(NAME) == b


def test_renew_keeps_the_lease_past_its_first_expiry(backend: Backend) -> None:
    store = backend.store
    a = _acquired(store, NAME, "replica-a", SHORT)

    assert store.renew(a, LONG)
    _let_expire(backend)
    current = store.current(NAME)
    assert current is not None
    assert (current.holder, current.token) == ("replica-a", a.token)
    assert current.expires_at > a.expires_at
    assert store.acquire(NAME, "replica-b", LONG) is None


def test_renew_by_a_stale_holder_fails_and_changes_nothing(backend: Backend) -> None:
    store = backend.store
    a = _acquired(store, NAME, "replica-a", SHORT)
    _let_expire(backend)
    assert not store.renew(a, LONG), "an expired lease was renewed"

    b = _acquired(store, NAME, "replica-b")
    assert not store.renew(a, LONG)
    assert not store.renew(Lease(NAME, "replica-b", token=a.token, expires_at=0), LONG)
    assert not store.renew(Lease(NAME, "replica-a", token=b.token, expires_at=0), LONG)
    assert store.current(NAME) == b


def test_release_by_a_stale_holder_does_nothing(backend: Backend) -> None:
    store = backend.store
    a = _acquired(store, NAME, "replica-a", SHORT)
    _let_expire(backend)
    b = _acquired(store, NAME, "replica-b")

    assert not store.release(a)
    assert not store.release(Lease(NAME, "replica-a", token=b.token, expires_at=0))
    assert store.current(NAME) == b
    assert store.acquire(NAME, "replica-c", LONG) is None


def test_release_frees_the_lease_once_and_keeps_the_token_count(backend: Backend) -> None:
    store = backend.store
    a = _acquired(store, NAME, "replica-a")

    assert store.release(a)
    assert not store.release(a)
    assert store.current(NAME) is None
    b = _acquired(store, NAME, "replica-b")
    assert b.token > a.token


def test_a_write_fenced_by_an_old_token_is_refused_after_another_holder_acquired(
    backend: Backend,
) -> None:
    store = backend.store
    written: list[str] = []

    def write(token: int, value: str) -> None:  # a store write guarded by the lease
        if not store.check_token(NAME, token):
            raise FencedError(NAME, token)
        written.append(value)

    a = _acquired(store, NAME, "replica-a", SHORT)
    write(a.token, "a: before the pause")
    _let_expire(backend)  # replica-a pauses past its lease
    b = _acquired(store, NAME, "replica-b")
    write(b.token, "b: took over")

    with pytest.raises(FencedError) as refused:
        write(a.token, "a: after the pause")
    assert isinstance(refused.value, ConflictError)
    assert (refused.value.name, refused.value.token, refused.value.reason) == (
        NAME,
        a.token,
        "fenced",
    )
    assert written == ["a: before the pause", "b: took over"]
    assert not store.check_token(NAME, a.token)
    assert store.check_token(NAME, b.token)


def test_only_tokens_that_were_issued_pass_the_check(backend: Backend) -> None:
    store = backend.store
    a = _acquired(store, NAME, "replica-a")

    assert store.check_token(NAME, a.token)
    assert not store.check_token(NAME, a.token + 1)
    assert not store.check_token(NAME, 0)
    assert not store.check_token("another-round", a.token)


def test_tokens_increase_strictly_over_many_acquisitions(backend: Backend) -> None:
    store = backend.store
    tokens = []
    for i in range(12):
        if i % 3 == 0:  # some leases expire instead of being released
            lease = _acquired(store, NAME, f"replica-{i}", SHORT)
            _let_expire(backend)
        else:
            lease = _acquired(store, NAME, f"replica-{i}")
            assert store.release(lease)
        tokens.append(lease.token)

    assert all(later > earlier for earlier, later in itertools.pairwise(tokens))
    assert store.check_token(NAME, tokens[-1])
    assert not any(store.check_token(NAME, t) for t in tokens[:-1])


def _race(store: LeaseStore, holders: list[str]) -> list[Lease | None]:
    """What each holder got from calling ``acquire`` at once, from its own thread."""
    start = threading.Barrier(len(holders))
    results: list[Lease | None] = [None] * len(holders)

    def contend(i: int) -> None:
        start.wait()
        results[i] = store.acquire(NAME, holders[i], LONG)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(len(holders))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_concurrent_acquirers_get_exactly_one_winner_each_time(backend: Backend) -> None:
    store = backend.store
    winners: list[Lease] = []
    for attempt in range(6):
        results = _race(store, [f"replica-{attempt}-{i}" for i in range(8)])
        won = [lease for lease in results if lease is not None]
        assert len(won) == 1, f"attempt {attempt}: {len(won)} winners"
        assert store.current(NAME) == won[0]
        winners.append(won[0])
        assert store.release(won[0])

    tokens = [lease.token for lease in winners]
    assert all(later > earlier for earlier, later in itertools.pairwise(tokens))


@pytest.mark.parametrize("ttl_s", [0.0, -1.0, math.nan, math.inf])
def test_a_time_to_live_that_is_not_positive_and_finite_is_refused(
    backend: Backend, ttl_s: float
) -> None:
    store = backend.store
    with pytest.raises(ValueError):
        store.acquire(NAME, "replica-a", ttl_s)
    a = _acquired(store, NAME, "replica-a")
    with pytest.raises(ValueError):
        store.renew(a, ttl_s)
    assert store.current(NAME) == a


# Redis adapter details


@pytest.mark.redis
def test_redis_tokens_outlive_the_lease_key(redis_client: redis.Redis, redis_prefix: str) -> None:
    store = RedisLeaseStore(redis_client, prefix=redis_prefix)
    a = _acquired(store, NAME, "replica-a")
    redis_client.delete(f"{redis_prefix}lease:{{{NAME}}}")  # the key is lost, not the counter

    b = _acquired(store, NAME, "replica-b")
    assert b.token > a.token
    assert not store.renew(a, LONG)
    assert not store.check_token(NAME, a.token)


@pytest.mark.redis
def test_redis_keys_stay_under_the_prefix_and_share_a_hash_slot(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    store = RedisLeaseStore(redis_client, prefix=redis_prefix)
    _acquired(store, NAME, "replica-a")

    keys = sorted(k.decode() for k in redis_client.scan_iter(match=f"{redis_prefix}*"))
    assert keys == [f"{redis_prefix}lease:{{{NAME}}}", f"{redis_prefix}lease:{{{NAME}}}:token"]
    assert 0 < redis_client.pttl(keys[0]) <= LONG * 1000
    assert redis_client.ttl(keys[1]) == -1  # the token counter never expires


def test_redis_store_reports_an_unreachable_server_as_a_storage_error() -> None:
    client = redis.Redis(port=free_port(), socket_connect_timeout=1, retry=None)
    store = RedisLeaseStore(client)
    with pytest.raises(StorageError, match="Redis"):
        store.acquire(NAME, "replica-a", LONG)
    with pytest.raises(StorageError):
        store.check_token(NAME, 1)
    client.close()


@pytest.mark.redis
def test_redis_stores_work_with_a_client_that_decodes_replies(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    kwargs = redis_client.connection_pool.connection_kwargs
    client = redis.Redis(
        host=kwargs["host"], port=kwargs["port"], db=kwargs.get("db", 0), decode_responses=True
    )
    try:
        leases = RedisLeaseStore(client, prefix=redis_prefix)
        a = _acquired(leases, NAME, "replica-a")
        assert leases.current(NAME) == a
        assert leases.check_token(NAME, a.token)
        liveness = RedisLivenessStore(client, group="run-1", prefix=redis_prefix)
        liveness.heartbeat("client-a", LONG)
        assert liveness.alive() == {"client-a"}
    finally:
        client.close()
