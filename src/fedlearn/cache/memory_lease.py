"""An in-process ``LeaseStore``: for tests and for a coordinator that runs alone."""

from __future__ import annotations

import threading

from fedlearn.cache._ttl import check_ttl
from fedlearn.core.types import Lease
from fedlearn.service.ports import Clock

__all__ = ["InMemoryLeaseStore"]


class InMemoryLeaseStore:
    """Leases in a dictionary, timed by ``clock``; safe to share between threads.

    Tokens count up per name from 1 and are kept after a lease expires or is released,
    so a name never hands out the same token twice in this process.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._held: dict[str, Lease] = {}
        self._newest: dict[str, int] = {}

    def acquire(self, name: str, holder: str, ttl_s: float) -> Lease | None:
        check_ttl(ttl_s)
        with self._lock:
            if self._live(name) is not None:
                return None
            token = self._newest.get(name, 0) + 1
            self._newest[name] = token
            lease = Lease(name, holder, token=token, expires_at=self._clock.now() + ttl_s)
            self._held[name] = lease
            return lease

    def renew(self, lease: Lease, ttl_s: float) -> bool:
        check_ttl(ttl_s)
        with self._lock:
            if not self._is_held(lease):
                return False
            self._held[lease.name] = Lease(
                lease.name, lease.holder, token=lease.token, expires_at=self._clock.now() + ttl_s
            )
            return True

    def release(self, lease: Lease) -> bool:
        with self._lock:
            if not self._is_held(lease):
                return False
            del self._held[lease.name]
            return True

    def current(self, name: str) -> Lease | None:
        with self._lock:
            return self._live(name)

    def check_token(self, name: str, token: int) -> bool:
        with self._lock:
            return token > 0 and self._newest.get(name) == token

    def _live(self, name: str) -> Lease | None:
        lease = self._held.get(name)
        if lease is not None and lease.expires_at <= self._clock.now():
            del self._held[name]
            return None
        return lease

    def _is_held(self, lease: Lease) -> bool:
        live = self._live(lease.name)
        return live is not None and (live.holder, live.token) == (lease.holder, lease.token)
