"""``make_engine``: a SQLAlchemy engine set up for fedlearn's stores.

SQLite gets, on every new connection: ``foreign_keys=ON``, a ``busy_timeout``
so writers queue instead of failing, and WAL journal mode for file databases
(readers never block the writer). SQLAlchemy emits ``BEGIN`` itself:
``BEGIN IMMEDIATE`` by default, so a transaction that reads before it writes
takes the write lock up front and waits in ``busy_timeout`` instead of failing
with "database is locked" on lock upgrade; read-only work can ask for a plain
deferred ``BEGIN`` with :data:`READ_ONLY`. An in-memory SQLite database lives in
one connection shared by every thread (``StaticPool``); callers serialize access
to it (``SqlRunStore`` does).

PostgreSQL URLs (``postgresql+psycopg://...``) get a pool that checks
connections before use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.pool import StaticPool

__all__ = ["READ_ONLY", "is_shared_connection", "make_engine"]

_BEGIN_OPTION = "fedlearn_sqlite_begin"
READ_ONLY: dict[str, Any] = {_BEGIN_OPTION: "BEGIN"}
"""Execution options for a read-only connection (a deferred ``BEGIN`` on SQLite)."""


def make_engine(url: str | URL, *, busy_timeout_ms: int = 10_000) -> Engine:
    """An engine for ``url``; SQLite file databases get their folder created."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, pool_pre_ping=True)
    memory = _is_memory(parsed)
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if memory:
        kwargs["poolclass"] = StaticPool
    elif parsed.database:
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(parsed, **kwargs)
    _configure_sqlite(engine, busy_timeout_ms=busy_timeout_ms, wal=not memory)
    return engine


def is_shared_connection(engine: Engine) -> bool:
    """Whether every checkout returns the same connection (in-memory SQLite)."""
    return isinstance(engine.pool, StaticPool)


def _is_memory(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


def _configure_sqlite(engine: Engine, *, busy_timeout_ms: int, wal: bool) -> None:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Stop the sqlite3 module from issuing BEGIN itself (it skips it before
        # SELECT and cannot do IMMEDIATE); ``on_begin`` below emits it instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if wal:
                cursor.execute("PRAGMA journal_mode = WAL")
        finally:
            cursor.close()

    def on_begin(connection: Connection) -> None:
        begin = connection.get_execution_options().get(_BEGIN_OPTION, "BEGIN IMMEDIATE")
        connection.exec_driver_sql(begin)

    sa.event.listen(engine, "connect", on_connect)
    sa.event.listen(engine, "begin", on_begin)
