"""In-process ``EventBus`` and ``RoundCounters``: for tests and a coordinator that runs alone."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from fedlearn.core.types import ClusterEvent

__all__ = ["InMemoryEventBus", "InMemoryRoundCounters"]

logger = logging.getLogger(__name__)

_Handler = Callable[[ClusterEvent], None]


class _Subscription:
    def __init__(self, bus: InMemoryEventBus, handler: _Handler) -> None:
        self._bus = bus
        self.handler = handler

    def close(self) -> None:
        self._bus.unsubscribe(self)


class InMemoryEventBus:
    """Delivers each published event to every subscriber, on one dispatcher thread.

    Handlers never run inside :meth:`publish` (as with Redis), so a coordinator
    may publish while it holds its own lock. :meth:`drain` waits until every
    event published so far was handled, for tests.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscriptions: list[_Subscription] = []
        self._queue: queue.Queue[ClusterEvent | None] = queue.Queue()
        self._idle = threading.Condition(self._lock)
        self._pending = 0
        self._closed = False
        self._thread = threading.Thread(target=self._dispatch, name="event-bus", daemon=True)
        self._thread.start()

    def publish(self, event: ClusterEvent) -> None:
        with self._lock:
            if self._closed:
                return
            self._pending += 1
        self._queue.put(event)

    def subscribe(self, handler: _Handler) -> _Subscription:
        subscription = _Subscription(self, handler)
        with self._lock:
            self._subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: _Subscription) -> None:
        with self._lock:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)

    def drain(self, timeout_s: float = 10.0) -> bool:
        """Block until every event published so far was handled."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout_s)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=5.0)

    def _dispatch(self) -> None:
        while (event := self._queue.get()) is not None:
            with self._lock:
                handlers = [s.handler for s in self._subscriptions]
            for handler in handlers:
                try:
                    handler(event)
                except Exception:
                    logger.exception("event handler failed on %s", event)
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()


class InMemoryRoundCounters:
    """Counters per round in a dictionary; safe to share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], dict[str, int]] = {}

    def add(self, run_id: str, round_number: int, name: str, amount: int = 1) -> int:
        with self._lock:
            counts = self._counts.setdefault((run_id, round_number), {})
            counts[name] = counts.get(name, 0) + amount
            return counts[name]

    def read(self, run_id: str, round_number: int) -> dict[str, int]:
        with self._lock:
            return dict(self._counts.get((run_id, round_number), {}))
