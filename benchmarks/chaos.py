"""Chaos: a real federation run through random client kills and network cuts.

A ``fedlearn coordinator`` process (SQLite, file model store) and K ``fedlearn client``
processes, each client with its own state folder (outbox + checkpoints) and talking to
the coordinator through its own TCP proxy (``tests/integration/tcp_proxy.py``). Once
round 1 is open, a seeded schedule injects one fault at a time:

- ``kill``: SIGKILL a client, start it again after a delay with the same ``--client-id``
  and ``--state-dir`` (it re-sends what its outbox holds and resumes from its checkpoint);
- ``cut``: close every connection of a client's proxy and refuse new ones for a while.

Measured, from the clients' logs and the coordinator's database:

- rounds completed and failed, out of those planned;
- updates acknowledged to clients (each client logs every ack) against updates stored
  and counted by completed rounds: *lost* = acknowledged but not stored, or stored in a
  completed round that does not count it; *double* = counted more than once. Both must
  be 0. Acknowledged updates of a round that then failed at its deadline (too few
  updates) are stored, never counted, and reported apart: that is a clean failure;
- time to recover: from each fault to that client's next update the coordinator
  accepted (median and max).

``python -m benchmarks chaos`` (quick: 4 clients, MLP, 10 rounds); ``--full``: 6 clients,
CNN, 20 rounds; ``python -m benchmarks.chaos --clients N --rounds R --seed S`` for one run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Child, fedlearn_command, mnist_dir, wait_for_port_file
from benchmarks.report import REPO_ROOT, Plot, Result, Series, Target

__all__ = [
    "ChaosConfig",
    "Fault",
    "RoundRow",
    "StoredUpdate",
    "Tally",
    "fault_schedule",
    "main",
    "parse_acks",
    "recovery_times",
    "rounds_are_clean",
    "run",
    "run_chaos",
    "tally",
]

RUN_ID = "chaos"
ACK_LINE = re.compile(r"round (\d+): update (\S+) (?:accepted|was already stored)")
"""What ``fedlearn.client.runtime`` logs when the coordinator acknowledges an update."""
GAP_S = (3.5, 6.0)
"""Seconds from one fault to the next."""
KILL_S = (0.5, 2.0)
"""Seconds from a kill to the restart."""
CUT_S = (1.0, 3.0)
"""Seconds a cut lasts."""
UNCOUNTED = ("failed", "rolled_back")
"""Round statuses whose stored updates are rightly not counted (no rollback happens here
unless a model diverges)."""


# -- pure helpers -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault: ``at_s`` seconds after round 1 opened, on client number ``client``."""

    at_s: float
    kind: str
    """``kill`` (restarted after ``length_s``) or ``cut`` (network back after ``length_s``)."""
    client: int
    length_s: float


def fault_schedule(
    rng: np.random.Generator,
    *,
    clients: int,
    duration_s: float,
    gap_s: tuple[float, float] = GAP_S,
    kill_s: tuple[float, float] = KILL_S,
    cut_s: tuple[float, float] = CUT_S,
) -> list[Fault]:
    """Faults one at a time, each over before the next begins, until ``duration_s``."""
    longest = max(kill_s[1], cut_s[1])
    if gap_s[0] <= longest:
        raise ValueError(f"gaps {gap_s} must exceed the longest fault ({longest} s)")
    faults = []
    at = float(rng.uniform(*gap_s))
    while at < duration_s:
        kind = "kill" if rng.random() < 0.5 else "cut"
        length = float(rng.uniform(*(kill_s if kind == "kill" else cut_s)))
        faults.append(Fault(round(at, 3), kind, int(rng.integers(clients)), round(length, 3)))
        at += float(rng.uniform(*gap_s))
    return faults


def parse_acks(log_text: str) -> set[tuple[int, str]]:
    """``(round, update id)`` of every update a client's log says was acknowledged."""
    return {(int(m[1]), m[2]) for m in ACK_LINE.finditer(log_text)}


@dataclass(frozen=True, slots=True)
class StoredUpdate:
    client_id: str
    round_number: int
    update_id: str
    submitted_at: float


