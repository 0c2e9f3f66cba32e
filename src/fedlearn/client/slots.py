"""Training slots: at most N of the client processes on one machine train at once.

Clients started on one machine share its cores, and every client that trains holds
its activations and gradients at the same time. Like Flower's
simulation runtime, which gives each client a share of the CPUs, slots bound how many
train at once; here the clients stay separate processes with their own gRPC
connections and take one of N slots, each slot a file in a shared folder locked with
``flock`` (POSIX), for their local training.

A client takes any free slot; when all are taken it queues, in the kernel, on the lock
of its own slot (``queue % N``, e.g. its partition number, so that the clients of a
machine spread evenly over the slots) and wakes when that slot is released. An
earlier version polled every slot every 20 ms instead: at 50 clients on 2 cores the
waiting clients' polls cost more CPU than the slots saved.

The kernel drops a dead process's lock, so a client killed in training never holds
a slot. Waiting for a slot is not training time: the trainer's clock starts after it.

These slots need nothing but a shared folder (``fedlearn client --slot-dir``), for
clients started by hand. Queueing on one slot's lock is not first come, first served
across slots, though: a core can sit idle while another slot's queue still waits.
``fedlearn run`` therefore serves its clients' slots itself
(:mod:`fedlearn.client.slot_server`).
"""

from __future__ import annotations

import fcntl
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fedlearn.errors import ConfigError

__all__ = ["TrainingSlots"]


class TrainingSlots:
    """``count`` slots in ``folder``, shared by the clients that name the same folder."""

    def __init__(self, folder: Path, count: int, *, queue: int | None = None) -> None:
        if count < 1:
            raise ConfigError(f"training slots must be at least 1, got {count}")
        self.folder = Path(folder)
        self.count = count
        self._rng = random.Random()
        self._queue = (queue if queue is not None else self._rng.randrange(count)) % count
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the training-slot folder {folder}: {exc}") from exc

    @contextmanager
    def hold(self) -> Iterator[int]:
        """Wait for a free slot and hold it for the block; yields the slot's number."""
        fd, slot = self._acquire()
        try:
            yield slot
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _acquire(self) -> tuple[int, int]:
        order = list(range(self.count))
        self._rng.shuffle(order)  # no free slot is everyone's first try
        for slot in order:
            fd = self._open(slot)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            except BaseException:
                os.close(fd)
                raise
            return fd, slot
        fd = self._open(self._queue)  # all taken: wait in the kernel for our own slot
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        return fd, self._queue

    def _open(self, slot: int) -> int:
        return os.open(self.folder / f"slot-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o644)
