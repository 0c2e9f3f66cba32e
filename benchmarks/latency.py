"""Round latency with real training processes: ``fedlearn run`` at 10 (full: 25, 50) clients.

Each run starts a coordinator and N client processes (torch, gRPC on 127.0.0.1)
with IID partitions, 1 local epoch, the CNN and FedAvg, and reads the run's
``summary.json``: per round its wall time, the slowest client's training time, and
the framework overhead (the difference).
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.federation import HYPERPARAMETERS, run_federation
from benchmarks.report import Plot, Result, Series, Target

__all__ = ["FLOWER_DEPLOYMENT_ROUND_S", "FLOWER_SIMULATION_ROUND_S", "run"]

FLOWER_DEPLOYMENT_ROUND_S = 35.0
"""The issue's reference: Flower 1.42 as real processes, 10 clients, median round."""
FLOWER_DEPLOYMENT_TRAIN_S = 0.34
"""... of which training per client."""
FLOWER_SIMULATION_ROUND_S = 2.3
"""The issue's reference: Flower's Ray simulation, same work."""
FLOWER_OVERHEAD_S = FLOWER_DEPLOYMENT_ROUND_S - FLOWER_DEPLOYMENT_TRAIN_S

COLUMNS = (
    "clients", "rounds", "median round s", "median slowest training s", "median overhead s",
    "max overhead s", "overhead / Flower deployment overhead", "wall s", "final accuracy",
)  # fmt: skip
PHASE_COLUMNS = (
    "clients", "download ms / client", "upload ms / update", "validate ms / update",
    "persist ms / update", "aggregate ms / update", "close ms / round",
)  # fmt: skip
PER_UPDATE = ("download", "upload", "validate", "persist", "aggregate")


def _phase_row(clients: int, summary: dict[str, Any]) -> list[object]:
    """Median over rounds of each phase's coordinator time, per client or per round."""
    rounds = [r for r in summary["rounds"] if r.get("phase_seconds") and r["clients"]]
    if not rounds:
        return [clients, *([None] * (len(PHASE_COLUMNS) - 1))]

    def median_ms(phase: str, per_client: bool) -> float:
        values = [r["phase_seconds"][phase] / (r["clients"] if per_client else 1) for r in rounds]
        return round(1000 * statistics.median(values), 2)

    return [
        clients,
        *(median_ms(phase, per_client=True) for phase in PER_UPDATE),
        median_ms("close", per_client=False),
    ]


def _row(clients: int, summary: dict[str, Any]) -> list[object]:
    rounds = summary["rounds"]
    overheads = [r["overhead_seconds"] for r in rounds]
    median_overhead = summary["median_overhead_seconds"]
    return [
        clients,
        len(rounds),
        round(summary["median_round_seconds"], 2),
        round(statistics.median(r["slowest_client_train_seconds"] for r in rounds), 2),
        round(median_overhead, 3),
        round(max(overheads), 3),
        round(median_overhead / FLOWER_OVERHEAD_S, 4),
        round(summary.get("wall_seconds", 0.0), 1),
        summary.get("final_accuracy"),
    ]


def run(quick: bool) -> Result:
    counts = (10,) if quick else (10, 25, 50)
    rounds = 4 if quick else 6
    summaries = {}
    for clients in counts:
        summaries[clients] = run_federation(clients=clients, rounds=rounds, partitioner="iid")
    rows = [_row(n, s.summary) for n, s in summaries.items()]
    targets = []
    for n, federation in summaries.items():
        summary = federation.summary
        overhead = summary["median_overhead_seconds"]
        targets.append(
            Target(
                name=f"framework overhead per round, {n} clients",
                target=f"<= 1/10 of Flower deployment's ({FLOWER_OVERHEAD_S / 10:.2f} s)",
                measured=f"{overhead:.2f} s",
                met=overhead <= FLOWER_OVERHEAD_S / 10,
            )
        )
        if n == 10:
            median = summary["median_round_seconds"]
            targets.append(
                Target(
                    name="median round time, 10 clients, vs Flower's simulation mode",
                    target=f"< {FLOWER_SIMULATION_ROUND_S} s (Flower simulation reference)",
                    measured=f"{median:.2f} s",
                    met=median < FLOWER_SIMULATION_ROUND_S,
                )
            )
    first = next(iter(summaries.values()))
    phases = [_phase_row(n, s.summary) for n, s in summaries.items()]
    return Result(
        name="latency",
        title="Round latency with real training processes (fedlearn run)",
        columns=COLUMNS,
        rows=rows,
        targets=targets,
        notes=[
            f"fedlearn run --partitioner iid, {HYPERPARAMETERS}; data: {first.data_source}; "
            f"{rounds} rounds; command: fedlearn {' '.join(first.command[3:])} "
            "(temporary --out folder).",
            "Round 1 starts when the last client registers, while the others may still be "
            "starting up; the medians are robust to it, the max overhead is usually round 1.",
            "Overhead = round wall time (coordinator's database) - the slowest selected "
            "client's local training time; it holds downloads, uploads, validation, "
            "aggregation, persistence, the clients' polling and process scheduling.",
            f"The Flower figures are the issue's references (Flower 1.42 deployment: "
            f"{FLOWER_DEPLOYMENT_ROUND_S:.0f} s median round for {FLOWER_DEPLOYMENT_TRAIN_S} s "
            f"of training per client, so {FLOWER_OVERHEAD_S:.2f} s overhead; Ray simulation: "
            f"{FLOWER_SIMULATION_ROUND_S} s), not measured here; the flower benchmark "
            "measures both side by side.",
            "All client processes share this machine's cores, so with more clients than cores "
            "the slowest client's training time includes waiting for a core.",
            "Where a round's coordinator time went (the round records' timings, median over "
            "rounds): "
            + "; ".join(
                f"{n} clients: "
                + ", ".join(f"{c} {v}" for c, v in zip(PHASE_COLUMNS[1:], row[1:], strict=True))
                for n, row in zip(summaries, phases, strict=True)
            )
            + ". Download and upload are the coordinator's streaming time per client "
            "(concurrent streams overlap); persist is the update's blob and row written and "
            "fsynced before the acknowledgement; close is the mean, the strategy step and "
            "storing the new global model.",
        ],
        figures=[
            Plot(
                file="latency.png",
                title="Round time split, per round (lower is better)",
                xlabel="round",
                ylabel="seconds",
                series=[
                    series
                    for n, fed in summaries.items()
                    for series in (
                        Series(
                            f"{n} clients: round",
                            [r["round"] for r in fed.summary["rounds"]],
                            [r["seconds"] for r in fed.summary["rounds"]],
                        ),
                        Series(
                            f"{n} clients: overhead",
                            [r["round"] for r in fed.summary["rounds"]],
                            [r["overhead_seconds"] for r in fed.summary["rounds"]],
                            style="s--",
                        ),
                    )
                ],
            )
        ],
        data={
            str(n): {
                "rounds": [
                    {
                        k: r[k]
                        for k in (
                            "round",
                            "seconds",
                            "slowest_client_train_seconds",
                            "overhead_seconds",
                            "accuracy",
                            "bytes_up",
                            "bytes_down",
                            "phase_seconds",
                        )
                    }
                    for r in fed.summary["rounds"]
                ],
                "median_round_seconds": fed.summary["median_round_seconds"],
                "median_overhead_seconds": fed.summary["median_overhead_seconds"],
            }
            for n, fed in summaries.items()
        },
    )
