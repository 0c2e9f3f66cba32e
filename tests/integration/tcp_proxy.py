"""A TCP proxy for fault-injection tests: 127.0.0.1:PORT -> 127.0.0.1:TARGET, with faults.

Each accepted connection gets a connection to the target and two forwarding threads.
On demand the proxy

- ``cut()``s the network: every live connection is closed at once and new ones are
  accepted and closed straight away (the client sees the peer hang up, as gRPC does when
  a route disappears), until ``restore()``;
- ``hold_uploads(after_bytes=n)``: client-to-target bytes beyond the next ``n`` are read
  and dropped instead of forwarded, so a client's upload stays in flight (the client
  thinks it sent everything and waits for an answer that cannot come) until the client
  dies, the proxy is cut, or ``restore()`` ends the hold for new data.

Either side closing its end closes the whole connection (no TCP half-close), which is
all HTTP/2 needs. Used by tests and by ``benchmarks/chaos.py``; standard library only.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable

__all__ = ["TcpProxy"]

_BUFFER = 64 * 1024


class _Link:
    """One proxied connection: the client's socket and the target's."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self._closed = threading.Event()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv
            with contextlib.suppress(OSError):
                sock.close()


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:target_port`` until :meth:`close`."""

    def __init__(self, target_port: int, *, port: int = 0, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self._listener = socket.create_server((host, port))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._cut = False
        self._closed = threading.Event()
        self._hold_at: int | None = None
        self.bytes_up = 0
        """Client-to-target bytes forwarded."""
        self.bytes_down = 0
        """Target-to-client bytes forwarded."""
        self.held = 0
        """Client-to-target bytes dropped by :meth:`hold_uploads`."""
        self.accepted = 0
        self.refused = 0
        """Connections accepted and closed at once while cut (or when the target was down)."""
        self._acceptor = threading.Thread(
            target=self._accept_loop, name="proxy-accept", daemon=True
        )
        self._acceptor.start()

    @property
    def address(self) -> str:
        return f"{self.target[0]}:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._cut

    # -- faults -----------------------------------------------------------------------

    def cut(self) -> None:
        """Close every live connection; refuse new ones until :meth:`restore`."""
        with self._lock:
            self._cut = True
            self._hold_at = None
            links, self._links = self._links, set()
        for link in links:
            link.close()

    def restore(self) -> None:
        """Forward new connections again, and stop holding uploads back."""
        with self._lock:
            self._cut = False
            self._hold_at = None

    def hold_uploads(self, *, after_bytes: int = 0) -> None:
        """Drop client-to-target data once ``after_bytes`` more were forwarded."""
        with self._lock:
            self._hold_at = self.bytes_up + after_bytes

    def close(self) -> None:
        """Stop accepting and close every connection."""
        self._closed.set()
        self.cut()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._acceptor.join(timeout=5)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_until(
        self, condition: Callable[[TcpProxy], bool], *, timeout_s: float, poll_s: float = 0.005
    ) -> bool:
        """Poll ``condition(self)`` until it holds (True) or ``timeout_s`` passes (False)."""
        end = time.monotonic() + timeout_s
        while not condition(self):
            if time.monotonic() >= end:
                return False
            time.sleep(poll_s)
        return True

    # -- forwarding -------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._admit(client)

    def _admit(self, client: socket.socket) -> None:
        upstream = None
        if not self._cut:
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                upstream = None
        with self._lock:
            if upstream is None or self._cut:
                self.refused += 1
                for sock in (client, upstream):
                    if sock is not None:
                        sock.close()
                return
            link = _Link(client, upstream)
            self._links.add(link)
            self.accepted += 1
        for up in (True, False):
            threading.Thread(
                target=self._pump, args=(link, up), name="proxy-pump", daemon=True
            ).start()

    def _pump(self, link: _Link, up: bool) -> None:
        source, sink = (link.client, link.upstream) if up else (link.upstream, link.client)
        try:
            while True:
                data = source.recv(_BUFFER)
                if not data:
                    break
                if up:
                    data = self._count_up(data)
                else:
                    with self._lock:  # counted before it is sent: a reader sees it counted
                        self.bytes_down += len(data)
                if data:
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._links.discard(link)
            link.close()

    def _count_up(self, data: bytes) -> bytes:
        """The part of ``data`` to forward; the rest is counted as held."""
        with self._lock:
            keep = len(data)
            if self._hold_at is not None:
                keep = max(0, min(keep, self._hold_at - self.bytes_up))
            self.bytes_up += keep
            self.held += len(data) - keep
        return data[:keep]
