"""``fedlearn db``: database schema migrations.

SQLAlchemy and Alembic are imported inside the commands: every ``fedlearn`` process
(each client of ``fedlearn run`` too) loads this module, and would otherwise carry them.
"""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["db_app"]

db_app = typer.Typer(help="Database schema migrations (Alembic).", no_args_is_help=True)

DatabaseUrlOpt = Annotated[
    str,
    typer.Option(envvar="FEDLEARN_DATABASE_URL", help="SQLAlchemy URL of the database."),
]


@db_app.command("upgrade")
def db_upgrade(database_url: DatabaseUrlOpt = "sqlite:///fedlearn-state/fedlearn.db") -> None:
    """Bring the schema up to this version of fedlearn."""
    from fedlearn.persistence.migrate import head_revision, upgrade

    upgrade(database_url)
    typer.echo(f"schema at {head_revision()}")


@db_app.command("current")
def db_current(database_url: DatabaseUrlOpt = "sqlite:///fedlearn-state/fedlearn.db") -> None:
    """Print the schema revision of the database."""
    from fedlearn.persistence.engine import make_engine
    from fedlearn.persistence.migrate import current_revision, head_revision

    revision = current_revision(make_engine(database_url))
    typer.echo(f"{revision or 'empty'} (this fedlearn needs {head_revision()})")
