"""A coordinator process: its database, model store, cluster ports and gRPC server."""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis
import sqlalchemy as sa

from fedlearn.bootstrap.data import DataSettings, load_data
from fedlearn.bootstrap.kernels import blas_axpy
from fedlearn.cache import (
    RedisEventBus,
    RedisLeaseStore,
    RedisLivenessStore,
    RedisRoundCounters,
)
from fedlearn.client.secure_random import secure_rng
from fedlearn.errors import ConfigError
from fedlearn.models.evaluate import TorchEvaluator
from fedlearn.models.registry import MODEL_NAMES, build_model
from fedlearn.models.weights import model_to_weights
from fedlearn.persistence.engine import make_engine
from fedlearn.persistence.migrate import check_schema_current, upgrade
from fedlearn.persistence.model_store import FileModelStore
from fedlearn.persistence.sql_store import SqlRunStore
from fedlearn.service.cluster import ClusterPorts
from fedlearn.service.coordinator import Coordinator
from fedlearn.service.messages import CoordinatorConfig
from fedlearn.transport.health_probe import GrpcHealthProbe
from fedlearn.transport.http_health import HealthHttpServer
from fedlearn.transport.server import SERVICE_NAME, CoordinatorServer, ServerOptions

__all__ = [
    "PAUSE_BEFORE_CLOSE",
    "CoordinatorSettings",
    "SystemClock",
    "build_coordinator",
    "build_health_endpoint",
]

logger = logging.getLogger(__name__)


class SystemClock:
    def now(self) -> float:
        return time.time()


@dataclass(frozen=True, slots=True)
class CoordinatorSettings:
    server: ServerOptions = field(default_factory=ServerOptions)
    database_url: str = "sqlite:///fedlearn-state/fedlearn.db"
    model_dir: Path = Path("fedlearn-state/models")
    run: CoordinatorConfig = field(default_factory=CoordinatorConfig)
    test_data: DataSettings | None = None
    model_seed: int = 0
    redis_url: str | None = None
    """Run as one replica of a cluster that shares this Redis (and the database and
    model folder); ``None``: a coordinator on its own."""
    replica_id: str | None = None
    """This replica's name in the cluster [default: host name and process id]."""
    lease_ttl_s: float = 3.0
    http_address: str | None = None
    """Where to serve ``/healthz`` and ``/readyz``; ``None``: nowhere."""


def build_coordinator(settings: CoordinatorSettings) -> tuple[Coordinator, CoordinatorServer]:
    """A coordinator on its database and model folder, behind a gRPC server (not started)."""
    cfg = settings.run
    if cfg.model_name not in MODEL_NAMES:
        raise ConfigError(f"unknown model {cfg.model_name!r}; choose one of {MODEL_NAMES}")
    engine = make_engine(settings.database_url)
    cluster = None
    if settings.redis_url is None:
        upgrade(engine)  # a coordinator on its own keeps its schema current itself
    else:  # replicas never migrate behind each other's backs: `fedlearn db upgrade` does
        if engine.dialect.name != "postgresql":
            raise ConfigError(
                "a coordinator cluster (--redis-url) needs a PostgreSQL database that every "
                f"replica shares, not {engine.dialect.name}"
            )
        check_schema_current(engine)
        cluster = _cluster_ports(settings)
    runs = SqlRunStore(engine)
    evaluator = None
    if settings.test_data is not None:
        data = load_data(settings.test_data)
        evaluator = TorchEvaluator(cfg.model_name, data.test_images, data.test_labels)
        logger.info("server-side test set: %d images from %s", len(data.test_labels), data.source)
    initial = model_to_weights(build_model(cfg.model_name, seed=settings.model_seed))
    coordinator = Coordinator(
        cfg,
        initial,
        runs=runs,
        models=FileModelStore(settings.model_dir),
        clock=SystemClock(),
        evaluator=evaluator,
        # central DP's noise and client selection: OS entropy, never a seeded generator
        noise=secure_rng() if cfg.central_dp is not None else None,
        cluster=cluster,
        failpoint=_failpoint_from_env(),
        axpy=blas_axpy(),
    )
    return coordinator, CoordinatorServer(coordinator, settings.server)


PAUSE_BEFORE_CLOSE = "FEDLEARN_FAILPOINT_PAUSE_BEFORE_CLOSE"
"""Fault injection for cluster tests: a file path. The first process of the cluster that
is about to write a round's result creates the file (with its pid) and stops itself
with SIGSTOP, as a leader paused between its lease check and its write would."""


def _failpoint_from_env() -> Callable[[str], None] | None:
    marker = os.environ.get(PAUSE_BEFORE_CLOSE)
    if not marker:
        return None

    def pause(point: str) -> None:
        if point != "before_close":
            return
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return  # another process paused already
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
        logger.warning("failpoint %s: stopping this process before a round's write", point)
        os.kill(os.getpid(), signal.SIGSTOP)

    return pause


def _redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=10)


def _cluster_ports(settings: CoordinatorSettings) -> ClusterPorts:
    assert settings.redis_url is not None
    client = _redis_client(settings.redis_url)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ConfigError(f"cannot reach Redis at {settings.redis_url}: {exc}") from exc
    run_id = settings.run.run_id
    replica = settings.replica_id or f"{socket.gethostname()}-{os.getpid()}"
    logger.info("replica %s of a cluster on %s", replica, settings.redis_url)
    return ClusterPorts(
        replica_id=replica,
        leases=RedisLeaseStore(client),
        events=RedisEventBus(client, run_id=run_id),
        counters=RedisRoundCounters(client),
        liveness=RedisLivenessStore(client, group=run_id),
        lease_ttl_s=settings.lease_ttl_s,
    )


def build_health_endpoint(
    settings: CoordinatorSettings, server: CoordinatorServer
) -> HealthHttpServer | None:
    """``/healthz`` (the process answers) and ``/readyz`` (the replica's gRPC server
    answers the gRPC health-checking protocol with SERVING, and its database and
    Redis answer) on ``settings.http_address``; ``None`` without one."""
    if settings.http_address is None:
        return None
    engine = make_engine(settings.database_url)
    client = _redis_client(settings.redis_url) if settings.redis_url else None
    probe = GrpcHealthProbe(f"127.0.0.1:{server.port}")  # one channel for every check

    def live() -> list[str]:
        return []

    def ready() -> list[str]:
        problems = []
        status = probe.status(SERVICE_NAME, timeout_s=0.4)  # HAProxy waits 0.5 s
        if status != "SERVING":
            problems.append(f"gRPC health of {SERVICE_NAME}: {status}")
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as exc:
            problems.append(f"database: {exc.__class__.__name__}: {exc}"[:300])
        if client is not None:
            try:
                client.ping()
            except redis.RedisError as exc:
                problems.append(f"redis: {exc}")
        return problems

    return HealthHttpServer(settings.http_address, live=live, ready=ready)
