"""HAProxy in front of coordinator replicas: the configuration, and running the binary.

Why HAProxy: a gRPC load balancer must speak HTTP/2 on both sides (so that it
balances each call, not each TCP connection), pass trailers through (gRPC puts
its status there), and take a replica out of rotation on its own when the
replica stops answering, before clients notice. Open-source nginx has only
passive health checks (a server is marked failed after requests to it fail);
HAProxy 2.6 (Debian 12's package) has active checks, per-request HTTP/2
round robin, and layer-7 retries.

How a replica is checked: HAProxy 2.6 cannot make a gRPC health-protocol call
itself (its ``http-check`` cannot frame a protobuf body or read the
``grpc-status`` trailer), so every replica serves ``GET /readyz`` on a small HTTP
port (``fedlearn.transport.http_health``), and that handler makes a real
``grpc.health.v1.Health/Check`` call to the replica's own gRPC port
(``fedlearn.transport.health_probe``). A 200 therefore means: the gRPC socket
accepts connections, HTTP/2 works, the server's event loop answers, and the health
servicer says SERVING (the coordinator flips it to NOT_SERVING when it shuts down
gracefully); /readyz may add its own conditions (database, Redis). HAProxy's
``option httpchk GET /readyz`` on the HTTP port (``check port N``) thus covers the
gRPC health protocol end to end, every ``inter`` milliseconds (500). Two failed
checks in a row (``fall 2``) take a replica out, one good check (``rise 1``) brings
it back. Measured with HAProxy 2.6.12 (``tests/integration/test_load_balancer.py``):
a replica whose /readyz turns 503 is out within about 1 s; a frozen one (SIGSTOP:
its checks time out after ``timeout check`` 500 ms) within about 1.5 s, and
``on-marked-down shutdown-sessions`` then cuts the calls still waiting on it (the
client sees UNAVAILABLE, which it retries) instead of letting them wait out the
120 s timeouts; a killed replica's new calls are re-sent to another one at once
(``retry-on conn-failure``), before any check notices.

Timeouts are long (120 s) because ``GetTask`` long-polls and a 6.65 MB update
upload on a slow link are normal calls, not stuck ones. ``retry-on
conn-failure empty-response response-timeout`` with ``option redispatch``
re-sends a request that never reached a replica, or got no answer, to another
one (HAProxy retries only requests it still holds whole in its buffer, so a large
streamed upload is never replayed; the client's own retry covers it).

Balancing is per call: HAProxy ends the clients' HTTP/2 connections and sends
each stream (each gRPC call) to the next replica in turn, so one client's
``GetTask``, ``GetGlobalModel`` and ``SubmitUpdate`` may reach different replicas;
the replicas share their state through the database, Redis and the model folder.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fedlearn.errors import ConfigError

__all__ = [
    "BACKEND",
    "ReplicaEndpoint",
    "check_haproxy_config",
    "find_haproxy",
    "haproxy_config",
    "haproxy_version",
    "parse_server_states",
    "server_states",
    "split_address",
]

BACKEND = "coordinators"
"""The name of the backend of replicas in the configuration (and on the stats page)."""

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True, slots=True)
class ReplicaEndpoint:
    """One coordinator replica: its gRPC address, and the HTTP address of /readyz."""

    name: str
    grpc_address: str
    http_address: str


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` as ``(host, port)``; ``ConfigError`` if it is not one."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"expected host:port, not {address!r}")
    return host, int(port)


def haproxy_config(
    *,
    lb_address: str,
    replicas: Sequence[ReplicaEndpoint],
    check_interval_ms: int = 500,
    check_timeout_ms: int = 500,
    stats_address: str | None = None,
) -> str:
    """The text of an ``haproxy.cfg`` that balances gRPC calls over ``replicas``.

    The frontend listens on ``lb_address`` for HTTP/2 without TLS (what
    ``grpc.insecure_channel`` speaks); ``stats_address``, if given, serves
    HAProxy's status page (``/``, or ``/;csv``).
    """
    if not replicas:
        raise ConfigError("the load balancer needs at least one replica")
    names = [r.name for r in replicas]
    if len(set(names)) != len(names):
        raise ConfigError(f"replica names must differ: {names}")
    split_address(lb_address)
    servers = [_server_line(r) for r in replicas]
    lines = [
        "# Written by fedlearn (fedlearn.cli.haproxy); HAProxy 2.6 or later.",
        "global",
        "    maxconn 4096",
        # No ``log`` lines: run in the foreground (``-db``), HAProxy prints each
        # server going DOWN or UP on stderr once; a log target would print it twice.
        "",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout client 120s",
        "    timeout server 120s",
        "    timeout http-request 30s",
        f"    timeout check {check_timeout_ms}ms",
        "    retries 2",
        "    option redispatch 1",
        "    retry-on conn-failure empty-response response-timeout",
        "",
        "frontend grpc",
        f"    bind {lb_address} proto h2",
        f"    default_backend {BACKEND}",
        "",
        f"backend {BACKEND}",
        "    balance roundrobin",
        "    option httpchk GET /readyz",
        "    http-check expect status 200",
        f"    default-server inter {check_interval_ms} fall 2 rise 1"
        " on-marked-down shutdown-sessions",
        *servers,
    ]
    if stats_address is not None:
        split_address(stats_address)
        lines += [
            "",
            "listen stats",
            f"    bind {stats_address}",
            "    stats enable",
            "    stats uri /",
            "    stats refresh 2s",
        ]
    return "\n".join(lines) + "\n"


def _server_line(replica: ReplicaEndpoint) -> str:
    if not _NAME.match(replica.name):
        raise ConfigError(f"replica name {replica.name!r}: use letters, digits, '.', '_', '-'")
    split_address(replica.grpc_address)
    _, http_port = split_address(replica.http_address)
    # Calls go to the gRPC port in HTTP/2; checks to the HTTP port in HTTP/1.1. HAProxy
    # 2.6 takes ``check-proto`` only on the server line: from ``default-server`` the
    # checks would speak the server's h2 to the HTTP port and fail (Socket error).
    return (
        f"    server {replica.name} {replica.grpc_address} proto h2"
        f" check port {http_port} check-proto h1"
    )


def server_states(stats_address: str, *, timeout_s: float = 1.0) -> dict[str, str]:
    """Each replica's state as HAProxy sees it (``UP``, ``DOWN``, ``NOLB``...), read from
    the stats page on ``stats_address``; empty if the page does not answer."""
    try:
        url = f"http://{stats_address}/;csv"
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return parse_server_states(response.read().decode())
    except OSError:
        return {}


def parse_server_states(csv_text: str) -> dict[str, str]:
    """The replicas' states in the CSV of HAProxy's stats page."""
    rows = csv_text.splitlines()
    if not rows:
        return {}
    header = rows[0].lstrip("# ").split(",")
    proxy, server, status = (header.index(k) for k in ("pxname", "svname", "status"))
    states = {}
    for row in rows[1:]:
        cells = row.split(",")
        if len(cells) > status and cells[proxy] == BACKEND and cells[server] != "BACKEND":
            states[cells[server]] = cells[status].split(" ")[0]  # "DOWN 1/2" while going down
    return states


def find_haproxy() -> str:
    """The path of the ``haproxy`` binary; ``ConfigError`` saying how to get it if absent."""
    path = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(p).exists()), None
    )
    if path is None:
        raise ConfigError(
            "haproxy is not installed (Debian/Ubuntu: apt-get install haproxy; "
            "`make install` does it where apt-get is available)"
        )
    return path


def haproxy_version(binary: str | None = None) -> str:
    """The version line of ``haproxy -v``, e.g. ``2.6.12-1+deb12u4``."""
    done = subprocess.run(
        [binary or find_haproxy(), "-v"], capture_output=True, text=True, check=False, timeout=10
    )
    match = re.search(r"version (\S+)", done.stdout)
    return match.group(1) if match else done.stdout.strip()


def check_haproxy_config(path: Path, binary: str | None = None) -> None:
    """Run ``haproxy -c -f path``; ``ConfigError`` with HAProxy's words if it refuses."""
    done = subprocess.run(
        [binary or find_haproxy(), "-c", "-f", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if done.returncode != 0:
        raise ConfigError(f"haproxy rejects {path}:\n{done.stdout}{done.stderr}".rstrip())
