"""The ``fedlearn`` command: one module per sub-command, wired here."""

from __future__ import annotations

import typer
from rich.console import Console

from fedlearn.cli import (
    client_cmd,
    cluster_cmd,
    coordinator_cmd,
    db_cmd,
    evaluate_cmd,
    rollback_cmd,
    run_cmd,
    status_cmd,
)
from fedlearn.errors import FedLearnError

__all__ = ["app", "main"]

app = typer.Typer(
    name="fedlearn",
    help="Federated learning for image classification: coordinator, clients, local runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("coordinator")(coordinator_cmd.coordinator)
app.command("client")(client_cmd.client)
app.command("status")(status_cmd.status)
app.command("evaluate")(evaluate_cmd.evaluate)
app.command("run")(run_cmd.run)
app.command("rollback")(rollback_cmd.rollback)
app.command("cluster")(cluster_cmd.cluster)
app.add_typer(db_cmd.db_app, name="db")


def main() -> None:
    try:
        app()
    except FedLearnError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}")
        raise SystemExit(2) from exc
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        raise SystemExit(130) from None
