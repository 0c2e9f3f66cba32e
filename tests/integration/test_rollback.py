"""Divergence rollback and operator rollbacks against a real coordinator process.

The test drives the rounds itself through ``GrpcCoordinatorClient`` (one
client, so it decides every update): a sane update, then one whose values are
so large that the new global model evaluates to a NaN loss.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from fedlearn.core.serialization import decode_weights, encode_weights
from fedlearn.core.types import ClientCapabilities, RoundStatus
from fedlearn.errors import TransportError
from fedlearn.service.messages import TaskKind, UpdateSubmission
from fedlearn.transport.client import GrpcCoordinatorClient, request_rollback

TOKEN = "s3cret-admin-token"


def _submit(api: GrpcCoordinatorClient, value: float) -> int:
    """Train the open round with a delta of ``value`` everywhere; its number."""
    task = api.poll_task("solo", wait_s=10.0)
    assert task.kind is TaskKind.TRAIN, task
    model = decode_weights(api.download_model("solo", task.round_number).payload)
    delta = {name: np.full(t.shape, value, np.float32) for name, t in model.tensors.items()}
    api.submit_update(
        UpdateSubmission(
            client_id="solo",
            round_number=task.round_number,
            update_id=uuid.uuid4().hex,
            payload=encode_weights(delta),
            num_samples=10,
            training_loss=1.0,
        )
    )
    return task.round_number


def _wait_for_status(runs, number: int, status: RoundStatus, timeout_s: float = 60.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        record = runs.get_round("it", number)
        if record is not None and record.status is status:
            return
        time.sleep(0.05)
    pytest.fail(f"round {number} is not {status.value} after {timeout_s:.0f} s")


def _statuses(runs) -> dict[int, RoundStatus]:
    return {r.round_number: r.status for r in runs.list_rounds("it")}


def _rollback_cli(env, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedlearn", "rollback", *(str(a) for a in args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_divergence_and_operator_rollbacks_restore_earlier_models(
    federation, sqlite_url, open_run_store
):
    extra = ["--min-clients", 1, "--admin-token", TOKEN, "--round-timeout", 60]
    args = federation.coordinator_args(database_url=sqlite_url, rounds=6, extra=extra)
    port = federation.start_coordinator("coordinator", args)
    target = f"127.0.0.1:{port}"
    runs = open_run_store(sqlite_url)
    with GrpcCoordinatorClient(target) as api:
        api.register("solo", ClientCapabilities(available_samples=10))
        assert _submit(api, 1e-3) == 1
        round1 = federation.wait_for_round(runs, 1)

        # 1e30 is finite in float32, so the update is accepted; the model it makes
        # evaluates to a NaN loss, and the round is rolled back.
        assert _submit(api, 1e30) == 2
        _wait_for_status(runs, 2, RoundStatus.ROLLED_BACK)
        task = api.poll_task("solo", wait_s=30.0)
        assert task.round_number == 4, _statuses(runs)
        assert _statuses(runs)[2] is RoundStatus.ROLLED_BACK
        assert _statuses(runs)[3] is RoundStatus.FAILED  # opened on the diverged model
        assert "round 2 diverged" in runs.get_round("it", 2).failure_reason
        assert runs.get_round("it", 4).base_model_path == round1.global_model_path
        served = api.download_model("solo", 4).payload
        assert served == federation.models.get(round1.global_model_path)

    # an operator call needs the token
    with pytest.raises(TransportError, match="wrong admin token"):
        request_rollback(target, 0, admin_token="guess")
    refused = _rollback_cli(federation.processes.env, "--to-round", 0, "--coordinator", target)
    assert refused.returncode == 2
    assert "running coordinator needs its admin" in " ".join(refused.stderr.split())
    assert _statuses(runs)[1] is RoundStatus.COMPLETED  # nothing changed

    done = _rollback_cli(
        federation.processes.env,
        *("--to-round", 0, "--coordinator", target, "--admin-token", TOKEN),
        *("--reason", "bad data"),
    )
    assert done.returncode == 0, done.stderr
    assert "round 0's again; rounds rolled back: 1" in done.stdout
    assert _statuses(runs)[1] is RoundStatus.ROLLED_BACK
    assert "by an operator: bad data" in runs.get_round("it", 1).failure_reason
    assert _statuses(runs)[4] is RoundStatus.FAILED
    round0 = runs.get_round("it", 0)
    assert runs.get_round("it", 5).base_model_path == round0.global_model_path

    # a rollback to a round that is not completed is refused and changes nothing
    with pytest.raises(Exception, match="not completed"):
        request_rollback(target, 2, admin_token=TOKEN)
    assert _statuses(runs)[5] is RoundStatus.OPEN

    status = federation.status(port)
    assert [r["status"] for r in status["rounds"]] == [
        "completed", "rolled_back", "rolled_back", "failed", "failed", "open",
    ]  # fmt: skip
    assert status["completed_rounds"] == 0


def test_offline_rollback_of_a_stopped_run_is_resumed_from_on_restart(
    federation, sqlite_url, open_run_store
):
    extra = ["--min-clients", 1, "--round-timeout", 60]
    args = federation.coordinator_args(
        database_url=sqlite_url, rounds=6, evaluate=False, extra=extra
    )
    port = federation.start_coordinator("first", args)
    runs = open_run_store(sqlite_url)
    with GrpcCoordinatorClient(f"127.0.0.1:{port}") as api:
        api.register("solo", ClientCapabilities(available_samples=10))
        for value in (1e-3, 2e-3):
            _submit(api, value)
        federation.wait_for_round(runs, 2)
    federation.processes.kill("first")

    done = _rollback_cli(
        federation.processes.env,
        *("--to-round", 1, "--database-url", sqlite_url),
        *("--model-dir", federation.model_dir, "--run-id", "it"),
    )
    assert done.returncode == 0, done.stderr
    assert "rounds rolled back: 2" in done.stdout
    assert _statuses(runs) == {
        0: RoundStatus.COMPLETED,
        1: RoundStatus.COMPLETED,
        2: RoundStatus.ROLLED_BACK,
        3: RoundStatus.FAILED,  # was open when the coordinator stopped
    }

    port = federation.start_coordinator("second", args)
    with GrpcCoordinatorClient(f"127.0.0.1:{port}") as api:
        api.register("solo", ClientCapabilities(available_samples=10))
        assert _submit(api, 1e-3) == 4
    round1 = runs.get_round("it", 1)
    assert runs.get_round("it", 4).base_model_path == round1.global_model_path
