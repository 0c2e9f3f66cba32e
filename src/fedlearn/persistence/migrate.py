"""Schema migrations with Alembic, driven from code (no ``alembic.ini`` needed).

The migration scripts ship inside the package (``persistence/migrations``).
``upgrade`` brings a database to the newest schema; ``check_schema_current``
is what a server calls at start-up to refuse a database it cannot use.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Engine

from fedlearn.errors import StorageError
from fedlearn.persistence.engine import make_engine

__all__ = [
    "MIGRATIONS_DIR",
    "alembic_config",
    "check_schema_current",
    "current_revision",
    "head_revision",
    "upgrade",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str | None = None) -> Config:
    """An Alembic ``Config`` for fedlearn's migrations, built in code."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if database_url is not None:
        # ConfigParser interpolation: a literal % must be doubled.
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str | Engine, *, revision: str = "head") -> None:
    """Migrate the database (a URL, or an engine) to ``revision`` (default: newest)."""
    engine = make_engine(database_url) if isinstance(database_url, str) else database_url
    try:
        with engine.begin() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
    except sa.exc.SQLAlchemyError as exc:
        raise StorageError(f"database migration failed: {exc}") from exc
    finally:
        if isinstance(database_url, str):
            engine.dispose()


def head_revision() -> str:
    """The schema revision this fedlearn needs."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships a revision
        raise StorageError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def current_revision(engine: Engine) -> str | None:
    """The database's schema revision; ``None`` for a database never migrated."""
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except sa.exc.SQLAlchemyError as exc:
        raise StorageError(f"cannot read the database schema revision: {exc}") from exc


def check_schema_current(engine: Engine) -> None:
    """Return quietly if the schema is at head; else ``StorageError`` saying what to do."""
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    if current is None:
        raise StorageError(
            f"database schema is at no revision (an empty or pre-migration database), "
            f"this fedlearn needs {head}: run `fedlearn db upgrade`"
        )
    if not _is_known(current):
        raise StorageError(
            f"database schema is at {current}, which this fedlearn does not know "
            f"(it needs {head}); a newer fedlearn migrated it: upgrade fedlearn"
        )
    raise StorageError(
        f"database schema is at {current}, this fedlearn needs {head}: run `fedlearn db upgrade`"
    )


def _is_known(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False
