"""Cluster chaos: kill the round's leader again and again during a real run.

A local cluster (``fedlearn.cli.local_cluster``: 3 ``fedlearn coordinator`` replicas
on one PostgreSQL schema, one Redis and one model folder, behind HAProxy) and K
``fedlearn client`` processes that reach it only through the load balancer. While
the run lasts, the benchmark repeatedly finds the replica that holds the open
round's lease (Redis), SIGKILLs it, measures the failover, and starts the killed
replica again (same ports; it rejoins once it has loaded). A kill needs at least two
ready replicas and a round later than the last one killed.

Measured:

- failover time per kill: from SIGKILL to another replica holding the round's
  lease (the round's lease time is the floor: nobody may take it sooner);
- rounds completed of those planned, and coordinator exit codes;
- updates lost or counted twice: updates acknowledged to clients (every client
  logs each ack) against the updates stored for each completed round and its
  ``participating_clients``.

``python -m benchmarks cluster_chaos`` (quick: 4 kills, MLP with 5 local epochs, 60
rounds); ``--full``: 20 kills, CNN, 60 rounds. A killed replica takes 10-30 s to load
again here, so a run must last long enough for its kills. Needs PostgreSQL, Redis and
HAProxy (``make install`` installs HAProxy); URLs from ``FEDLEARN_TEST_POSTGRES_URL``
and ``FEDLEARN_TEST_REDIS_URL``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

from benchmarks.common import child_env, mnist_dir
from benchmarks.report import Plot, Result, Series, Target
from fedlearn.cache import RedisLeaseStore
from fedlearn.cli.local_cluster import ClusterSettings, LocalCluster
from fedlearn.cli.processes import ProcessGroup, fedlearn_command
from fedlearn.core.types import RoundStatus, round_lease_name
from fedlearn.persistence import SqlRunStore, make_engine
from fedlearn.persistence.testing import DEFAULT_TEST_POSTGRES_URL, fresh_postgres_schema

__all__ = ["ChaosConfig", "run", "run_cluster_chaos"]

POSTGRES_URL = os.environ.get("FEDLEARN_TEST_POSTGRES_URL", DEFAULT_TEST_POSTGRES_URL)
REDIS_URL = os.environ.get("FEDLEARN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ACK = re.compile(r"round (\d+): update (\S+) (?:accepted|was already stored)")
COLUMNS = (
    "replicas", "clients", "kills", "lease s", "failover median s", "failover max s",
    "rounds completed", "acknowledged", "lost", "counted twice", "wall s",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ChaosConfig:
    kills: int = 4
    rounds: int = 60
    clients: int = 4
    replicas: int = 3
    lease_ttl_s: float = 2.0
    model: str = "mlp"
    local_epochs: int = 5
    budget_s: float = 1800.0


@dataclass
class Kill:
    round_number: int
    replica: str
    at_s: float
    failover_s: float | None = None
    successor: str | None = None
    accepted_before: int = 0


@dataclass
class ChaosRun:
    config: ChaosConfig
    kills: list[Kill] = field(default_factory=list)
    completed: int = 0
    acknowledged: int = 0
    lost: list[str] = field(default_factory=list)
    double: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    data_source: str = ""


def _acks(log: Path) -> set[tuple[int, str]]:
    return {(int(n), u) for n, u in ACK.findall(log.read_text(errors="replace"))}


def _open_round(runs: SqlRunStore, run_id: str) -> int | None:
    if runs.get_run(run_id) is None:
        return None
    latest = runs.latest_round(run_id)
    if latest is None or latest.status is not RoundStatus.OPEN:
        return None
    return latest.round_number


def _kill_leader(
    cluster: LocalCluster,
    leases: RedisLeaseStore,
    runs: SqlRunStore,
    run_id: str,
    started: float,
    *,
    after: int,
) -> Kill | None:
    """SIGKILL the leader of the open round (if it is later than ``after``) and time
    the failover; ``None`` if there is no such round or leader now."""
    number = _open_round(runs, run_id)
    if number is None or number <= after:
        return None
    name = round_lease_name(run_id, number)
    lease = leases.current(name)
    if lease is None or not cluster.running(lease.holder):
        return None
    cluster.kill(lease.holder, signal.SIGKILL)
    killed_at = time.monotonic()
    kill = Kill(number, lease.holder, killed_at - started)
    while time.monotonic() - killed_at < 120:
        now = leases.current(name)
        if now is not None and now.holder != kill.replica:
            kill.failover_s = time.monotonic() - killed_at
            kill.successor = now.holder
            break
        record = runs.get_round(run_id, number)
        if record is not None and record.status is not RoundStatus.OPEN:
            break  # ended without a new leader: reported as no failover
        time.sleep(0.005)
    return kill


def _tally(result: ChaosRun, runs: SqlRunStore, run_id: str, logs: list[Path]) -> None:
    """Acknowledged (client logs) against counted (completed rounds' stored updates)."""
    acked: set[tuple[int, str]] = set()
    for log in logs:
        acked |= _acks(log)
    counted: list[tuple[int, str]] = []
    for record in runs.list_rounds(run_id):
        if record.status is RoundStatus.COMPLETED and record.round_number > 0:
            result.completed += 1
            ids = [u.update_id for u in runs.list_updates(run_id, record.round_number)]
            if record.participating_clients != len(ids):
                result.double.append(f"round {record.round_number}: count mismatch")
            counted += [(record.round_number, u) for u in ids]
    result.acknowledged = len(acked)
    result.lost = sorted(f"{n}:{u}" for n, u in acked - set(counted))
    result.double += sorted(f"{n}:{u}" for n, u in {c for c in counted if counted.count(c) > 1})


def run_cluster_chaos(config: ChaosConfig, *, echo: bool = True) -> ChaosRun:
    result = ChaosRun(config)
    data_dir, result.data_source = mnist_dir()
    run_id = f"chaos-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3, socket_timeout=10)
    leases = RedisLeaseStore(client)
    with (
        tempfile.TemporaryDirectory(prefix="fedlearn-cluster-chaos-") as tmp,
        fresh_postgres_schema(POSTGRES_URL) as db,
    ):
        work = Path(tmp)
        engine = make_engine(db)
        runs = SqlRunStore(engine)
        args = (
            "--run-id", run_id, "--model", config.model, "--rounds", str(config.rounds),
            "--min-clients", str(config.clients), "--local-epochs", str(config.local_epochs),
            "--lease-ttl", str(config.lease_ttl_s), "--round-timeout", "300",
            "--keep-updates", "--linger", "15",
        )  # fmt: skip
        settings = ClusterSettings(
            database_url=db,
            redis_url=REDIS_URL,
            work_dir=work / "cluster",
            replicas=config.replicas,
            coordinator_args=args,
            env=child_env(),
        )
        clients = ProcessGroup(work / "clients", env=child_env())
        started = time.monotonic()
        with LocalCluster(settings) as cluster:
            for i in range(config.clients):
                clients.start(
                    f"c{i}",
                    fedlearn_command(
                        "client", "--coordinator", cluster.lb_address, "--client-id", f"c{i}",
                        "--partition", i, "--num-partitions", config.clients,
                        "--dataset", "mnist", "--data-dir", data_dir, "--no-download",
                        "--threads", 1, "--log-level", "info",
                    ),
                )  # fmt: skip
            deadline = started + config.budget_s

            while len(result.kills) < config.kills and time.monotonic() < deadline:
                if not any(clients.running(f"c{i}") for i in range(config.clients)):
                    break  # the run is over
                ready = [r.name for r in cluster.replicas if cluster.ready(r.name)]
                last = result.kills[-1].round_number if result.kills else 0
                kill = None
                if len(ready) >= 2:  # someone must be left to take over
                    kill = _kill_leader(cluster, leases, runs, run_id, started, after=last)
                if kill is None:
                    time.sleep(0.01)
                    continue
                result.kills.append(kill)
                if echo:
                    took = f"{kill.failover_s:.2f} s" if kill.failover_s is not None else "n/a"
                    print(
                        f"kill {len(result.kills)}: round {kill.round_number} leader "
                        f"{kill.replica} -> {kill.successor} in {took}",
                        flush=True,
                    )
                cluster.restart(kill.replica, wait=False)  # back in a while, same ports
            clients.wait(timeout_s=max(60.0, deadline - time.monotonic()))
        result.wall_s = time.monotonic() - started
        _tally(
            result, runs, run_id, [work / "clients" / f"c{i}.log" for i in range(config.clients)]
        )
        engine.dispose()
    client.close()
    return result


def to_result(run: ChaosRun, *, quick: bool) -> Result:
    cfg = run.config
    times = [k.failover_s for k in run.kills if k.failover_s is not None]
    bound = cfg.lease_ttl_s + 1.0
    row = [
        cfg.replicas, cfg.clients, len(run.kills), cfg.lease_ttl_s,
        round(statistics.median(times), 2) if times else None,
        round(max(times), 2) if times else None,
        f"{run.completed}/{cfg.rounds}", run.acknowledged, len(run.lost), len(run.double),
        round(run.wall_s),
    ]  # fmt: skip
    return Result(
        name="cluster_chaos",
        title="Cluster chaos: the round's leader SIGKILLed again and again",
        columns=COLUMNS,
        rows=[row],
        targets=[
            Target(
                name="failover (kill to another replica holding the round's lease)",
                target=f"at most the lease time + 1 s = {bound:g} s, every kill",
                measured=(
                    f"max {max(times):.2f} s, median {statistics.median(times):.2f} s over "
                    f"{len(times)} of {len(run.kills)} kills"
                    if times
                    else "no failover measured"
                ),
                met=bool(times) and len(times) == len(run.kills) and max(times) <= bound,
            ),
            Target(
                name="updates lost or counted twice",
                target="0 and 0",
                measured=f"{len(run.lost)} lost, {len(run.double)} double "
                f"({run.acknowledged} acknowledged)",
                met=not run.lost and not run.double and run.acknowledged > 0,
            ),
            Target(
                name="rounds completed",
                target=f"{cfg.rounds} of {cfg.rounds}",
                measured=f"{run.completed}",
                met=run.completed == cfg.rounds,
            ),
        ],
        notes=[
            f"{cfg.replicas} replicas (`fedlearn coordinator --redis-url`, --lease-ttl "
            f"{cfg.lease_ttl_s:g}) on one PostgreSQL schema, Redis and model folder, behind "
            f"HAProxy; {cfg.clients} client processes through the load balancer ({cfg.model}, "
            f"{cfg.local_epochs} local epochs, IID; data: {run.data_source}).",
            "Each kill: the lease holder of the open round (read from Redis) gets SIGKILL; "
            "failover = until another replica holds that round's lease (polled every 5 ms); "
            "the killed replica is started again on its ports at once and rejoins once "
            "loaded; a kill needs two ready replicas and a later round than the last kill.",
            "A replica takes an orphaned round over at its next tick (0.2 s) once the lease "
            "expires; the leader renews every third of the lease time, so a failover takes "
            "between two thirds of the lease time and the lease time, plus up to a tick.",
        ],
        figures=[
            Plot(
                file="cluster_chaos.png",
                title="Failover time per leader kill",
                xlabel="kill",
                ylabel="seconds",
                series=[
                    Series(
                        "failover",
                        list(range(1, len(run.kills) + 1)),
                        [k.failover_s for k in run.kills],
                    ),
                    Series(
                        "lease time + 1 s", [1, max(1, len(run.kills))], [bound, bound], style="--"
                    ),
                ],
            )
        ]
        if run.kills
        else [],
        data={
            "mode": "quick" if quick else "full",
            "config": asdict(cfg),
            "kills": [asdict(k) for k in run.kills],
            "lost": run.lost,
            "double": run.double,
        },
    )


def run(quick: bool) -> Result:
    config = (
        ChaosConfig()
        if quick
        else ChaosConfig(kills=20, rounds=60, model="cnn", local_epochs=1, budget_s=3600.0)
    )
    return to_result(run_cluster_chaos(config), quick=quick)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster_chaos")
    parser.add_argument("--kills", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--lease-ttl", type=float, default=2.0)
    ns = parser.parse_args(argv)
    config = ChaosConfig(
        kills=ns.kills,
        rounds=ns.rounds,
        clients=ns.clients,
        lease_ttl_s=ns.lease_ttl,
        model=ns.model,
    )
    outcome: Any = to_result(run_cluster_chaos(config), quick=True)
    for target in outcome.targets:
        print(f"{'met' if target.met else 'NOT met'}: {target.name}: {target.measured}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
