"""A coordinator cluster on one machine: N ``fedlearn coordinator`` replicas behind HAProxy.

The replicas share one database (PostgreSQL), one Redis (leases, client liveness)
and one model folder; HAProxy (see ``fedlearn.cli.haproxy``) spreads gRPC calls
over those whose ``/readyz`` answers 200. Used by ``fedlearn cluster`` and by the
cluster tests, which kill, pause and restart replicas through it::

    settings = ClusterSettings(database_url=..., redis_url=..., work_dir=Path("c"))
    with LocalCluster(settings) as cluster:
        print(cluster.lb_address)                 # point clients here
        cluster.kill("replica-1", signal.SIGSTOP)  # HAProxy drops it within ~1-2 s
"""

from __future__ import annotations

import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fedlearn.cli.haproxy import (
    ReplicaEndpoint,
    check_haproxy_config,
    find_haproxy,
    haproxy_config,
    server_states,
    split_address,
)
from fedlearn.cli.processes import ProcessGroup, fedlearn_command
from fedlearn.errors import ConfigError, FedLearnError
from fedlearn.transport.health_probe import SERVING, grpc_health_status

__all__ = ["HAPROXY", "ClusterSettings", "LocalCluster", "replica_command"]

HAPROXY = "haproxy"
"""The name of the load balancer among the cluster's processes (and of its log)."""


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """What a local cluster runs on; ``lb_address`` with port 0 takes any free port."""

    database_url: str
    redis_url: str
    work_dir: Path
    """Holds ``haproxy.cfg``, ``logs/NAME.log``, port files, and ``models/`` by default."""
    model_dir: Path | None = None
    """The model store every replica shares [default: ``work_dir/models``]."""
    replicas: int = 3
    lb_address: str = "127.0.0.1:0"
    stats_address: str | None = None
    """HAProxy's status page [default: any free port on 127.0.0.1]."""
    coordinator_args: tuple[str, ...] = ()
    """More ``fedlearn coordinator`` options, given to every replica."""
    env: Mapping[str, str] | None = field(default=None, compare=False)
    """The replicas' environment [default: this process's]."""
    check_interval_ms: int = 500
    check_timeout_ms: int = 500
    start_timeout_s: float = 180.0
    migrate: bool = True
    """Bring the schema up to date once before the replicas start (rather than let
    N replicas race to migrate the same database)."""


def replica_command(
    endpoint: ReplicaEndpoint, settings: ClusterSettings, *, port_file: Path
) -> list[str]:
    """The ``fedlearn coordinator`` command line of one replica."""
    model_dir = settings.model_dir or settings.work_dir / "models"
    return fedlearn_command(
        "coordinator", "--address", endpoint.grpc_address,
        "--http-address", endpoint.http_address, "--replica-id", endpoint.name,
        "--database-url", settings.database_url, "--redis-url", settings.redis_url,
        "--model-dir", model_dir, "--port-file", port_file,
        *settings.coordinator_args,
    )  # fmt: skip