@dataclass(frozen=True, slots=True)
class RoundRow:
    number: int
    status: str
    participating: int
    seconds: float | None = None
    failure_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Tally:
    acknowledged: int
    stored: int
    counted: int
    """Stored updates of completed rounds."""
    in_failed_rounds: int
    """Acknowledged updates of rounds that failed or were rolled back (stored, rightly
    not counted)."""
    lost: int
    double: int
    lost_ids: tuple[str, ...] = ()


def tally(
    acked: Mapping[str, Iterable[tuple[int, str]]],
    stored: Sequence[StoredUpdate],
    rounds: Sequence[RoundRow],
) -> Tally:
    """Compare what clients were told with what the coordinator stored and counted."""
    status = {r.number: r.status for r in rounds}
    by_id = {u.update_id: u for u in stored}
    acknowledged = {(client, n, uid) for client, pairs in acked.items() for n, uid in pairs}
    lost_ids = []
    in_failed = 0
    for client, n, uid in sorted(acknowledged):
        row = by_id.get(uid)
        if row is None or row.client_id != client or row.round_number != n:
            lost_ids.append(uid)
        elif status.get(n) in UNCOUNTED:
            in_failed += 1
        elif status.get(n) != "completed":
            lost_ids.append(uid)
    counted = [u for u in stored if status.get(u.round_number) == "completed"]
    per_client_round = Counter((u.client_id, u.round_number) for u in counted)
    double = sum(c - 1 for c in per_client_round.values())
    double += len(stored) - len(by_id)  # one update id stored twice
    per_round = Counter(u.round_number for u in counted)
    for r in rounds:
        if r.status == "completed":
            # a round whose participant count exceeds its stored updates counted one twice;
            # one that falls short left an acknowledged update out
            double += max(0, r.participating - per_round[r.number])
            lost_ids += [f"round {r.number}"] * max(0, per_round[r.number] - r.participating)
    return Tally(
        acknowledged=len(acknowledged),
        stored=len(stored),
        counted=len(counted),
        in_failed_rounds=in_failed,
        lost=len(lost_ids),
        double=double,
        lost_ids=tuple(lost_ids),
    )


def recovery_times(
    faults: Sequence[tuple[str, float]], stored: Sequence[StoredUpdate]
) -> list[float | None]:
    """For each ``(client, wall time)`` fault, seconds until that client's next accepted
    update (None: none came before the run ended)."""
    times = []
    for client, at in faults:
        later = [u.submitted_at for u in stored if u.client_id == client and u.submitted_at > at]
        times.append(round(min(later) - at, 3) if later else None)
    return times


def rounds_are_clean(rounds: Sequence[RoundRow]) -> tuple[bool, list[str]]:
    """Every round is completed, or failed with a reason; none is left open."""
    problems = []
    for r in rounds:
        if r.status == "failed" and not r.failure_reason:
            problems.append(f"round {r.number} failed without a reason")
        elif r.status not in ("completed", *UNCOUNTED):
            problems.append(f"round {r.number} is {r.status}")
    return not problems, problems


# -- the run ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChaosConfig:
    clients: int = 4
    rounds: int = 10
    model: str = "mlp"
    seed: int = 0
    min_clients: int = 2
    round_timeout_s: float = 20.0
    local_epochs: int = 5
    budget_s: float = 900.0


@dataclass
class ChaosRun:
    config: ChaosConfig
    faults: list[dict[str, Any]] = field(default_factory=list)
    rounds: list[RoundRow] = field(default_factory=list)
    stored: list[StoredUpdate] = field(default_factory=list)
    acked: dict[str, set[tuple[int, str]]] = field(default_factory=dict)
    coordinator_exit: int | None = None
    client_exits: dict[str, list[int | None]] = field(default_factory=dict)
    wall_s: float = 0.0
    data_source: str = ""


def _import_proxy() -> Any:
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from tests.integration.tcp_proxy import TcpProxy  # noqa: PLC0415 - a test helper

    return TcpProxy


