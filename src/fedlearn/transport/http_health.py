"""``/healthz`` and ``/readyz`` over plain HTTP, for load balancers and orchestrators.

HAProxy, Kubernetes and ECS probe a replica with a plain HTTP GET; this server
answers them from two callables that list what is wrong (an empty list: all is
well). ``live`` answers "should this process be restarted?", ``ready`` answers
"may this replica be sent traffic now?". A check that raises counts as one
problem, its message, so a broken check makes the replica unready rather than
killing the server thread.

It is the standard library's ``ThreadingHTTPServer`` on a daemon thread: a
probe every half second needs no framework, and a slow check holds up only its
own request.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fedlearn.errors import ConfigError

__all__ = ["HealthCheck", "HealthHttpServer", "run_checks"]

logger = logging.getLogger(__name__)

HealthCheck = Callable[[], list[str]]
"""Returns the problems it finds; an empty list means healthy."""


def run_checks(check: HealthCheck) -> list[str]:
    """The problems ``check`` reports; an exception becomes one problem, its message."""
    try:
        return [str(problem) for problem in check()]
    except Exception as exc:
        return [f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: HAProxy and kubelet may reuse connections

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        check = self.server.checks.get(path)
        if check is None:
            self._reply(HTTPStatus.NOT_FOUND, {"status": "not found", "path": path})
            return
        problems = run_checks(check)
        if problems:
            body = {"status": "unavailable", "problems": problems}
            self._reply(HTTPStatus.SERVICE_UNAVAILABLE, body)
        else:
            self._reply(HTTPStatus.OK, {"status": "ok"})

    def do_HEAD(self) -> None:
        self._not_allowed()

    def do_POST(self) -> None:
        self._not_allowed()

    def do_PUT(self) -> None:
        self._not_allowed()

    def do_DELETE(self) -> None:
        self._not_allowed()

    def do_PATCH(self) -> None:
        self._not_allowed()

    def do_OPTIONS(self) -> None:
        self._not_allowed()

    def _not_allowed(self) -> None:
        self._reply(HTTPStatus.METHOD_NOT_ALLOWED, {"status": "method not allowed"})

    def _reply(self, status: HTTPStatus, body: Mapping[str, object]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        if status is HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", "GET")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: a probe every half second would flood stderr."""

    def log_error(self, format: str, *args: object) -> None:
        logger.debug("health endpoint: " + format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64
    checks: dict[str, HealthCheck]

    def handle_error(self, request: object, client_address: object) -> None:
        """A prober that hangs up early (HAProxy resets a check that timed out) is
        routine: a debug line, not socketserver's traceback on stderr."""
        logger.debug("health endpoint: request from %s failed", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class HealthHttpServer:
    """Serves ``GET /healthz`` (from ``live``) and ``GET /readyz`` (from ``ready``).

    200 ``{"status": "ok"}`` when the check lists no problems, otherwise 503
    ``{"status": "unavailable", "problems": [...]}``; other paths 404, other
    methods 405. ``address`` is ``host:port``; port 0 binds any free port,
    which ``port`` gives once the server is constructed.
    """

    def __init__(
        self,
        address: str,
        *,
        live: HealthCheck,
        ready: HealthCheck,
    ) -> None:
        host, port = _split_address(address)
        try:
            server_class = _Server6 if ":" in host else _Server
            self._server = server_class((host, port), _Handler)
        except OSError as exc:
            raise ConfigError(f"could not bind the health endpoint to {address}: {exc}") from exc
        self._server.checks = {"/healthz": live, "/readyz": ready}
        self._thread: threading.Thread | None = None
        self.host = host
        self.port: int = int(self._server.server_address[1])

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="health-http",
            daemon=True,
        )
        self._thread.start()
        logger.info("health endpoints on http://%s/healthz and /readyz", self.address)

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice or before ``start``."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5.0)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> HealthHttpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"health address must be host:port, not {address!r}")
    return host.strip("[]") or "0.0.0.0", int(port)