class LocalCluster:
    """Starts the replicas and HAProxy, waits until all are ready, stops them all.

    Replicas are named ``replica-0`` .. ``replica-{N-1}``; their ports are chosen
    once, so a restarted replica comes back where HAProxy expects it.
    """

    def __init__(self, settings: ClusterSettings) -> None:
        if settings.replicas < 1:
            raise ConfigError("a cluster needs at least one replica")
        self.settings = settings
        self.work_dir = settings.work_dir
        self._group = ProcessGroup(
            settings.work_dir / "logs", env=dict(settings.env) if settings.env is not None else None
        )
        host, port = split_address(settings.lb_address)
        self.lb_address = f"{host}:{port or _free_port(host)}"
        self.stats_address = settings.stats_address or f"127.0.0.1:{_free_port()}"
        self.replicas = tuple(
            ReplicaEndpoint(
                f"replica-{i}", f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"
            )
            for i in range(settings.replicas)
        )
        self.config_path = settings.work_dir / "haproxy.cfg"
        self._started = False

    # -- starting and stopping -------------------------------------------------------

    def start(self) -> None:
        """Start everything; return once every replica and the load balancer serve."""
        binary = find_haproxy()  # before anything starts: a clear error if it is missing
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            haproxy_config(
                lb_address=self.lb_address,
                replicas=self.replicas,
                check_interval_ms=self.settings.check_interval_ms,
                check_timeout_ms=self.settings.check_timeout_ms,
                stats_address=self.stats_address,
            )
        )
        check_haproxy_config(self.config_path, binary)
        if self.settings.migrate:
            # here, not at the top: `fedlearn client` loads this module, not SQLAlchemy
            from fedlearn.persistence.migrate import upgrade  # noqa: PLC0415

            upgrade(self.settings.database_url)
        self._started = True
        try:
            for replica in self.replicas:
                self._port_file(replica.name).unlink(missing_ok=True)
                command = replica_command(
                    replica, self.settings, port_file=self._port_file(replica.name)
                )
                self._group.start(replica.name, command)
            self._group.start(HAPROXY, [binary, "-f", str(self.config_path), "-db"])
            self.wait_ready(timeout_s=self.settings.start_timeout_s)
        except BaseException:
            self.stop()
            raise

    def stop(self, *, grace_s: float = 10.0) -> None:
        """SIGTERM every process (SIGKILL after ``grace_s``); safe to call twice."""
        if self._started:
            self._started = False
            self._group.stop(grace_s=grace_s)

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- one process -----------------------------------------------------------------

    def endpoint(self, name: str) -> ReplicaEndpoint:
        for replica in self.replicas:
            if replica.name == name:
                return replica
        raise KeyError(f"no replica named {name!r}")

    def pid(self, name: str) -> int:
        """The process id of a replica, or of ``HAPROXY``."""
        return self._group.pid(name)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to a replica (or ``HAPROXY``): SIGKILL, SIGTERM, SIGSTOP, SIGCONT..."""
        self._group.send_signal(name, sig)

    def restart(self, name: str, *, wait: bool = True, timeout_s: float = 120.0) -> None:
        """Stop a replica if it still runs, start it again on the same ports, and (with
        ``wait``) return once its ``/readyz`` answers 200."""
        self.endpoint(name)
        self._port_file(name).unlink(missing_ok=True)
        self._group.restart(name)
        if wait:
            self.wait_ready([name], timeout_s=timeout_s, through_lb=False)

    def running(self, name: str) -> bool:
        return self._group.running(name)

    def log_path(self, name: str) -> Path:
        return self.work_dir / "logs" / f"{name}.log"

    def exited(self) -> list[str]:
        """The names of the replicas (and ``HAPROXY``) that no longer run."""
        names = [*(r.name for r in self.replicas), HAPROXY]
        return [n for n in names if not self._group.running(n)]

    def ready(self, name: str) -> bool:
        """Whether the replica's ``/readyz`` answers 200 now."""
        return _http_ok(f"http://{self.endpoint(name).http_address}/readyz")

    def lb_states(self) -> dict[str, str]:
        """Each replica's state in HAProxy (``UP``, ``DOWN``...), from its stats page."""
        return server_states(self.stats_address)

    def lb_serving(self, *, timeout_s: float = 1.0) -> bool:
        """Whether a gRPC health check through the load balancer answers SERVING."""
        return grpc_health_status(self.lb_address, timeout_s=timeout_s) == SERVING

    def wait_ready(
        self,
        names: Sequence[str] | None = None,
        *,
        timeout_s: float = 120.0,
        through_lb: bool = True,
    ) -> None:
        """Wait until the replicas ``names`` (default: all) answer ``/readyz`` with 200
        and, with ``through_lb``, HAProxy has them UP and a gRPC health check through it
        answers SERVING."""
        wanted = list(names if names is not None else (r.name for r in self.replicas))
        waiting = list(wanted)
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            dead = [n for n in [*waiting, HAPROXY] if not self._group.running(n)]
            if dead:
                raise FedLearnError(
                    "; ".join(f"{n} is not running (see {self.log_path(n)})" for n in dead)
                )
            waiting = [n for n in waiting if not self.ready(n)]
            if not waiting and (not through_lb or self._lb_ready(wanted)):
                return
            time.sleep(0.2)
        what = ", ".join(waiting) if waiting else f"the load balancer on {self.lb_address}"
        raise FedLearnError(f"{what} not ready after {timeout_s:.0f} s (logs in {self.work_dir})")

    def _lb_ready(self, names: Sequence[str]) -> bool:
        states = self.lb_states()
        return all(states.get(n) == "UP" for n in names) and self.lb_serving()

    def _port_file(self, name: str) -> Path:
        return self.work_dir / f"{name}.port"


def _free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _http_ok(url: str, *, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False
