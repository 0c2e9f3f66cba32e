"""A condition variable that counts its broadcasts, for waiters outside the lock.

The coordinator wakes its own waiters with ``notify_all`` whenever something a
client may be waiting for changes (a round opened or closed, the run ended).
An asynchronous server cannot block a thread per waiting client, so it watches
the count instead: one thread waits for the count to move past the value it
last saw and then wakes every waiting call at once. A broadcast that happens
while that thread is busy is not lost, because the count has moved.
"""

from __future__ import annotations

import threading

__all__ = ["CountingCondition"]


class CountingCondition(threading.Condition):
    """``threading.Condition`` whose ``notify_all`` also bumps :attr:`broadcasts`."""

    def __init__(self) -> None:
        super().__init__()
        self.broadcasts = 0

    def notify_all(self) -> None:
        self.broadcasts += 1
        super().notify_all()

    def wait_past(self, seen: int, timeout_s: float) -> int:
        """Wait (holding no lock on return) until ``broadcasts != seen``; the count then.

        Returns after ``timeout_s`` at the latest, with the count unchanged.
        """
        with self:
            self.wait_for(lambda: self.broadcasts != seen, timeout_s)
            return self.broadcasts