class _Federation:
    """The coordinator, the clients and their proxies of one chaos run."""

    def __init__(self, config: ChaosConfig, folder: Path, data_dir: Path) -> None:
        self.config = config
        self.folder = folder
        self.data_dir = data_dir
        self.db = folder / "state.db"
        self.incarnations: dict[str, list[Child]] = {}
        self.proxies: dict[str, Any] = {}
        self.port = 0
        self.coordinator: Child | None = None

    @property
    def names(self) -> list[str]:
        return [f"c{i}" for i in range(self.config.clients)]

    def start(self) -> None:
        cfg = self.config
        port_file = self.folder / "coordinator.port"
        self.coordinator = Child(
            fedlearn_command(
                "coordinator", "--address", "127.0.0.1:0", "--port-file", port_file,
                "--database-url", f"sqlite:///{self.db}", "--model-dir", self.folder / "models",
                "--run-id", RUN_ID, "--model", cfg.model, "--rounds", cfg.rounds,
                "--min-clients", cfg.min_clients, "--round-timeout", cfg.round_timeout_s,
                "--local-epochs", cfg.local_epochs, "--seed", cfg.seed, "--linger", 20,
                "--log-level", "info",
            ),
            self.folder / "logs" / "coordinator.log",
        )  # fmt: skip
        self.port = wait_for_port_file(port_file, self.coordinator)
        proxy_class = _import_proxy()
        for name in self.names:
            self.proxies[name] = proxy_class(self.port)
            self.start_client(name)

    def start_client(self, name: str) -> None:
        cfg = self.config
        runs = self.incarnations.setdefault(name, [])
        index = self.names.index(name)
        command = fedlearn_command(
            "client", "--coordinator", self.proxies[name].address, "--client-id", name,
            "--state-dir", self.folder / "clients" / name, "--dataset", "mnist",
            "--data-dir", self.data_dir, "--no-download", "--partition", index,
            "--num-partitions", cfg.clients, "--threads", 1, "--seed", cfg.seed,
            "--log-level", "info",
        )  # fmt: skip
        runs.append(Child(command, self.folder / "logs" / f"{name}.{len(runs)}.log"))

    def client(self, name: str) -> Child:
        return self.incarnations[name][-1]

    def stop(self) -> None:
        for proxy in self.proxies.values():
            proxy.restore()
        end = time.monotonic() + 15.0  # told that the run is over, clients exit by themselves
        for runs in self.incarnations.values():
            for child in runs:
                if child.running():
                    child.wait(max(0.0, end - time.monotonic()))
                child.stop()
        if self.coordinator is not None:
            self.coordinator.stop()
        for proxy in self.proxies.values():
            proxy.close()


def _round_one_open(db: Path) -> bool:
    import sqlite3  # noqa: PLC0415

    if not db.exists():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as c:
            row = c.execute(
                "SELECT 1 FROM training_rounds WHERE run_id = ? AND round_number = 1", (RUN_ID,)
            ).fetchone()
    except sqlite3.Error:
        return False
    return row is not None


def _wait_for_round_one(fed: _Federation, deadline: float) -> bool:
    assert fed.coordinator is not None
    while not _round_one_open(fed.db):
        if not fed.coordinator.running() or time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _apply(fed: _Federation, fault: Fault) -> bool:
    """Kill a client or cut its network; False when the client is not running."""
    name = fed.names[fault.client]
    if fault.kind == "cut":
        fed.proxies[name].cut()
        return True
    child = fed.client(name)
    if not child.running():
        return False
    child.process.kill()
    child.process.wait()
    return True


def _undo(fed: _Federation, kind: str, name: str) -> None:
    if kind == "kill":
        fed.start_client(name)
    else:
        fed.proxies[name].restore()


def _inject(fed: _Federation, faults: Sequence[Fault], run: ChaosRun) -> None:
    """Apply ``faults`` (times after round 1 opened) until the coordinator exits."""
    assert fed.coordinator is not None
    deadline = time.monotonic() + fed.config.budget_s
    if not _wait_for_round_one(fed, deadline):
        return
    origin = time.monotonic()
    pending = list(faults)
    undo: list[tuple[float, str, str]] = []  # (monotonic time, kind, client)
    while fed.coordinator.running() and time.monotonic() < deadline:
        now = time.monotonic()
        for item in [u for u in undo if u[0] <= now]:
            undo.remove(item)
            _undo(fed, item[1], item[2])
        while pending and origin + pending[0].at_s <= now:
            fault = pending.pop(0)
            if not _apply(fed, fault):
                continue
            name = fed.names[fault.client]
            run.faults.append(
                {"at_s": round(now - origin, 2), "kind": fault.kind, "client": name,
                 "length_s": fault.length_s, "wall": time.time()}
            )  # fmt: skip
            undo.append((now + fault.length_s, fault.kind, name))
        time.sleep(0.02)
    for _, kind, name in undo:  # the run is over: give cut clients their network back
        if kind == "cut":
            fed.proxies[name].restore()


