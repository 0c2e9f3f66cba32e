"""What a client keeps on disk to survive a crash, and how it copes with memory pressure.

The state folder holds the outbox (updates not yet acknowledged) and the latest
training checkpoint, and a lock file: two running clients on one folder would resume
each other's work, so the second one is refused.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from fedlearn.client.checkpoints import CheckpointStore
from fedlearn.client.outbox import Outbox
from fedlearn.errors import ConfigError

__all__ = ["ClientState", "Recovery"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClientState:
    """A client's state folder, locked for as long as this object lives (POSIX)."""

    directory: Path
    outbox: Outbox
    checkpoints: CheckpointStore
    lock: IO[bytes] | None = field(default=None, repr=False, compare=False)

    @staticmethod
    def open(directory: Path) -> ClientState:
        """Create or reopen ``directory``; :class:`ConfigError` if another client holds it."""
        try:
            directory.mkdir(parents=True, exist_ok=True)
            lock = _lock(directory / "lock")
        except OSError as exc:
            raise ConfigError(f"cannot use client state folder {directory}: {exc}") from exc
        logger.info("client state in %s", directory)
        return ClientState(
            directory,
            Outbox(directory / "outbox"),
            CheckpointStore(directory / "checkpoints"),
            lock,
        )


def _lock(path: Path) -> IO[bytes] | None:
    try:
        import fcntl  # noqa: PLC0415  (POSIX only)
    except ImportError:
        return None
    handle = path.open("ab")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        with contextlib.suppress(OSError):
            handle.close()
        raise ConfigError(
            f"client state folder {path.parent} is in use by another running client; "
            "give each client its own --state-dir"
        ) from exc
    return handle


@dataclass(frozen=True, slots=True)
class Recovery:
    """The client runtime's fault-tolerance settings."""

    state: ClientState | None = None
    """Where updates wait for their ack and training is checkpointed; ``None``: nowhere."""
    min_batch_size: int = 1
    """After out-of-memory errors the batch is halved down to this size, then the round
    is skipped."""

    def __post_init__(self) -> None:
        if self.min_batch_size < 1:
            raise ConfigError(f"min_batch_size must be at least 1, got {self.min_batch_size}")
