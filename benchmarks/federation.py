"""Running ``fedlearn run`` (a coordinator and N real client processes) and reading its summary."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import Child, fedlearn_command, mnist_dir

__all__ = ["HYPERPARAMETERS", "FederationRun", "data_args", "rounds_to", "run_federation"]

HYPERPARAMETERS: dict[str, Any] = {
    "model": "cnn",
    "strategy": "fedavg",
    "local_epochs": 1,
    "batch_size": 32,
    "lr": 0.05,
    "seed": 0,
    "threads": 1,
}
"""What every federated benchmark trains with (and what a comparison should use)."""


@dataclass(frozen=True, slots=True)
class FederationRun:
    summary: dict[str, Any]
    command: list[str]
    data_source: str


def data_args(dataset: str) -> tuple[list[str], str]:
    """``fedlearn run`` data options for ``dataset``, and a description of the data."""
    if dataset == "mnist":
        folder, source = mnist_dir()
        return ["--dataset", "mnist", "--data-dir", str(folder)], source
    if dataset == "fashion":
        return ["--dataset", "fashion"], "Fashion-MNIST (60,000 train / 10,000 test, Debian)"
    raise ValueError(f"unknown data set {dataset!r}")


def run_federation(
    *,
    clients: int,
    rounds: int,
    dataset: str = "mnist",
    partitioner: str = "iid",
    round_timeout_s: float = 1800.0,
    extra_args: Sequence[str] = (),
    **overrides: Any,
) -> FederationRun:
    """Run ``fedlearn run`` to the end in a temporary folder; its ``summary.json``.

    Rounds may take minutes on a small machine (Fashion-MNIST, many clients), so the
    coordinator's round timeout is generous; the whole run is given up after
    ``round_timeout_s`` per round plus ten minutes.
    """
    params = {**HYPERPARAMETERS, **overrides}
    data, source = data_args(dataset)
    with tempfile.TemporaryDirectory(prefix="fedlearn-bench-run-") as name:
        out = Path(name) / "run"
        command = fedlearn_command(
            "run", "--clients", clients, "--rounds", rounds, *data,
            "--partitioner", partitioner, "--model", params["model"],
            "--strategy", params["strategy"], "--local-epochs", params["local_epochs"],
            "--batch-size", params["batch_size"], "--lr", params["lr"], "--seed", params["seed"],
            "--threads", params["threads"], "--round-timeout", round_timeout_s,
            "--out", out, "--log-level", "warning", *extra_args,
        )  # fmt: skip
        child = Child(command, Path(name) / "run.log")
        try:
            code = child.wait(600.0 + rounds * round_timeout_s)
        finally:
            child.stop()
        summary_path = out / "summary.json"
        if code != 0 or not summary_path.exists():
            logs = "\n".join(
                f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
                for p in sorted((out / "logs").glob("*.log"))[:3]
            )
            raise RuntimeError(
                f"fedlearn run failed (exit {code}): {' '.join(command)}\n"
                f"{child.log_tail(3000)}\n{logs}"
            )
        summary = json.loads(summary_path.read_text())
    return FederationRun(summary, command, source)


def _first_round_at(accuracies: list[float | None], threshold: float) -> int | None:
    for index, accuracy in enumerate(accuracies, start=1):
        if accuracy is not None and accuracy >= threshold:
            return index
    return None


def rounds_to(
    accuracies: list[float | None], thresholds: tuple[float, ...]
) -> dict[str, int | None]:
    """For each threshold (a fraction), the first round (1-based) reaching it, or None."""
    return {f"{t:.0%}": _first_round_at(accuracies, t) for t in thresholds}
