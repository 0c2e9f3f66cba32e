"""The public API of ``fedlearn.persistence`` is small and pinned."""

from __future__ import annotations

from fedlearn import persistence
from fedlearn.persistence import migrate, testing


def test_public_api_is_pinned() -> None:
    assert persistence.__all__ == [
        "FileModelStore",
        "InMemoryModelStore",
        "InMemoryRunStore",
        "SqlRunStore",
        "make_engine",
    ]
    assert migrate.__all__ == [
        "MIGRATIONS_DIR",
        "alembic_config",
        "check_schema_current",
        "current_revision",
        "head_revision",
        "upgrade",
    ]
    assert testing.__all__ == [
        "DEFAULT_TEST_POSTGRES_URL",
        "fresh_postgres_schema",
        "with_search_path",
    ]


def test_every_public_name_exists() -> None:
    for module in (persistence, migrate, testing):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_with_search_path_keeps_credentials_and_other_options() -> None:
    url = testing.with_search_path(
        "postgresql+psycopg://u:p%40ss@db:5432/test?options=-cstatement_timeout%3D5000", "s1"
    )
    assert url.startswith("postgresql+psycopg://u:p%40ss@db:5432/test?")
    assert "options=-cstatement_timeout%3D5000+-csearch_path%3Ds1" in url
