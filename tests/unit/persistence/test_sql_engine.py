"""``make_engine`` sets SQLite up for a store shared by many threads."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from fedlearn.core.types import RunRecord
from fedlearn.errors import StorageError
from fedlearn.persistence import SqlRunStore, make_engine
from fedlearn.persistence.tables import metadata


def _pragma(engine: sa.Engine, name: str) -> object:
    with engine.connect() as conn:
        return conn.exec_driver_sql(f"PRAGMA {name}").scalar()


def test_file_sqlite_gets_its_folder_wal_foreign_keys_and_busy_timeout(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'a' / 'b' / 'fedlearn.db'}", busy_timeout_ms=1234)
    try:
        assert (tmp_path / "a" / "b").is_dir()
        assert _pragma(engine, "journal_mode") == "wal"
        assert _pragma(engine, "foreign_keys") == 1
        assert _pragma(engine, "busy_timeout") == 1234
    finally:
        engine.dispose()


def test_write_transactions_take_the_write_lock_at_begin(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'fedlearn.db'}", busy_timeout_ms=50)
    metadata.create_all(engine)
    try:
        with engine.begin():
            # BEGIN IMMEDIATE: a second writer waits for the lock, then gives up
            other = engine.connect()
            with pytest.raises(sa.exc.OperationalError, match="locked"):
                other.begin()
            other.close()
    finally:
        engine.dispose()


def test_in_memory_sqlite_is_one_database_shared_by_all_threads() -> None:
    engine = make_engine("sqlite://")
    metadata.create_all(engine)
    store = SqlRunStore(engine)
    errors: list[BaseException] = []

    def create(i: int) -> None:
        try:
            store.create_run(RunRecord(f"run-{i}", "cnn", created_at=float(i)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert all(store.get_run(f"run-{i}") is not None for i in range(8))
    engine.dispose()


def test_database_errors_become_storage_errors(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no tables
    store = SqlRunStore(engine)
    with pytest.raises(StorageError, match="no such table"):
        store.get_run("run-a")
    with pytest.raises(StorageError, match="no such table"):
        store.create_run(RunRecord("run-a", "cnn", created_at=0.0))
    engine.dispose()
