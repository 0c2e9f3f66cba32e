"""``EventBus`` and ``RoundCounters`` on Redis: pub/sub between replicas, counters per round.

Events travel as JSON on one pub/sub channel per run (``PREFIXevents:{RUN}``); a
subscriber's handler runs on redis-py's listener thread. Pub/sub delivers at most
once and only to connected subscribers, which is all the port promises: replicas
also reread the database on their own schedule.

Counters are one hash per round, ``PREFIXcounters:{RUN}:ROUND`` (HINCRBY), that
expires a day after its last change.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.client import PubSub, PubSubWorkerThread

from fedlearn.cache._redis import text, translated
from fedlearn.core.types import ClusterEvent, ClusterEventKind

__all__ = ["RedisEventBus", "RedisRoundCounters", "decode_event", "encode_event"]

logger = logging.getLogger(__name__)

COUNTER_TTL_S = 24 * 3600


def encode_event(event: ClusterEvent) -> str:
    return json.dumps(
        {
            "kind": event.kind.value,
            "run_id": event.run_id,
            "replica": event.replica,
            "round": event.round_number,
            "update_id": event.update_id,
        }
    )


def decode_event(data: str | bytes) -> ClusterEvent:
    """The event in ``data``; ``ValueError`` (or ``KeyError``) if it is not one."""
    fields = json.loads(data)
    return ClusterEvent(
        ClusterEventKind(fields["kind"]),
        run_id=str(fields["run_id"]),
        replica=str(fields["replica"]),
        round_number=int(fields["round"]),
        update_id=str(fields["update_id"]),
    )


class _Subscription:
    def __init__(self, pubsub: PubSub, thread: PubSubWorkerThread) -> None:
        self._pubsub = pubsub
        self._thread = thread

    def close(self) -> None:
        self._thread.stop()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self._pubsub.close()


class RedisEventBus:
    """The events of run ``run_id`` on Redis pub/sub, under ``prefix``."""

    def __init__(self, client: redis.Redis, *, run_id: str, prefix: str = "fedlearn:") -> None:
        self._client = client
        self._channel = f"{prefix}events:{{{run_id}}}"

    def publish(self, event: ClusterEvent) -> None:
        with translated("publish a cluster event"):
            self._client.publish(self._channel, encode_event(event))

    def subscribe(self, handler: Callable[[ClusterEvent], None]) -> _Subscription:
        def deliver(message: dict[str, Any]) -> None:
            try:
                event = decode_event(text(message["data"]))
            except (ValueError, KeyError, TypeError):
                logger.warning("ignored a malformed cluster event: %r", message.get("data"))
                return
            try:
                handler(event)
            except Exception:
                logger.exception("cluster event handler failed on %s", event)

        def on_error(exc: BaseException, pubsub: PubSub, thread: PubSubWorkerThread) -> None:
            # redis-py reconnects and resubscribes on the next get_message
            logger.warning("cluster event subscription: %s; reconnecting", exc)
            time.sleep(0.5)  # not a busy loop while Redis is down

        pubsub = self._client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        with translated("subscribe to cluster events"):
            pubsub.subscribe(**{self._channel: deliver})
        thread = pubsub.run_in_thread(sleep_time=0.5, daemon=True, exception_handler=on_error)
        return _Subscription(pubsub, thread)


class RedisRoundCounters:
    """Counters per round in Redis hashes under ``prefix``."""

    def __init__(self, client: redis.Redis, *, prefix: str = "fedlearn:") -> None:
        self._client = client
        self._prefix = prefix

    def add(self, run_id: str, round_number: int, name: str, amount: int = 1) -> int:
        key = self._key(run_id, round_number)
        with translated(f"count {name} of round {round_number}"):
            pipe = self._client.pipeline()
            pipe.hincrby(key, name, amount)
            pipe.expire(key, COUNTER_TTL_S)
            value, _ = pipe.execute()
        return int(value)

    def read(self, run_id: str, round_number: int) -> dict[str, int]:
        with translated(f"read the counters of round {round_number}"):
            raw = self._client.hgetall(self._key(run_id, round_number))
        return {text(k): int(v) for k, v in raw.items()}

    def _key(self, run_id: str, round_number: int) -> str:
        return f"{self._prefix}counters:{{{run_id}}}:{round_number}"
