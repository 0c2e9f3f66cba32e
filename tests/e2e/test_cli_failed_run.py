"""A run whose rounds keep failing ends with a clear error, not a hang or exit 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fedlearn_testing import free_port

from fedlearn.core.types import ClientCapabilities
from fedlearn.persistence import SqlRunStore, make_engine
from fedlearn.transport.client import GrpcCoordinatorClient


@pytest.mark.slow
def test_coordinator_exits_with_an_error_when_rounds_keep_failing(tmp_path: Path) -> None:
    port = free_port()
    db = f"sqlite:///{tmp_path / 'state.db'}"
    command = [
        sys.executable, "-m", "fedlearn", "coordinator",
        "--address", f"127.0.0.1:{port}", "--database-url", db,
        "--model-dir", str(tmp_path / "models"), "--run-id", "doomed", "--model", "mlp",
        "--min-clients", "2", "--round-timeout", "0.5", "--linger", "0",
    ]  # fmt: skip
    coordinator = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        with GrpcCoordinatorClient(f"127.0.0.1:{port}") as api:
            for name in ("silent-a", "silent-b"):  # register, then never send an update
                api.register(name, ClientCapabilities(available_samples=10))
        _, stderr = coordinator.communicate(timeout=120)
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
            coordinator.wait()
    assert coordinator.returncode == 2, stderr
    assert "rounds in a row failed" in stderr
    rounds = SqlRunStore(make_engine(db)).list_rounds("doomed")
    failed = [r for r in rounds if r.status.value == "failed"]
    assert len(failed) == 4  # max_failed_rounds (3) + 1
    assert all("deadline passed with 0 of 2" in (r.failure_reason or "") for r in failed)
    assert rounds[0].round_number == 0 and rounds[0].status.value == "completed"
    # no round completed, so the global model is still the initial one
    assert [r.round_number for r in rounds if r.status.value == "completed"] == [0]
