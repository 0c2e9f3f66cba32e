"""The hand-written migrations build exactly ``tables.metadata`` (on SQLite)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from fedlearn.core.types import RoundTimings, RunRecord
from fedlearn.persistence import SqlRunStore, make_engine, migrate
from fedlearn.persistence.tables import metadata


def _diffs(url: str, target: sa.MetaData = metadata) -> list[Any]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, target))
    finally:
        engine.dispose()


def _kind(diff: Any) -> str:
    """``add_table`` and friends; column changes come wrapped in a list."""
    first = diff[0]
    return str(first[0] if isinstance(first, tuple) else first)


def test_migrations_build_the_schema_of_tables_metadata(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fedlearn.db'}"
    migrate.upgrade(url)
    assert _diffs(url) == []


def test_compare_notices_a_missing_table_and_a_changed_type(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fedlearn.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE client_updates"))
    engine.dispose()
    changed = sa.MetaData()
    for table in metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["runs"].c.model_name.type = sa.String(50)

    kinds = [_kind(diff) for diff in _diffs(url, changed)]

    assert "add_table" in kinds
    assert "modify_type" in kinds


def test_downgrade_to_base_removes_every_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fedlearn.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        config = migrate.alembic_config()
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
    assert set(sa.inspect(engine).get_table_names()) == {"alembic_version"}
    assert migrate.current_revision(engine) is None
    engine.dispose()


def test_head_revision_is_the_round_leases_migration() -> None:
    assert migrate.head_revision() == "0007"
    assert (migrate.MIGRATIONS_DIR / "versions" / "0001_initial.py").is_file()
    assert (migrate.MIGRATIONS_DIR / "versions" / "0002_rejected_updates.py").is_file()
    assert (migrate.MIGRATIONS_DIR / "versions" / "0003_round_timings.py").is_file()
    assert (migrate.MIGRATIONS_DIR / "versions" / "0004_privacy_ledger.py").is_file()
    assert (migrate.MIGRATIONS_DIR / "versions" / "0006_update_codecs.py").is_file()
    assert (migrate.MIGRATIONS_DIR / "versions" / "0007_round_leases.py").is_file()
    assert (migrate.MIGRATIONS_DIR / "script.py.mako").is_file()


def test_upgrade_from_0001_adds_rejected_updates_and_keeps_existing_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fedlearn.db'}"
    migrate.upgrade(url, revision="0001")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO runs VALUES ('run-a', 'cnn', 1.5)"))
    assert "rejected_updates" not in sa.inspect(engine).get_table_names()
    engine.dispose()

    migrate.upgrade(url)

    engine = make_engine(url)
    assert "rejected_updates" in sa.inspect(engine).get_table_names()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT run_id FROM runs")).scalars().all() == ["run-a"]
    assert migrate.current_revision(engine) == "0007"
    engine.dispose()
    assert _diffs(url) == []


def test_upgrade_from_0002_keeps_rounds_and_reads_them_with_zero_timings(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'fedlearn.db'}"
    migrate.upgrade(url, revision="0002")
    engine = make_engine(url)
    store = SqlRunStore(engine)
    store.create_run(RunRecord("run-a", "cnn", 1.5))
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO training_rounds (run_id, round_number, status, selected_clients,"
                " local_epochs, batch_size, learning_rate, started_at, deadline_at,"
                " participating_clients, bytes_up, bytes_down)"
                " VALUES ('run-a', 1, 'completed', '[]', 1, 32, 0.1, 1.0, 2.0, 0, 0, 0)"
            )
        )
    engine.dispose()

    migrate.upgrade(url)

    engine = make_engine(url)
    (stored,) = SqlRunStore(engine).list_rounds("run-a")
    assert stored.round_number == 1
    assert stored.timings == RoundTimings()
    engine.dispose()
