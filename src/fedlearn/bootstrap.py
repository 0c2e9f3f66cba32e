"""The one place that picks concrete adapters and wires them together."""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import redis
import sqlalchemy as sa
import torch

from fedlearn.cache import (
    RedisEventBus,
    RedisLeaseStore,
    RedisLivenessStore,
    RedisRoundCounters,
)
from fedlearn.client.privacy import DpOptions, PrivacyLedger
from fedlearn.client.runtime import ClientOptions, ClientRuntime
from fedlearn.client.secure_random import secure_rng
from fedlearn.client.trainer import LocalTrainer
from fedlearn.core.codecs import available_codecs
from fedlearn.core.retry import RetryPolicy
from fedlearn.core.serialization import decode_weights
from fedlearn.core.types import ClientCapabilities, RoundRecord, RoundStatus
from fedlearn.data import load_dataset, make_partitions, split_holdout
from fedlearn.data.datasets import Dataset
from fedlearn.errors import ConfigError, NotFoundError
from fedlearn.models.evaluate import TorchEvaluator
from fedlearn.models.registry import MODEL_NAMES, build_model
from fedlearn.models.weights import model_to_weights
from fedlearn.persistence.engine import make_engine
from fedlearn.persistence.migrate import check_schema_current, upgrade
from fedlearn.persistence.model_store import FileModelStore
from fedlearn.persistence.sql_store import SqlRunStore
from fedlearn.service.cluster import ClusterPorts
from fedlearn.service.coordinator import Coordinator
from fedlearn.service.messages import CoordinatorConfig, RollbackOutcome
from fedlearn.service.recovery import ErrorRecoveryManager
from fedlearn.transport.client import GrpcCoordinatorClient
from fedlearn.transport.health_probe import GrpcHealthProbe
from fedlearn.transport.http_health import HealthHttpServer
from fedlearn.transport.server import SERVICE_NAME, CoordinatorServer, ServerOptions

__all__ = [
    "ClientSettings",
    "CoordinatorSettings",
    "DataSettings",
    "SystemClock",
    "build_client",
    "build_coordinator",
    "build_health_endpoint",
    "load_data",
    "read_run",
    "rollback_stored_run",
]

logger = logging.getLogger(__name__)


class SystemClock:
    def now(self) -> float:
        return time.time()


@dataclass(frozen=True, slots=True)
class DataSettings:
    """Where a process finds its images."""

    dataset: str = "mnist"
    data_dir: Path | None = None
    cache_dir: Path | None = None
    allow_download: bool = True


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


@dataclass(frozen=True, slots=True)
class ClientSettings:
    coordinator: str = "127.0.0.1:50051"
    client_id: str | None = None
    data: DataSettings = field(default_factory=DataSettings)
    partition: int | None = None
    num_partitions: int = 1
    partitioner: str = "iid"
    dirichlet_alpha: float = 0.5
    seed: int = 0
    holdout_fraction: float = 0.1
    threads: int | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    poll_wait_s: float = 5.0
    dp: DpOptions | None = None
    """Example-level DP-SGD (with its budget); ``None``: plain SGD."""


def load_data(settings: DataSettings) -> Dataset:
    return load_dataset(
        settings.dataset,
        data_dir=settings.data_dir,
        cache_dir=settings.cache_dir,
        allow_download=settings.allow_download,
    )


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


def _client_data(settings: ClientSettings) -> tuple[Dataset, np.ndarray]:
    data = load_data(settings.data)
    indices = np.arange(len(data.train_labels))
    if settings.partition is not None:
        if not 0 <= settings.partition < settings.num_partitions:
            raise ConfigError(
                f"partition {settings.partition} is outside 0..{settings.num_partitions - 1}"
            )
        parts = make_partitions(
            data.train_labels,
            settings.num_partitions,
            scheme=settings.partitioner,
            seed=settings.seed,
            alpha=settings.dirichlet_alpha,
        )
        indices = parts[settings.partition]
    return data, indices


