"""Test helpers for code that needs a real database; production code never uses them.

``fresh_postgres_schema`` gives each test its own empty PostgreSQL schema,
so tests can run in parallel against one server and leave nothing behind::

    with fresh_postgres_schema("postgresql+psycopg://postgres@127.0.0.1:5432/test") as url:
        upgrade(url)
        engine = make_engine(url)
        ...
        engine.dispose()  # before the schema is dropped
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from fedlearn.errors import StorageError

__all__ = ["DEFAULT_TEST_POSTGRES_URL", "fresh_postgres_schema", "with_search_path"]

DEFAULT_TEST_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def with_search_path(url: str, schema: str) -> str:
    """``url`` with its connections' ``search_path`` set to ``schema``."""
    parsed = sa.make_url(url)
    existing = parsed.query.get("options")
    options = f"-csearch_path={schema}"
    if isinstance(existing, str) and existing:
        options = f"{existing} {options}"
    return parsed.update_query_dict({"options": options}).render_as_string(hide_password=False)


@contextmanager
def fresh_postgres_schema(base_url: str, *, connect_timeout: int = 3) -> Iterator[str]:
    """Create a uniquely named schema, yield a URL that uses it, then drop it.

    ``StorageError`` if the server cannot be reached. Dispose every engine made
    from the yielded URL before the block ends, or the drop waits for them.
    """
    schema = f"fedlearn_test_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(
        base_url, poolclass=NullPool, connect_args={"connect_timeout": connect_timeout}
    )
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    except sa.exc.SQLAlchemyError as exc:
        admin.dispose()
        where = sa.make_url(base_url).render_as_string(hide_password=True)
        raise StorageError(f"PostgreSQL at {where} is unavailable: {exc}") from exc
    try:
        yield with_search_path(base_url, schema)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()
