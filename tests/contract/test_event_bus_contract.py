"""The ``EventBus`` and ``RoundCounters`` contracts, on the in-memory and the Redis adapters."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

from fedlearn.cache import (
    InMemoryEventBus,
    InMemoryRoundCounters,
    RedisEventBus,
    RedisRoundCounters,
)
from fedlearn.cache.redis_events import decode_event, encode_event
from fedlearn.core.types import ClusterEvent, ClusterEventKind
from fedlearn.service.ports import EventBus, RoundCounters


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def bus(request: pytest.FixtureRequest) -> Iterator[EventBus]:
    if request.param == "memory":
        memory = InMemoryEventBus()
        yield memory
        memory.close()
        return
    client: redis.Redis = request.getfixturevalue("redis_client")
    prefix: str = request.getfixturevalue("redis_prefix")
    yield RedisEventBus(client, run_id="run-1", prefix=prefix)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def counters(request: pytest.FixtureRequest) -> RoundCounters:
    if request.param == "memory":
        return InMemoryRoundCounters()
    client: redis.Redis = request.getfixturevalue("redis_client")
    prefix: str = request.getfixturevalue("redis_prefix")
    return RedisRoundCounters(client, prefix=prefix)


class Inbox:
    def __init__(self) -> None:
        self.events: list[ClusterEvent] = []
        self.threads: set[str] = set()
        self._cond = threading.Condition()

    def __call__(self, event: ClusterEvent) -> None:
        with self._cond:
            self.events.append(event)
            self.threads.add(threading.current_thread().name)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout_s: float = 5.0) -> list[ClusterEvent]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.events) >= count, timeout_s)
            return list(self.events)


def event(kind: ClusterEventKind, number: int, replica: str = "r1") -> ClusterEvent:
    return ClusterEvent(kind, run_id="run-1", replica=replica, round_number=number, update_id="")


def test_every_subscriber_gets_every_event_in_order(bus: EventBus) -> None:
    first, second = Inbox(), Inbox()
    subs = [bus.subscribe(first), bus.subscribe(second)]
    sent = [event(ClusterEventKind.ROUND, n) for n in range(1, 6)]
    sent.append(
        ClusterEvent(
            ClusterEventKind.UPDATE, run_id="run-1", replica="r2", round_number=5, update_id="u9"
        )
    )
    for e in sent:
        bus.publish(e)
    assert first.wait_for(len(sent)) == sent
    assert second.wait_for(len(sent)) == sent
    assert threading.current_thread().name not in first.threads  # never inside publish
    for sub in subs:
        sub.close()


def test_a_closed_subscription_gets_nothing_more(bus: EventBus) -> None:
    inbox, witness = Inbox(), Inbox()
    sub = bus.subscribe(inbox)
    watcher = bus.subscribe(witness)
    bus.publish(event(ClusterEventKind.CLIENT, 0))
    inbox.wait_for(1)
    sub.close()
    bus.publish(event(ClusterEventKind.CLIENT, 1))
    witness.wait_for(2)
    time.sleep(0.1)
    assert len(inbox.events) == 1
    watcher.close()


def test_a_failing_handler_does_not_stop_delivery(bus: EventBus) -> None:
    inbox = Inbox()

    def broken(e: ClusterEvent) -> None:
        inbox(e)
        raise RuntimeError("handler bug")

    sub = bus.subscribe(broken)
    bus.publish(event(ClusterEventKind.ROUND, 1))
    bus.publish(event(ClusterEventKind.ROUND, 2))
    assert [e.round_number for e in inbox.wait_for(2)] == [1, 2]
    sub.close()


def test_events_round_trip_through_their_wire_form() -> None:
    e = ClusterEvent(
        ClusterEventKind.UPDATE, run_id="r", replica="x", round_number=3, update_id="u"
    )
    assert decode_event(encode_event(e)) == e
    with pytest.raises((ValueError, KeyError)):
        decode_event('{"kind": "nonsense"}')


def test_counters_start_at_zero_and_add_up(counters: RoundCounters) -> None:
    assert counters.read("run-1", 1) == {}
    assert counters.add("run-1", 1, "accepted") == 1
    assert counters.add("run-1", 1, "accepted") == 2
    assert counters.add("run-1", 1, "bytes_down", 1000) == 1000
    assert counters.add("run-1", 2, "accepted") == 1
    assert counters.add("run-2", 1, "accepted", 5) == 5
    assert counters.read("run-1", 1) == {"accepted": 2, "bytes_down": 1000}
    assert counters.read("run-1", 2) == {"accepted": 1}


def test_counters_add_up_from_many_threads(counters: RoundCounters) -> None:
    def work() -> None:
        for _ in range(50):
            counters.add("run-1", 7, "accepted")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counters.read("run-1", 7) == {"accepted": 200}