def build_client(settings: ClientSettings) -> ClientRuntime:
    """A client process's runtime: its data, a trainer and a gRPC connection."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    data, indices = _client_data(settings)
    rng = np.random.default_rng([settings.seed, settings.partition or 0, 7])
    train_idx, holdout_idx = split_holdout(indices, settings.holdout_fraction, rng=rng)
    logger.info(
        "client data: %d training and %d held-out images from %s",
        len(train_idx),
        len(holdout_idx),
        data.source,
    )

    ledger = PrivacyLedger(settings.dp) if settings.dp is not None else None

    def make_trainer(model_name: str) -> LocalTrainer:
        return LocalTrainer(
            model_name,
            data.train_images[train_idx],
            data.train_labels[train_idx],
            holdout_images=data.train_images[holdout_idx],
            holdout_labels=data.train_labels[holdout_idx],
            seed=settings.seed * 1000 + (settings.partition or 0),
            privacy=ledger,
        )

    caps = ClientCapabilities(
        available_samples=len(train_idx),
        supported_models=tuple(MODEL_NAMES),
        codecs=available_codecs(),
    )
    if settings.dp is not None:
        caps = replace(caps, privacy=settings.dp.config)
    options = ClientOptions(
        client_id=settings.client_id, capabilities=caps, poll_wait_s=settings.poll_wait_s
    )
    api = GrpcCoordinatorClient(settings.coordinator, retry=settings.retry, seed=settings.seed)
    return ClientRuntime(api, make_trainer, options)


@dataclass(frozen=True, slots=True)
class RunResult:
    rounds: tuple[RoundRecord, ...]
    final_weights: dict[str, np.ndarray]
    model_name: str
    slowest_training_s: dict[int, float]
    """Per round, the longest local training time among its accepted updates."""


def read_run(database_url: str, model_dir: Path, run_id: str) -> RunResult:
    """The stored rounds of a run and its latest global model."""
    runs = SqlRunStore(make_engine(database_url))
    run = runs.get_run(run_id)
    if run is None:
        raise NotFoundError(f"no run {run_id!r} in {database_url}")
    rounds = tuple(runs.list_rounds(run_id))
    done = [
        r for r in rounds if r.status is RoundStatus.COMPLETED and r.global_model_path is not None
    ]
    if not done:
        raise NotFoundError(f"run {run_id!r} has no stored global model")
    payload = FileModelStore(model_dir).get(done[-1].global_model_path or "")
    weights = {k: np.array(v) for k, v in decode_weights(payload).tensors.items()}
    slowest = {
        r.round_number: max((u.train_seconds for u in updates), default=0.0)
        for r in rounds
        if (updates := runs.list_updates(run_id, r.round_number))
    }
    return RunResult(rounds, weights, run.model_name, slowest)


def rollback_stored_run(
    database_url: str, model_dir: Path, run_id: str, to_round: int, *, reason: str
) -> RollbackOutcome:
    """Roll back the run of a stopped coordinator: the open round (if any) fails, the
    completed rounds after ``to_round`` are marked rolled back; a restarted
    coordinator resumes from ``to_round``'s model."""
    engine = make_engine(database_url)
    check_schema_current(engine)
    runs = SqlRunStore(engine)
    if runs.get_run(run_id) is None:
        raise NotFoundError(f"no run {run_id!r} in {database_url}")
    models = FileModelStore(model_dir)
    target = runs.get_round(run_id, to_round)
    if target is None or target.global_model_path is None:
        raise NotFoundError(f"run {run_id!r} has no stored model for round {to_round}")
    specs = decode_weights(models.get(target.global_model_path)).specs
    manager = ErrorRecoveryManager(run_id, runs=runs, models=models, specs=specs)
    return manager.rollback_stopped_run(to_round, reason=reason, now=time.time()).outcome
