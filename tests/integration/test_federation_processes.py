"""A whole federation as separate processes: one coordinator, three clients, over gRPC
on 127.0.0.1, on SQLite and on PostgreSQL; then the stored run is checked round by round."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from fedlearn.persistence import SqlRunStore

if TYPE_CHECKING:
    from conftest import Federation

CLIENTS = ("c0", "c1", "c2")


def _check_status_before_training(status: dict[str, Any]) -> None:
    """What ``fedlearn status --json`` says while at most two of three clients are in."""
    assert status["run_id"] == "it"
    assert status["model_name"] == "mlp"
    assert status["state"] == "waiting_for_clients"
    assert status["num_rounds"] == 3
    assert status["completed_rounds"] == 0
    assert status["current_round"] == 0
    assert (status["updates_received"], status["updates_expected"]) == (0, 0)
    rounds = status["rounds"]
    assert len(rounds) == 1, rounds
    initial = rounds[0]
    assert (initial["round_number"], initial["status"]) == (0, "completed")
    assert (initial["selected_clients"], initial["participating_clients"]) == (0, 0)
    assert 0.0 <= initial["accuracy"] <= 1.0  # the initial model, on the server's test set
    clients = status["clients"]
    assert {c["client_id"] for c in clients} <= {"c0", "c1"}
    for client in clients:
        assert client["capabilities"]["available_samples"] > 0
        assert client["capabilities"]["compute_power"] in ("low", "medium", "high")


@pytest.mark.slow
def test_three_client_processes_train_three_fedavg_rounds(
    database_url: str,
    open_run_store: Callable[[str], SqlRunStore],
    federation: Federation,
) -> None:
    port = federation.start_coordinator(
        "coordinator", federation.coordinator_args(database_url=database_url, rounds=3)
    )
    # A round needs all three clients, so with two started the run waits for clients
    # whenever the status call lands; the third starts once status has answered.
    federation.start_client("c0", port)
    federation.start_client("c1", port)
    status = federation.status(port)
    federation.start_client("c2", port)

    codes = federation.processes.wait_all(timeout_s=120)

    assert codes == {"coordinator": 0, "c0": 0, "c1": 0, "c2": 0}
    _check_status_before_training(status)
    records = federation.check_fedavg_history(open_run_store(database_url), rounds=3)
    accuracies = [r.accuracy for r in records]
    assert all(a is not None and 0.0 <= a <= 1.0 for a in accuracies), accuracies
    assert all(r.loss is not None and math.isfinite(r.loss) for r in records), records
    assert accuracies[0] == status["rounds"][0]["accuracy"]
    assert accuracies[3] > 0.5, accuracies
    assert accuracies[3] > accuracies[0] + 0.2, accuracies
    for name in CLIENTS:
        assert f"client {name}: trained 3 rounds" in federation.processes.log(name)
