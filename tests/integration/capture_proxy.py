"""A TCP proxy that records every byte: 127.0.0.1:PORT -> 127.0.0.1:TARGET.

Each accepted connection gets a connection to the target and two forwarding threads; the
bytes each side sends are appended to that connection's record before they are forwarded,
so what the target received is exactly what :meth:`CaptureProxy.sent` returns. Used by the
wire-capture privacy test; standard library only. (``tcp_proxy.TcpProxy`` injects faults
and only counts bytes; this one only records.)
"""

from __future__ import annotations

import contextlib
import socket
import threading

__all__ = ["CaptureProxy"]

_BUFFER = 64 * 1024


class _Connection:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.up = bytearray()
        """Bytes the client sent (forwarded to the target)."""
        self.down = bytearray()
        """Bytes the target sent (forwarded to the client)."""

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class CaptureProxy:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:target_port`` and records the traffic."""

    def __init__(self, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._connections: list[_Connection] = []
        self._closed = threading.Event()
        self._acceptor = threading.Thread(target=self._accept_loop, name="capture", daemon=True)
        self._acceptor.start()

    @property
    def address(self) -> str:
        return f"{self.target[0]}:{self.port}"

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._connections)

    def sent(self, *, first: int = 0) -> list[bytes]:
        """What the clients sent, one ``bytes`` per connection, connections ``first``
        onwards in the order they were accepted."""
        with self._lock:
            return [bytes(c.up) for c in self._connections[first:]]

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._acceptor.join(timeout=5)
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.close()

    def __enter__(self) -> CaptureProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            connection = _Connection(client, upstream)
            with self._lock:
                self._connections.append(connection)
            for up in (True, False):
                threading.Thread(
                    target=self._pump, args=(connection, up), name="capture-pump", daemon=True
                ).start()

    def _pump(self, connection: _Connection, up: bool) -> None:
        if up:
            source, sink, record = connection.client, connection.upstream, connection.up
        else:
            source, sink, record = connection.upstream, connection.client, connection.down
        try:
            while True:
                data = source.recv(_BUFFER)
                if not data:
                    break
                with self._lock:
                    record.extend(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            connection.close()
