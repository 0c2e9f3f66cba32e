"""``fedlearn rollback``: make a completed round's model the global model again."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedlearn.cli.common import CoordinatorOpt
from fedlearn.service.messages import RollbackOutcome

__all__ = ["rollback"]


def rollback(
    to_round: Annotated[
        int, typer.Option("--to-round", min=0, help="Completed round to restore (0: initial).")
    ],
    coordinator: CoordinatorOpt = "127.0.0.1:50051",
    admin_token: Annotated[
        str | None,
        typer.Option(envvar="FEDLEARN_ADMIN_TOKEN", help="The coordinator's --admin-token."),
    ] = None,
    reason: Annotated[str, typer.Option(help="Why; stored with the rounds undone.")] = "",
    database_url: Annotated[
        str | None,
        typer.Option(
            help="Roll back a STOPPED coordinator's run in this database instead of asking "
            "a running coordinator; it resumes from the restored round when restarted."
        ),
    ] = None,
    model_dir: Annotated[
        Path, typer.Option(help="Model store folder (with --database-url).")
    ] = Path("fedlearn-state/models"),
    run_id: Annotated[str, typer.Option(help="Run to roll back (with --database-url).")] = (
        "default"
    ),
) -> None:
    """Undo the rounds after --to-round: they are kept, marked rolled_back, and training
    continues from the restored model (the open round, if any, fails)."""
    if database_url is not None:
        from fedlearn.bootstrap import rollback_stored_run

        outcome = rollback_stored_run(
            database_url, model_dir, run_id, to_round, reason=reason or "rolled back offline"
        )
    else:
        if not admin_token:
            raise typer.BadParameter(
                "a running coordinator needs its admin token: --admin-token or "
                "FEDLEARN_ADMIN_TOKEN (or use --database-url on a stopped one)",
                param_hint="--admin-token",
            )
        from fedlearn.transport.client import request_rollback

        outcome = request_rollback(coordinator, to_round, admin_token=admin_token, reason=reason)
    typer.echo(_describe(outcome))


def _describe(outcome: RollbackOutcome) -> str:
    undone = ", ".join(str(n) for n in outcome.rolled_back) or "none"
    return f"global model is round {outcome.restored_round}'s again; rounds rolled back: {undone}"
