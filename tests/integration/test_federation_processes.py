"""A whole federation as separate processes: one coordinator, three clients, over gRPC
on 127.0.0.1, on SQLite and on PostgreSQL; then the stored run is checked round by round."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import (
    Processes,
    check_fedavg_history,
    coordinator_args,
    fedlearn_json,
    start_client,
    wait_for_port,
)

from fedlearn.persistence import FileModelStore, SqlRunStore

CLIENTS = ("c0", "c1", "c2")


def _check_status_before_training(status: dict[str, object]) -> None:
    """What ``fedlearn status --json`` says while at most two of three clients are in."""
    assert status["run_id"] == "it"
    assert status["model_name"] == "mlp"
    assert status["state"] == "waiting_for_clients"
    assert status["num_rounds"] == 3
    assert status["completed_rounds"] == 0
    assert status["current_round"] == 0
    assert (status["updates_received"], status["updates_expected"]) == (0, 0)
    rounds = status["rounds"]
    assert isinstance(rounds, list) and len(rounds) == 1, rounds
    initial = rounds[0]
    assert (initial["round_number"], initial["status"]) == (0, "completed")
    assert (initial["selected_clients"], initial["participating_clients"]) == (0, 0)
    assert 0.0 <= initial["accuracy"] <= 1.0  # the initial model, on the server's test set
    clients = status["clients"]
    assert isinstance(clients, list)
    assert {c["client_id"] for c in clients} <= {"c0", "c1"}
    for client in clients:
        assert client["capabilities"]["available_samples"] > 0
        assert client["capabilities"]["compute_power"] in ("low", "medium", "high")


@pytest.mark.slow
def test_three_client_processes_train_three_fedavg_rounds(
    database_url: str,
    open_run_store: Callable[[str], SqlRunStore],
    processes: Processes,
    digits_dir: Path,
    tmp_path: Path,
    child_env: dict[str, str],
) -> None:
    port_file = tmp_path / "coordinator.port"
    model_dir = tmp_path / "models"
    processes.start(
        "coordinator",
        *coordinator_args(
            address="127.0.0.1:0",
            port_file=port_file,
            database_url=database_url,
            model_dir=model_dir,
            rounds=3,
            digits_dir=digits_dir,
        ),
    )
    port = wait_for_port(port_file, processes, "coordinator")
    # A round needs all three clients, so with two started the run waits for clients
    # whenever the status call lands; the third starts once status has answered.
    start_client(processes, 0, port, digits_dir)
    start_client(processes, 1, port, digits_dir)
    status = fedlearn_json(child_env, "status", "--coordinator", f"127.0.0.1:{port}", "--json")
    start_client(processes, 2, port, digits_dir)

    codes = processes.wait_all(timeout_s=120)

    assert codes == {"coordinator": 0, "c0": 0, "c1": 0, "c2": 0}
    _check_status_before_training(status)
    runs = open_run_store(database_url)
    records = check_fedavg_history(runs, FileModelStore(model_dir), rounds=3, clients=CLIENTS)
    accuracies = [r.accuracy for r in records]
    assert all(a is not None and 0.0 <= a <= 1.0 for a in accuracies), accuracies
    assert all(r.loss is not None and math.isfinite(r.loss) for r in records), records
    assert accuracies[0] == status["rounds"][0]["accuracy"]
    assert accuracies[3] > 0.5, accuracies
    assert accuracies[3] > accuracies[0] + 0.2, accuracies
    for name in CLIENTS:
        assert f"client {name}: trained 3 rounds" in processes.log(name)
