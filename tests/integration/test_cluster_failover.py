"""A coordinator cluster under fire: 3 replicas behind HAProxy, PostgreSQL, Redis, and
real client processes that reach the replicas only through the load balancer.

- SIGKILL the replica that holds the open round's lease while the round has
  acknowledged some updates and waits for others: another replica takes the
  round over within the lease time, the run completes, and in every round the
  updates acknowledged to clients are exactly those counted in the aggregate.
- A replica started on a database whose schema is behind refuses to run.
- A leader stopped (SIGSTOP, by a failpoint) right before it writes a round's
  result, past its lease: another replica completes the round; once resumed, the
  stopped replica's write is refused by the round's fencing token.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from haproxy_testing import require_haproxy

from fedlearn.bootstrap import PAUSE_BEFORE_CLOSE
from fedlearn.cache import RedisLeaseStore, RedisRoundCounters
from fedlearn.cli.local_cluster import ClusterSettings, LocalCluster
from fedlearn.core.types import Lease, RoundStatus, round_lease_name
from fedlearn.persistence import SqlRunStore, make_engine
from fedlearn.persistence.migrate import current_revision, upgrade

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

REDIS_URL = os.environ.get("FEDLEARN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
LEASE_TTL = 2.0
CLIENTS = ("c0", "c1", "c2")
HOLDOUTS = {"c0": 0.85, "c1": 0.5, "c2": 0.0}  # unequal training times: rounds have a middle
ACK = re.compile(r"round (\d+): update (\S+) (?:accepted|was already stored)")


@pytest.fixture
def redis_client(cluster_redis: str) -> Iterator[redis.Redis]:
    require_haproxy()
    client = redis.Redis.from_url(cluster_redis, socket_connect_timeout=3, socket_timeout=10)
    yield client
    client.close()


class Harness:
    def __init__(self, tmp_path: Path, db: str, client: redis.Redis, env: dict[str, str]) -> None:
        self.run_id = f"ha-{uuid.uuid4().hex[:10]}"  # Redis keys of its own
        self.tmp_path = tmp_path
        self.db = db
        self.env = env
        self.leases = RedisLeaseStore(client)
        self.counters = RedisRoundCounters(client)
        self.engine = make_engine(db)
        self.runs = SqlRunStore(self.engine)

    def settings(
        self, *, rounds: int, env: dict[str, str], local_epochs: int = 1
    ) -> ClusterSettings:
        args = (
            "--run-id", self.run_id, "--model", "mlp", "--rounds", str(rounds),
            "--local-epochs", str(local_epochs),
            "--min-clients", "3", "--lease-ttl", str(LEASE_TTL), "--round-timeout", "300",
            "--keep-updates", "--linger", "10", "--log-level", "info",
        )  # fmt: skip
        return ClusterSettings(
            database_url=self.db,
            redis_url=REDIS_URL,
            work_dir=self.tmp_path / "cluster",
            replicas=3,
            coordinator_args=args,
            env=env,
        )

    def leader(self, round_number: int) -> str | None:
        lease = self.leases.current(round_lease_name(self.run_id, round_number))
        return None if lease is None else lease.holder

    def accepted(self, round_number: int) -> int:
        return self.counters.read(self.run_id, round_number).get("accepted", 0)

    def open_round(self) -> int | None:
        latest = self.runs.latest_round(self.run_id) if self.runs.get_run(self.run_id) else None
        if latest is None or latest.status is not RoundStatus.OPEN:
            return None
        return latest.round_number

    def acknowledged(self, processes) -> dict[int, set[str]]:
        """Per round, the update ids the clients logged as acknowledged."""
        acked: dict[int, set[str]] = {}
        for name in CLIENTS:
            for number, update_id in ACK.findall(processes.log(name)):
                acked.setdefault(int(number), set()).add(update_id)
        return acked

    def check_nothing_lost(self, processes, rounds: int) -> None:
        stored = self.runs.list_rounds(self.run_id)
        assert [r.status for r in stored[1:]] == [RoundStatus.COMPLETED] * rounds
        acked = self.acknowledged(processes)
        for record in stored[1:]:
            counted = {
                u.update_id for u in self.runs.list_updates(self.run_id, record.round_number)
            }
            assert acked.get(record.round_number, set()) == counted, record.round_number
            assert record.participating_clients == len(counted) == 3


def _start_clients(processes, lb: str, digits_dir: Path) -> None:
    for i, name in enumerate(CLIENTS):
        processes.start(
            name,
            "client", "--coordinator", lb, "--client-id", name, "--partition", i,
            "--num-partitions", 3, "--partitioner", "iid", "--dataset", "mnist",
            "--data-dir", digits_dir, "--no-download", "--threads", 1,
            "--holdout", HOLDOUTS[name], "--log-level", "info",
        )  # fmt: skip


def _wait(predicate, *, timeout_s: float, what: str, poll_s: float = 0.02):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


def test_killing_the_leader_mid_round_loses_no_acknowledged_update(
    tmp_path, digits_dir, processes, child_env, cluster_database, redis_client
) -> None:
    h = Harness(tmp_path, cluster_database, redis_client, child_env)
    rounds = 4
    # 5 local epochs: c2 trains about a second longer than c0, a window to kill in
    with LocalCluster(h.settings(rounds=rounds, env=child_env, local_epochs=5)) as cluster:
        _start_clients(processes, cluster.lb_address, digits_dir)
        killed: list[tuple[int, Lease, float]] = []
        while not killed:  # the first round caught with some updates in and some not
            number = _wait(h.open_round, timeout_s=300, what="an open round")
            leader = h.leader(number)
            if leader is not None and 1 <= h.accepted(number) < 3:
                # Freeze the leader, then look again: a leader that closed the round
                # between the two looks (and gave up its lease) is not killed mid-round.
                cluster.kill(leader, signal.SIGSTOP)
                lease = h.leases.current(round_lease_name(h.run_id, number))
                if (
                    lease is not None
                    and lease.holder == leader
                    and h.open_round() == number
                    and 1 <= h.accepted(number) < 3
                ):
                    cluster.kill(leader, signal.SIGKILL)
                    killed.append((number, lease, time.monotonic()))
                else:
                    cluster.kill(leader, signal.SIGCONT)
            elif number == rounds and h.accepted(number) >= 3:
                pytest.fail("no round was caught half-way to kill its leader")
            time.sleep(0.01)
        number, dead, at = killed[0]
        # Another replica takes the lease over: a newer token is issued. It may close
        # the round and release the lease between two looks, so the token is what we
        # watch, not the holder.
        _wait(
            lambda: not h.leases.check_token(dead.name, dead.token),
            timeout_s=60,
            what=f"another replica to lead round {number}",
        )
        failover_s = time.monotonic() - at
        assert failover_s <= LEASE_TTL + 5.0, failover_s  # the lease time plus a loaded machine
        codes = processes.wait_all(timeout_s=600)
        assert set(codes.values()) == {0}, codes
        h.check_nothing_lost(processes, rounds)
    h.engine.dispose()


def test_a_paused_leader_is_refused_by_the_fencing_token_when_it_resumes(
    tmp_path, digits_dir, processes, child_env, cluster_database, redis_client
) -> None:
    h = Harness(tmp_path, cluster_database, redis_client, child_env)
    marker = tmp_path / "paused.pid"
    env = {**child_env, PAUSE_BEFORE_CLOSE: str(marker)}
    rounds = 2
    with LocalCluster(h.settings(rounds=rounds, env=env)) as cluster:
        _start_clients(processes, cluster.lb_address, digits_dir)
        _wait(lambda: marker.exists() and marker.read_text().endswith("\n"), timeout_s=300,
              what="a leader to stop itself before writing a round")  # fmt: skip
        pid = int(marker.read_text())
        paused = next(r.name for r in cluster.replicas if cluster.pid(r.name) == pid)
        stalled = next(n for n in range(1, rounds + 1) if h.leader(n) == paused)
        # past its lease, another replica claims the round and completes it
        done = _wait(
            lambda: (
                (r := h.runs.get_round(h.run_id, stalled)) is not None
                and r.status is RoundStatus.COMPLETED
                and r
            ),
            timeout_s=120,
            what=f"round {stalled} to complete without its stopped leader",
        )
        assert h.leader(stalled) != paused
        assert "lease-1-" not in (done.global_model_path or "")
        os.kill(pid, signal.SIGCONT)
        log = cluster.log_path(paused)
        _wait(
            lambda: "refused this replica's write" in log.read_text(errors="replace"),
            timeout_s=60,
            what="the resumed replica's write to be refused",
            poll_s=0.2,
        )
        after = h.runs.get_round(h.run_id, stalled)
        assert after == done  # the refused write changed nothing
        codes = processes.wait_all(timeout_s=600)
        assert set(codes.values()) == {0}, codes
        h.check_nothing_lost(processes, rounds)
    h.engine.dispose()


def test_a_replica_refuses_a_database_with_an_old_schema(
    tmp_path, processes, cluster_database, redis_client
) -> None:
    upgrade(cluster_database, revision="0006")
    done = subprocess.run(
        [
            sys.executable, "-m", "fedlearn", "coordinator", "--address", "127.0.0.1:0",
            "--database-url", cluster_database, "--redis-url", REDIS_URL,
            "--model-dir", tmp_path / "models", "--model", "mlp",
        ],
        capture_output=True, text=True, env=processes.env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    said = " ".join((done.stderr + done.stdout).split())  # Rich wraps long lines
    assert "database schema is at 0006, this fedlearn needs 0007" in said
    assert "run `fedlearn db upgrade`" in said
    engine = make_engine(cluster_database)
    assert current_revision(engine) == "0006"  # a replica never migrates by itself
    engine.dispose()
