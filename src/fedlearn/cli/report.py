"""What ``fedlearn run`` leaves behind: summary.json, global_model.pt, accuracy.png."""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from fedlearn.core.types import RoundRecord, RoundStatus

__all__ = ["round_rows", "rounds_table", "write_plot", "write_summary"]


def round_rows(
    rounds: Sequence[RoundRecord], slowest_training_s: Mapping[int, float]
) -> list[dict[str, Any]]:
    """One row per completed training round (round 0, the initial model, is left out).

    ``overhead_seconds`` is the framework's share of a round: its wall time minus
    the local training time of its slowest client. ``started_at`` and ``completed_at``
    are the round's opening and closing in seconds since the epoch: from one round's
    start to the next's is the run's cadence, which also holds whatever the rounds'
    wall times leave out.
    """
    rows = []
    for r in rounds:
        if r.status is not RoundStatus.COMPLETED or r.round_number == 0:
            continue
        seconds = (r.completed_at or r.started_at) - r.started_at
        slowest = slowest_training_s.get(r.round_number, 0.0)
        rows.append(
            {
                "round": r.round_number,
                "accuracy": r.accuracy,
                "loss": r.loss,
                "clients": r.participating_clients,
                "bytes_up": r.bytes_up,
                "raw_bytes_up": r.raw_bytes_up,
                "upload_compression": r.raw_bytes_up / r.bytes_up if r.bytes_up else None,
                "codec": r.config.codec,
                "bytes_down": r.bytes_down,
                "started_at": r.started_at,
                "completed_at": r.completed_at,
                "seconds": seconds,
                "slowest_client_train_seconds": slowest,
                "overhead_seconds": seconds - slowest,
                "training_loss": r.training_loss,
                "client_eval_accuracy": r.client_eval_accuracy,
                "update_norm": r.update_norm,
                "convergence_score": r.convergence_score,
                "phase_seconds": dataclasses.asdict(r.timings),
            }
        )
    return rows


def write_summary(
    path: Path, *, config: Mapping[str, Any], rows: list[dict[str, Any]], extra: Mapping[str, Any]
) -> dict[str, Any]:
    summary = {
        "config": dict(config),
        "rounds": rows,
        "final_accuracy": rows[-1]["accuracy"] if rows else None,
        "median_round_seconds": _median([r["seconds"] for r in rows]),
        "median_overhead_seconds": _median([r["overhead_seconds"] for r in rows]),
        **_upload_totals(rows),
        **extra,
    }
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _upload_totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Bytes sent up over the run, and what compression saved against float32 updates."""
    sent = sum(r["bytes_up"] for r in rows)
    raw = sum(r["raw_bytes_up"] for r in rows)
    return {
        "bytes_up_total": sent,
        "raw_bytes_up_total": raw,
        "upload_bytes_saved": raw - sent,
        "upload_compression": raw / sent if sent else None,
    }


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def write_plot(path: Path, rows: list[dict[str, Any]], *, title: str) -> None:
    import matplotlib  # noqa: PLC0415 - slow to import, needed only here

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rounds = [r["round"] for r in rows]
    fig, ax_acc = plt.subplots(figsize=(7, 4))
    ax_acc.plot(rounds, [r["accuracy"] for r in rows], "o-", color="tab:blue", label="accuracy")
    ax_acc.set_xlabel("round")
    ax_acc.set_ylabel("test accuracy", color="tab:blue")
    ax_loss = ax_acc.twinx()
    ax_loss.plot(rounds, [r["loss"] for r in rows], "s--", color="tab:red", label="loss")
    ax_loss.set_ylabel("test loss", color="tab:red")
    ax_acc.grid(alpha=0.3)
    ax_acc.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def rounds_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(
        "round",
        "accuracy",
        "loss",
        "clients",
        "MB up",
        "x smaller",
        "MB down",
        "seconds",
        "overhead s",
        title="Rounds",
    )
    for r in rows:
        table.add_row(
            str(r["round"]),
            _fmt(r["accuracy"], "{:.4f}"),
            _fmt(r["loss"], "{:.4f}"),
            str(r["clients"]),
            f"{r['bytes_up'] / 1e6:.2f}",
            _fmt(r["upload_compression"], "{:.1f}"),
            f"{r['bytes_down'] / 1e6:.1f}",
            f"{r['seconds']:.2f}",
            f"{r['overhead_seconds']:.2f}",
        )
    return table
