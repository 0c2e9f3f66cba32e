"""Training slots handed out by one process, first come, first served.

``fedlearn run`` starts every client of a local federation on the same cores. With
:class:`~fedlearn.client.slots.TrainingSlots` (``flock``'d files) a client that finds
every slot taken can only queue on one slot's lock, so one slot per core left a core
idle whenever its queue ran dry before the other's, and it took two slots per core,
two clients training on each core, to keep both busy. Here the launcher holds the
slots instead: a :class:`SlotServer` thread listens on a Unix socket, queues the
clients that connect in the order they came, and grants each free slot to the
client at the head of the queue. A slot is free again once its holder closes the
connection, which the kernel does for a client that dies. So one slot per core keeps
every core busy while clients are waiting, with one client training on each core.

The protocol is a connection per turn: the client connects and reads one line, the
number of its slot (the server closing the connection instead means it has stopped);
it trains, then closes the connection.
"""

from __future__ import annotations

import collections
import logging
import os
import selectors
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from fedlearn.errors import ConfigError

__all__ = ["ServedSlots", "SlotServer"]

logger = logging.getLogger(__name__)

_GRANT_BYTES = 16
"""Longest grant line a client reads (a slot's number and a newline)."""


class SlotServer:
    """Grants ``count`` training slots to the clients that connect to :attr:`path`.

    Runs a daemon thread from :meth:`start` until :meth:`close` (or the ``with``
    block's end). The socket lives in a fresh private folder (mode 0700) under the
    system's temporary folder, which keeps the path within the length limit of a
    Unix socket address whatever the run's folder is.
    """

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ConfigError(f"training slots must be at least 1, got {count}")
        self.count = count
        self._folder = Path(tempfile.mkdtemp(prefix="fedlearn-slots-"))
        self.path = self._folder / "slots.sock"
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._waiting: collections.deque[socket.socket] = collections.deque()
        self._holders: dict[socket.socket, int] = {}
        self._free = list(range(count - 1, -1, -1))  # pop() hands out slot 0 first
        self._thread = threading.Thread(target=self._serve, name="training-slots", daemon=True)
        self._closed = False

    def start(self) -> SlotServer:
        try:
            self._listener.bind(str(self.path))
            self._listener.listen(socket.SOMAXCONN)
        except OSError as exc:
            self.close()
            raise ConfigError(f"cannot serve training slots at {self.path}: {exc}") from exc
        self._listener.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread.start()
        logger.debug("%d training slots served at %s", self.count, self.path)
        return self

    def close(self) -> None:
        """Stop serving: waiting clients see the connection close, and the socket's
        folder is removed."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            self._wake_w.send(b"x")
            self._thread.join()
        for conn in [*self._waiting, *self._holders]:
            conn.close()
        self._waiting.clear()
        self._holders.clear()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()
        self._selector.close()
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> SlotServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _serve(self) -> None:
        while True:
            for key, _ in self._selector.select():
                if key.fileobj is self._wake_r:
                    return
                if key.fileobj is self._listener:
                    self._accept()
                else:  # a client closed its connection (or sent something, which also
                    # ends its turn): its slot, if it held one, is free again
                    conn = key.fileobj
                    assert isinstance(conn, socket.socket)
                    self._drop(conn)
            self._grant()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of file descriptors: the connection stays
                # in the backlog, and the next wake-up tries to accept it again
                logger.warning("training slots: cannot accept a client: %s", exc)
                return
            self._selector.register(conn, selectors.EVENT_READ)
            self._waiting.append(conn)

    def _drop(self, conn: socket.socket) -> None:
        self._selector.unregister(conn)
        conn.close()
        slot = self._holders.pop(conn, None)
        if slot is not None:
            self._free.append(slot)
        else:
            self._waiting.remove(conn)

    def _grant(self) -> None:
        while self._free and self._waiting:
            conn = self._waiting.popleft()
            slot = self._free.pop()
            self._holders[conn] = slot
            try:
                conn.send(f"{slot}\n".encode())
            except OSError:  # gone before its turn came
                self._drop(conn)


class ServedSlots:
    """A client's side of a :class:`SlotServer`: :meth:`hold` waits for a slot."""

    def __init__(self, path: Path) -> None:
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            raise ConfigError(f"no training-slot server at {path}: {exc}") from exc
        if not stat.S_ISSOCK(mode):
            raise ConfigError(f"{path} is not a training-slot server's socket")
        self.path = Path(path)

    @contextmanager
    def hold(self) -> Iterator[int | None]:
        """Wait for a slot and hold it for the block; yields the slot's number, or
        ``None`` where the server has gone (the block then runs without a slot)."""
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            slot = self._wait(conn)
            yield slot
        finally:
            conn.close()

    def _wait(self, conn: socket.socket) -> int | None:
        try:
            conn.connect(str(self.path))
            line = conn.recv(_GRANT_BYTES)
        except OSError as exc:
            logger.warning("training without a slot: the slot server at %s: %s", self.path, exc)
            return None
        if not line.endswith(b"\n"):
            logger.warning("training without a slot: the slot server at %s stopped", self.path)
            return None
        return int(line)
