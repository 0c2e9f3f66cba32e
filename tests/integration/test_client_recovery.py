"""A client process killed (SIGKILL) after its update was written to its outbox but
before it was sent, then started again on the same state folder: the update arrives
once, with the update id it was given before the kill, and the round completes.

The kill comes from the client itself, through the ``FEDLEARN_TEST_CRASH_AFTER`` hook of
``fedlearn client``, so that it lands at exactly that point."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from fedlearn.core.types import RoundStatus
from fedlearn.persistence import SqlRunStore

if TYPE_CHECKING:
    from conftest import Federation

# Unlike sample counts, so that the FedAvg check can tell a weighted mean from a plain one.
HOLDOUTS = {"c0": 0.3, "c1": 0.0}


def _client_args(federation: Federation, port: int, name: str, state: Path) -> list[object]:
    return [
        "client", "--coordinator", f"127.0.0.1:{port}", "--client-id", name,
        "--state-dir", state, "--partition", int(name[1:]), "--num-partitions", 2,
        "--dataset", "mnist", "--data-dir", federation.digits_dir, "--no-download",
        "--threads", 1, "--holdout", HOLDOUTS[name], "--log-level", "debug",
    ]  # fmt: skip


@pytest.mark.slow
def test_update_written_before_a_kill_is_sent_once_after_the_restart(
    sqlite_url: str,
    open_run_store: Callable[[str], SqlRunStore],
    federation: Federation,
    tmp_path: Path,
) -> None:
    processes = federation.processes
    args = [
        "coordinator", "--address", "127.0.0.1:0", "--port-file", federation.port_file,
        "--database-url", sqlite_url, "--model-dir", federation.model_dir, "--run-id", "it",
        "--model", "mlp", "--rounds", 1, "--min-clients", 2, "--keep-updates",
        "--local-epochs", 2, "--lr", 0.05, "--no-download", "--linger", 3,
        "--round-timeout", 120,
    ]  # fmt: skip
    port = federation.start_coordinator("coordinator", args)
    state = tmp_path / "c0-state"
    env = processes.env
    processes.env = {**env, "FEDLEARN_TEST_CRASH_AFTER": "outbox"}
    processes.start("c0", *_client_args(federation, port, "c0", state))
    processes.env = env
    processes.start("c1", *_client_args(federation, port, "c1", tmp_path / "c1-state"))

    assert federation.wait_for_exit("c0", timeout_s=60) == -signal.SIGKILL
    pending = sorted((state / "outbox").glob("*.update"))
    assert len(pending) == 1, list((state / "outbox").iterdir())
    update_id = pending[0].stem.split("-", 1)[1]
    runs = open_run_store(sqlite_url)
    assert [u.client_id for u in runs.list_updates("it", 1)] in ([], ["c1"])
    processes.start("c0-restarted", *_client_args(federation, port, "c0", state))

    codes = processes.wait_all(timeout_s=60)

    assert codes == {"coordinator": 0, "c0": -signal.SIGKILL, "c1": 0, "c0-restarted": 0}
    round_1 = runs.get_round("it", 1)
    assert round_1 is not None and round_1.status is RoundStatus.COMPLETED, round_1
    updates = runs.list_updates("it", 1)
    assert sorted(u.client_id for u in updates) == ["c0", "c1"]
    assert [u.update_id for u in updates if u.client_id == "c0"] == [update_id]
    assert f"re-sending the pending update {update_id} for round 1" in processes.log("c0-restarted")
    assert list((state / "outbox").glob("*.update")) == []
    federation.check_fedavg_history(runs, rounds=1, clients=("c0", "c1"))