def _read_store(db: Path) -> tuple[list[RoundRow], list[StoredUpdate]]:
    from fedlearn.persistence import SqlRunStore, make_engine  # noqa: PLC0415

    engine = make_engine(f"sqlite:///{db}")
    try:
        runs = SqlRunStore(engine)
        rounds, stored = [], []
        for r in runs.list_rounds(RUN_ID):
            seconds = r.completed_at - r.started_at if r.completed_at else None
            rounds.append(
                RoundRow(
                    r.round_number, r.status.value, r.participating_clients,
                    seconds, r.failure_reason,
                )
            )  # fmt: skip
            stored += [
                StoredUpdate(u.client_id, u.round_number, u.update_id, u.submitted_at)
                for u in runs.list_updates(RUN_ID, r.round_number)
            ]
    finally:
        engine.dispose()
    return rounds, stored


def run_chaos(config: ChaosConfig) -> ChaosRun:
    """One chaos run, start to end, in a temporary folder."""
    data_dir, source = mnist_dir()
    run = ChaosRun(config, data_source=source)
    rng = np.random.default_rng(config.seed)
    faults = fault_schedule(rng, clients=config.clients, duration_s=config.budget_s)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fedlearn-chaos-") as name:
        fed = _Federation(config, Path(name), data_dir)
        try:
            fed.start()
            _inject(fed, faults, run)
            assert fed.coordinator is not None
            run.coordinator_exit = fed.coordinator.wait(30.0)
        finally:
            fed.stop()
        run.wall_s = time.monotonic() - started
        run.rounds, run.stored = _read_store(fed.db)
        for client, children in fed.incarnations.items():
            run.acked[client] = set().union(
                *(parse_acks(c.log_path.read_text(errors="replace")) for c in children)
            )
            run.client_exits[client] = [c.process.returncode for c in children]
        if run.coordinator_exit != 0 and fed.coordinator is not None:
            print(fed.coordinator.log_tail(3000), file=sys.stderr)
    return run


# -- the report ---------------------------------------------------------------------------

COLUMNS = (
    "clients", "rounds planned", "rounds completed", "rounds failed", "kills", "cuts",
    "updates acknowledged", "updates counted", "acknowledged in failed rounds",
    "updates lost", "updates double-counted", "median recovery s", "max recovery s",
    "faults not recovered", "wall s",
)  # fmt: skip


def _summary(run: ChaosRun) -> dict[str, Any]:
    counts = tally(run.acked, run.stored, run.rounds)
    recoveries = recovery_times([(f["client"], f["wall"]) for f in run.faults], run.stored)
    for fault, seconds in zip(run.faults, recoveries, strict=True):
        fault["recovery_s"] = seconds
    done = [s for s in recoveries if s is not None]
    _, problems = rounds_are_clean(run.rounds)
    if run.coordinator_exit is None:
        problems.append("the coordinator did not exit by itself")
    numbered = [r for r in run.rounds if r.number > 0]
    return {
        "tally": counts,
        "recoveries": recoveries,
        "median_recovery_s": round(statistics.median(done), 2) if done else None,
        "max_recovery_s": round(max(done), 2) if done else None,
        "unrecovered": len(recoveries) - len(done),
        "clean": not problems,
        "problems": problems,
        "completed": sum(1 for r in numbered if r.status == "completed"),
        "failed": sum(1 for r in numbered if r.status == "failed"),
    }


def _row(run: ChaosRun, s: Mapping[str, Any]) -> list[object]:
    t: Tally = s["tally"]
    kinds = Counter(f["kind"] for f in run.faults)
    return [
        run.config.clients, run.config.rounds, s["completed"], s["failed"], kinds["kill"],
        kinds["cut"], t.acknowledged, t.counted, t.in_failed_rounds, t.lost, t.double,
        s["median_recovery_s"], s["max_recovery_s"], s["unrecovered"], round(run.wall_s, 1),
    ]  # fmt: skip


