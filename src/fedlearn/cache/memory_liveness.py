"""An in-process ``LivenessStore``: for tests and for a coordinator that runs alone."""

from __future__ import annotations

import threading

from fedlearn.cache._ttl import check_ttl
from fedlearn.service.ports import Clock

__all__ = ["InMemoryLivenessStore"]


class InMemoryLivenessStore:
    """Heartbeats in a dictionary, timed by ``clock``; safe to share between threads."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._expires_at: dict[str, float] = {}

    def heartbeat(self, client_id: str, ttl_s: float) -> None:
        check_ttl(ttl_s)
        with self._lock:
            now = self._clock.now()
            self._expires_at = {c: t for c, t in self._expires_at.items() if t > now}
            self._expires_at[client_id] = now + ttl_s

    def alive(self) -> frozenset[str]:
        with self._lock:
            now = self._clock.now()
            return frozenset(c for c, t in self._expires_at.items() if t > now)
