"""Alembic environment for fedlearn's schema (run through ``fedlearn.persistence.migrate``).

``migrate.upgrade`` hands over an open connection in
``config.attributes["connection"]``; the ``alembic`` command line, given a
``sqlalchemy.url``, gets an engine from ``make_engine``. No logging is set up
here: that is the CLI's job.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from fedlearn.persistence.engine import make_engine
from fedlearn.persistence.tables import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,  # SQLite can only ALTER through table copies
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database: set sqlalchemy.url or pass a connection")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


def run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
