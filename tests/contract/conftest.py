"""Backends for the contract suites: each port's tests run against every adapter.

PostgreSQL tests get a fresh schema each (see ``fedlearn.persistence.testing``)
on ``$FEDLEARN_TEST_POSTGRES_URL`` (default ``postgres@127.0.0.1:5432/test``).
Redis tests get a key prefix of their own on ``$FEDLEARN_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``), whose keys are deleted afterwards.
When a server is unreachable its tests are skipped, or fail when ``CI=true``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis

from fedlearn.errors import StorageError
from fedlearn.persistence import (
    FileModelStore,
    InMemoryModelStore,
    InMemoryRunStore,
    SqlRunStore,
    make_engine,
)
from fedlearn.persistence.migrate import upgrade
from fedlearn.persistence.testing import DEFAULT_TEST_POSTGRES_URL, fresh_postgres_schema
from fedlearn.service.ports import ModelStore, RunStore

POSTGRES_URL = os.environ.get("FEDLEARN_TEST_POSTGRES_URL", DEFAULT_TEST_POSTGRES_URL)
REDIS_URL = os.environ.get("FEDLEARN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
_unavailable: list[str] = []  # the first connection error, so later tests do not wait
_redis_unavailable: list[str] = []


def _server_unavailable(server: str, reason: str) -> None:
    message = f"{server} is needed for this test: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _postgres_unavailable(reason: str) -> None:
    _server_unavailable("PostgreSQL", reason)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL whose connections use a fresh, empty schema, dropped afterwards."""
    if _unavailable:
        _postgres_unavailable(_unavailable[0])
    with ExitStack() as stack:
        try:
            url = stack.enter_context(fresh_postgres_schema(POSTGRES_URL))
        except StorageError as exc:
            _unavailable.append(str(exc))
            _postgres_unavailable(str(exc))
        yield url


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    """A client of the test Redis server (replies as bytes; the stores accept both)."""
    if _redis_unavailable:
        _server_unavailable("Redis", _redis_unavailable[0])
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3, socket_timeout=10)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        _redis_unavailable.append(f"{REDIS_URL}: {exc}")
        _server_unavailable("Redis", _redis_unavailable[0])
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def redis_prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix used by this test alone; its keys are deleted afterwards."""
    prefix = f"fedlearn-test:{uuid.uuid4().hex[:16]}:"
    yield prefix
    keys = list(redis_client.scan_iter(match=f"{prefix}*", count=500))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'db' / 'fedlearn.db'}"


SQL_BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=SQL_BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty database of the backend named by ``request.param``."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(name)
    return url


def _sql_run_store(url: str) -> Iterator[RunStore]:
    upgrade(url)
    engine = make_engine(url)
    try:
        yield SqlRunStore(engine)
    finally:
        engine.dispose()


@pytest.fixture(params=["memory", *SQL_BACKENDS])
def run_store(request: pytest.FixtureRequest) -> Iterator[RunStore]:
    if request.param == "memory":
        yield InMemoryRunStore()
        return
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    yield from _sql_run_store(request.getfixturevalue(name))


@pytest.fixture(params=["file", "memory"])
def model_store(request: pytest.FixtureRequest, tmp_path: Path) -> ModelStore:
    if request.param == "file":
        return FileModelStore(tmp_path / "models")
    return InMemoryModelStore()
