"""``fedlearn status``: where a run stands, as a table or JSON."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedlearn.cli.common import CoordinatorOpt
from fedlearn.service.messages import CentralPrivacyStatus, TrainingStatus
from fedlearn.transport.client import fetch_status

__all__ = ["central_privacy_line", "render_status", "status"]


def status(
    coordinator: CoordinatorOpt = "127.0.0.1:50051",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the coordinator.")] = 5.0,
) -> None:
    """Ask a coordinator for its run's progress (GetTrainingStatus)."""
    report = fetch_status(coordinator, timeout_s=timeout)
    if as_json:
        typer.echo(json.dumps(_jsonable(report), indent=2))
    else:
        render_status(report, Console())


def _jsonable(report: TrainingStatus) -> dict[str, object]:
    data = dataclasses.asdict(report)
    data["state"] = report.state.value
    for client in data["clients"]:
        client["capabilities"]["compute_power"] = client["capabilities"]["compute_power"].value
    return data


def _fmt(value: float | None, pattern: str = "{:.4f}") -> str:
    return "-" if value is None else pattern.format(value)


def central_privacy_line(c: CentralPrivacyStatus) -> str:
    """One line on the run's central DP: user-level epsilon spent / target."""
    target = "-" if c.target_epsilon is None else f"{c.target_epsilon:.4g}"
    line = (
        f"central DP (user-level): epsilon spent {c.epsilon_spent:.4f} / {target} at delta "
        f"{c.delta:g} over {c.rounds_charged} noised rounds (noise multiplier "
        f"{c.noise_multiplier:.4g}, clip {c.clip_norm:.4g})"
    )
    return line + ("; target reached, the run ended" if c.exhausted else "")


def render_status(report: TrainingStatus, console: Console) -> None:
    console.print(
        f"run [bold]{report.run_id}[/] ({report.model_name}): {report.state.value}, "
        f"{report.completed_rounds}/{report.num_rounds} rounds completed; "
        f"round {report.current_round}: {report.updates_received}/{report.updates_expected} "
        f"updates in"
    )
    rounds = Table(
        "round",
        "status",
        "clients",
        "accuracy",
        "loss",
        "client acc.",
        "MB up",
        "MB down",
        "seconds",
        title="Rounds",
    )
    for r in report.rounds:
        seconds = (r.completed_at - r.started_at) if r.completed_at else None
        rounds.add_row(
            str(r.round_number),
            r.status + (f" ({r.failure_reason})" if r.failure_reason else ""),
            f"{r.participating_clients}/{r.selected_clients}",
            _fmt(r.accuracy),
            _fmt(r.loss),
            _fmt(r.client_eval_accuracy),
            f"{r.bytes_up / 1e6:.1f}",
            f"{r.bytes_down / 1e6:.1f}",
            _fmt(seconds, "{:.2f}"),
        )
    console.print(rounds)
    if report.rejections:
        refused = ", ".join(f"{k}: {v}" for k, v in sorted(report.rejections.items()))
        console.print(f"updates refused or missed, by reason: {refused}")
    if report.central_privacy is not None:
        console.print(central_privacy_line(report.central_privacy))
    ledger = {p.client_id: p for p in report.privacy}
    clients = Table(
        "client", "samples", "compute", "epsilon spent / budget", "last seen", title="Clients"
    )
    for c in report.clients:
        line = ledger.get(c.client_id)
        budget = c.capabilities.privacy.epsilon
        privacy = "-"
        if line is not None or budget:
            spent = line.epsilon_spent if line else 0.0
            privacy = f"{spent:.2f} / {budget:.2f}" if budget else f"{spent:.2f} / -"
            privacy += " (exhausted)" if line is not None and line.exhausted else ""
        clients.add_row(
            c.client_id,
            str(c.capabilities.available_samples),
            c.capabilities.compute_power.value,
            privacy,
            f"{c.last_seen_at:.0f}",
        )
    console.print(clients)
