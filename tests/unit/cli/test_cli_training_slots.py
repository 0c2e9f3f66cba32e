"""``fedlearn run --parallel-training``: how many of its clients train at once, through
the training-slot server it runs for them and names to each client (``--slot-server``)."""

import os
import socket
from pathlib import Path

import pytest
from cli_fakes import invoke, run_plan

import fedlearn.bootstrap
from fedlearn.cli import processes, run_cmd


def _server_of(plan) -> str | None:
    args = [str(a) for a in plan.client_args]
    if "--slot-server" not in args:
        return None
    return args[args.index("--slot-server") + 1]


def _free_slots(path: str) -> int:
    """How many turns the server at ``path`` grants at once (taken, then given back)."""
    taken = []
    try:
        while len(taken) < 64:
            conn = socket.socket(socket.AF_UNIX)
            taken.append(conn)
            conn.connect(path)
            conn.settimeout(0.3)
            try:
                if not conn.recv(16).endswith(b"\n"):
                    break
            except TimeoutError:
                break
        return len(taken) - 1
    finally:
        for conn in taken:
            conn.close()


def _slots_served(monkeypatch, capsys, tmp_path, *args):
    """The number of slots the run serves its clients (``None``: no server), measured
    while it runs, and whether the server is gone once the run is over."""
    seen = []

    def count(plan):
        path = _server_of(plan)
        seen.append((path, None if path is None else _free_slots(path)))

    code, _, plans = run_plan(monkeypatch, capsys, tmp_path, *args, during=count)
    assert code is None and len(plans) == 1
    path, served = seen[0]
    assert path is None or not os.path.exists(path)  # closed with the run
    return served


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(run_cmd, "usable_cores", lambda: 2)


def test_run_lets_one_client_per_core_train_at_once_by_default(
    monkeypatch, capsys, tmp_path, two_cores
):
    assert _slots_served(monkeypatch, capsys, tmp_path, "--clients", 10) == 2


def test_by_default_no_slots_when_every_client_has_a_core(monkeypatch, capsys, tmp_path, two_cores):
    assert _slots_served(monkeypatch, capsys, tmp_path, "--clients", 2) is None


def test_usable_cores_counts_the_affinity_mask_not_the_machine(monkeypatch):
    monkeypatch.setattr(processes.os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    monkeypatch.setattr(processes.os, "cpu_count", lambda: 64)

    assert processes.usable_cores() == 3


@pytest.mark.parametrize(
    ("args", "slots"),
    [
        (("--clients", 10, "--parallel-training", 3), 3),
        (("--clients", 10, "--parallel-training", 0), None),  # no limit
        (("--clients", 3, "--parallel-training", 3), None),  # every client fits
    ],
)
def test_parallel_training_sets_the_slots_or_none(monkeypatch, capsys, tmp_path, args, slots):
    assert _slots_served(monkeypatch, capsys, tmp_path, *args) == slots


def test_a_negative_parallel_training_is_a_usage_error(monkeypatch, capsys, tmp_path):
    code, err, plans = run_plan(monkeypatch, capsys, tmp_path, "--parallel-training", -1)

    assert code == 2 and plans == []
    assert "--parallel-training" in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--slot-dir", "slots", "--slots", 2), (Path("slots"), 2, None)),
        (("--slot-server", "slots.sock"), (None, 1, Path("slots.sock"))),
    ],
)
def test_client_builds_its_runtime_with_the_slots(monkeypatch, capsys, tmp_path, args, expected):
    seen = []

    def build(settings):
        seen.append(settings)
        raise SystemExit(0)

    monkeypatch.setattr(fedlearn.bootstrap, "build_client", build)
    code, _ = invoke(monkeypatch, capsys, "client", "--log-level", "warning", *args)

    assert code == 0
    assert (seen[0].slot_dir, seen[0].slot_count, seen[0].slot_server) == expected


@pytest.mark.parametrize(("args", "passed"), [((), False), (("--release-heap",), True)])
def test_run_passes_release_heap_to_every_client_only_when_asked(
    monkeypatch, capsys, tmp_path, args, passed
):
    _, _, plans = run_plan(monkeypatch, capsys, tmp_path, "--clients", 3, *args)

    assert ("--release-heap" in [str(a) for a in plans[0].client_args]) is passed
