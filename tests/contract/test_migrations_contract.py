"""Migrations on every SQL backend: ``upgrade`` builds ``tables.metadata`` and
``check_schema_current`` accepts it, while an empty, unmigrated, older or newer
database is refused with a message that says what to do."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

from fedlearn.errors import StorageError
from fedlearn.persistence import make_engine, migrate
from fedlearn.persistence.tables import metadata


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def test_upgrade_of_an_empty_database_passes_the_schema_check(
    database_url: str, engine: Engine
) -> None:
    migrate.upgrade(database_url)
    migrate.check_schema_current(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()


def test_upgrade_twice_is_harmless(database_url: str, engine: Engine) -> None:
    migrate.upgrade(database_url)
    migrate.upgrade(engine)
    migrate.check_schema_current(engine)


def test_upgraded_schema_equals_the_tables_module(database_url: str, engine: Engine) -> None:
    migrate.upgrade(database_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []


def test_empty_database_is_refused_with_upgrade_advice(engine: Engine) -> None:
    assert migrate.current_revision(engine) is None
    head = migrate.head_revision()
    with pytest.raises(
        StorageError, match=rf"this fedlearn needs {head}: run `fedlearn db upgrade`"
    ):
        migrate.check_schema_current(engine)


def test_database_built_without_migrations_is_refused(engine: Engine) -> None:
    metadata.create_all(engine)
    with pytest.raises(StorageError, match=r"schema is at no revision.*fedlearn db upgrade"):
        migrate.check_schema_current(engine)


def test_database_behind_this_fedlearn_is_refused(database_url: str, engine: Engine) -> None:
    migrate.upgrade(database_url, revision="0001")
    with pytest.raises(
        StorageError,
        match=r"^database schema is at 0001, this fedlearn needs 0007: run `fedlearn db upgrade`$",
    ):
        migrate.check_schema_current(engine)


def test_database_from_a_newer_fedlearn_is_refused(database_url: str, engine: Engine) -> None:
    migrate.upgrade(database_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(StorageError, match=r"schema is at 9999, which this fedlearn does not know"):
        migrate.check_schema_current(engine)
