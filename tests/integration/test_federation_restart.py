"""A coordinator process that dies (SIGKILL) and is started again on the same database,
model folder, run id and port, while its client processes keep retrying."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import pytest

from fedlearn.bootstrap import SystemClock
from fedlearn.core.serialization import encode_weights
from fedlearn.core.types import ClientCapabilities, RoundRecord, RoundStatus
from fedlearn.models.registry import build_model
from fedlearn.models.weights import model_to_weights
from fedlearn.persistence import SqlRunStore
from fedlearn.persistence.migrate import upgrade
from fedlearn.service.coordinator import Coordinator
from fedlearn.service.messages import CoordinatorConfig, TaskKind, UpdateSubmission
from fedlearn.transport.client import GrpcCoordinatorClient

if TYPE_CHECKING:
    from conftest import Federation

CLIENTS = ("c0", "c1", "c2")


@pytest.mark.slow
def test_clients_carry_on_when_the_coordinator_is_killed_and_restarted(
    sqlite_url: str,
    open_run_store: Callable[[str], SqlRunStore],
    federation: Federation,
    free_port: int,
) -> None:
    processes, models = federation.processes, federation.models
    args = federation.coordinator_args(
        database_url=sqlite_url,
        rounds=4,
        port=free_port,
        # A kill that lands after a round's last update was stored but before the round
        # was closed used to leave a round that only its deadline closed.
        extra=["--round-timeout", 45],
    )
    assert federation.start_coordinator("coordinator", args) == free_port
    for name in CLIENTS:
        federation.start_client(name, free_port)
    runs = open_run_store(sqlite_url)

    federation.wait_for_round(runs, 2)
    processes.kill("coordinator")

    assert processes.process("coordinator").returncode == -signal.SIGKILL
    before = {r.round_number: r for r in runs.list_rounds("it") if r.round_number <= 2}
    blobs = {n: models.get(r.global_model_path or "") for n, r in before.items()}
    at_kill = [
        (r.round_number, r.status.value, len(runs.list_updates("it", r.round_number)))
        for r in runs.list_rounds("it")
    ]
    assert processes.exited() == ["coordinator"], at_kill  # the clients keep retrying
    assert federation.start_coordinator("coordinator-restarted", args) == free_port

    codes = processes.wait_all(timeout_s=150)

    assert codes == {
        "coordinator": -signal.SIGKILL,
        "c0": 0,
        "c1": 0,
        "c2": 0,
        "coordinator-restarted": 0,
    }, at_kill
    records = federation.check_fedavg_history(runs, rounds=4)
    for n in (0, 1, 2):
        after = records[n]
        if before[n].accuracy is None:  # killed before its evaluation was recorded
            after = replace(after, accuracy=None, loss=None)
        assert after == before[n], f"round {n} changed by the restart ({at_kill})"
        assert models.get(records[n].global_model_path or "") == blobs[n]
    assert [r.accuracy is not None for r in records[3:]] == [True, True], records[3:]
    assert "resumed run it" in processes.log("coordinator-restarted")
    for name in CLIENTS:
        assert f"client {name}: trained 4 rounds" in processes.log(name), at_kill


# -- a coordinator killed at the moments between "round stored" and "next round open" -
#
# The run is built in process through the real SQLite and file stores, then left in the
# state such a kill leaves, and a coordinator process is started on it.


def _run_round_one(federation: Federation, url: str, runs: SqlRunStore) -> RoundRecord:
    """Round 1 of run ``it`` (mlp) with three updates, closed with no round 2 opened (the
    state of a kill after a close); returns round 1 as it was while open."""
    upgrade(url)
    initial = model_to_weights(build_model("mlp", seed=0))
    config = CoordinatorConfig(
        run_id="it",
        model_name="mlp",
        num_rounds=1,
        min_clients=3,
        round_timeout_s=600.0,
        keep_updates=True,
    )
    coordinator = Coordinator(
        config, initial, runs=runs, models=federation.models, clock=SystemClock()
    )
    samples = {"c0": 100, "c1": 300, "c2": 900}
    for client, n in samples.items():
        coordinator.register_client(client, ClientCapabilities(available_samples=n))
    opened = runs.get_round("it", 1)
    assert opened is not None and opened.status is RoundStatus.OPEN
    rng = np.random.default_rng(7)
    for client, n in samples.items():
        delta = {k: rng.normal(0.0, 0.01, v.shape).astype(np.float32) for k, v in initial.items()}
        coordinator.submit_update(
            UpdateSubmission(
                client_id=client,
                round_number=1,
                update_id=f"{client}-1",
                payload=encode_weights(delta),
                num_samples=n,
                training_loss=0.5,
            )
        )
    done = runs.get_round("it", 1)
    assert done is not None and done.status is RoundStatus.COMPLETED
    return opened


@pytest.mark.slow
def test_restart_closes_a_round_whose_updates_were_all_stored(
    sqlite_url: str,
    open_run_store: Callable[[str], SqlRunStore],
    federation: Federation,
) -> None:
    runs = open_run_store(sqlite_url)
    opened = _run_round_one(federation, sqlite_url, runs)
    runs.save_round(opened)  # killed after the third update was stored, before the close
    args = federation.coordinator_args(
        database_url=sqlite_url,
        rounds=1,
        evaluate=False,
        linger=0,
        extra=["--round-timeout", 600],
    )
    federation.start_coordinator("coordinator", args)

    code = federation.wait_for_exit("coordinator", timeout_s=10)

    round_1 = runs.get_round("it", 1)
    assert round_1 is not None and round_1.status is RoundStatus.COMPLETED, round_1
    assert code == 0
    federation.check_fedavg_history(runs, rounds=1)


@pytest.mark.slow
def test_restart_between_rounds_opens_the_next_round_for_registered_clients(
    sqlite_url: str,
    open_run_store: Callable[[str], SqlRunStore],
    federation: Federation,
) -> None:
    _run_round_one(federation, sqlite_url, open_run_store(sqlite_url))
    args = federation.coordinator_args(database_url=sqlite_url, rounds=2, evaluate=False, linger=0)
    port = federation.start_coordinator("coordinator", args)

    with GrpcCoordinatorClient(f"127.0.0.1:{port}", call_timeout_s=10) as api:
        end = time.monotonic() + 8
        task = api.poll_task("c0", wait_s=2)  # c0 registered before the kill
        while task.kind is TaskKind.WAIT and time.monotonic() < end:
            task = api.poll_task("c0", wait_s=2)
        status = api.status()

    assert (task.kind, task.round_number) == (TaskKind.TRAIN, 2), status


@pytest.mark.slow
def test_restart_records_the_accuracy_of_a_round_killed_before_its_evaluation(
    sqlite_url: str,
    open_run_store: Callable[[str], SqlRunStore],
    federation: Federation,
) -> None:
    runs = open_run_store(sqlite_url)
    _run_round_one(federation, sqlite_url, runs)  # closed with no evaluator: no accuracy
    args = federation.coordinator_args(database_url=sqlite_url, rounds=1, linger=0)
    federation.processes.start("coordinator", *args)

    code = federation.wait_for_exit("coordinator", timeout_s=90)

    assert code == 0
    round_1 = runs.get_round("it", 1)
    assert round_1 is not None and round_1.accuracy is not None, round_1