def _recovery_plot(faults: Sequence[Mapping[str, Any]]) -> Plot:
    series = []
    for kind, style in (("kill", "o"), ("cut", "s")):
        mine = [f for f in faults if f["kind"] == kind]
        series.append(
            Series(
                f"{kind} (time to the next accepted update)",
                [f["at_s"] for f in mine],
                [f.get("recovery_s") for f in mine],
                style=style,
            )
        )
    return Plot(
        file="chaos.png",
        title="Recovery after each fault (faults with no later update left out)",
        xlabel="fault at (seconds after round 1 opened)",
        ylabel="seconds to recover",
        series=series,
    )


def to_result(run: ChaosRun, *, quick: bool) -> Result:
    s = _summary(run)
    t: Tally = s["tally"]
    cfg = run.config
    return Result(
        name="chaos",
        title="Chaos: random client kills and network cuts during a real run",
        columns=COLUMNS,
        rows=[_row(run, s)],
        targets=[
            Target(
                name="updates lost (acknowledged but not counted) or counted twice",
                target="0 and 0",
                measured=f"{t.lost} lost, {t.double} double ({t.acknowledged} acknowledged)",
                met=t.lost == 0 and t.double == 0 and t.acknowledged > 0,
            ),
            Target(
                name="every round completes or fails cleanly",
                target="completed, or failed with a reason; none left open",
                measured=(
                    f"{s['completed']} completed, {s['failed']} failed of {cfg.rounds}; "
                    f"coordinator exit {run.coordinator_exit}"
                    + (f"; {'; '.join(s['problems'])}" if s["problems"] else "")
                ),
                met=s["clean"],
            ),
        ],
        notes=[
            f"{cfg.clients} client processes ({cfg.model}, {cfg.local_epochs} local epochs, "
            f"IID partitions; data: {run.data_source}), each behind its own TCP proxy; "
            f"coordinator --min-clients {cfg.min_clients} --round-timeout "
            f"{cfg.round_timeout_s:g}, SQLite; seed {cfg.seed}.",
            f"Faults one at a time from round 1 on, {GAP_S[0]:g}-{GAP_S[1]:g} s apart: kill = "
            f"SIGKILL, restart {KILL_S[0]:g}-{KILL_S[1]:g} s later with the same --client-id "
            "and --state-dir; cut = the client's proxy closes every connection and refuses "
            f"new ones for {CUT_S[0]:g}-{CUT_S[1]:g} s.",
            "Acknowledged = the ack lines in every client log; counted = stored updates of "
            "completed rounds (each round's participating_clients checked against its rows). "
            "Recovery = from the fault to that client's next update the coordinator accepted "
            "(a restart includes loading torch and the data).",
            f"Client exit codes per incarnation: {run.client_exits} (-9: killed here; 130: "
            "stopped by the benchmark, a restart that came after the coordinator had gone).",
        ],
        figures=[_recovery_plot(run.faults)] if run.faults else [],
        data={
            "mode": "quick" if quick else "full",
            "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
            "faults": run.faults,
            "rounds": [dataclasses.asdict(r) for r in run.rounds],
            "lost_ids": list(t.lost_ids),
            "coordinator_exit": run.coordinator_exit,
        },
    )


def run(quick: bool) -> Result:
    if quick:
        config = ChaosConfig()
    else:
        config = ChaosConfig(
            clients=6, rounds=20, model="cnn", local_epochs=1, round_timeout_s=60.0,
            budget_s=3600.0,
        )  # fmt: skip
    return to_result(run_chaos(config), quick=quick)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    config = ChaosConfig(clients=args.clients, rounds=args.rounds, model=args.model, seed=args.seed)
    result = to_result(run_chaos(config), quick=True)
    print(dict(zip(result.columns, result.rows[0], strict=True)))
    for target in result.targets:
        print(f"{'met' if target.met else 'NOT met'}: {target.name}: {target.measured}")
    return 0 if all(t.met for t in result.targets) else 1


if __name__ == "__main__":
    sys.exit(main())
