"""``fedlearn run --parallel-training``: how many of its clients train at once, and the
``--slot-dir``/``--slots`` it gives each client."""

import pytest
from cli_fakes import invoke, run_plan

import fedlearn.bootstrap
from fedlearn.cli import processes, run_cmd


def _slot_args(plan) -> list[str]:
    args = [str(a) for a in plan.client_args]
    if "--slot-dir" not in args:
        return []
    at = args.index("--slot-dir")
    return args[at : at + 4]


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(run_cmd, "usable_cores", lambda: 2)


def test_run_lets_two_clients_per_core_train_at_once_by_default(
    monkeypatch, capsys, tmp_path, two_cores
):
    code, _, plans = run_plan(monkeypatch, capsys, tmp_path, "--clients", 10)

    assert code is None
    assert _slot_args(plans[0])[2:] == ["--slots", "4"]


def test_by_default_no_slots_when_every_client_has_one(monkeypatch, capsys, tmp_path, two_cores):
    _, _, plans = run_plan(monkeypatch, capsys, tmp_path, "--clients", 4)

    assert _slot_args(plans[0]) == []


def test_usable_cores_counts_the_affinity_mask_not_the_machine(monkeypatch):
    monkeypatch.setattr(processes.os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    monkeypatch.setattr(processes.os, "cpu_count", lambda: 64)

    assert processes.usable_cores() == 3


def test_parallel_training_gives_each_client_the_runs_slot_folder(monkeypatch, capsys, tmp_path):
    _, _, plans = run_plan(monkeypatch, capsys, tmp_path, "--clients", 10, "--parallel-training", 2)

    slot_dir = tmp_path / "out" / "state" / "training-slots"
    assert _slot_args(plans[0]) == ["--slot-dir", str(slot_dir), "--slots", "2"]


@pytest.mark.parametrize(
    ("args", "slots"),
    [
        (("--clients", 10, "--parallel-training", 3), ["--slots", "3"]),
        (("--clients", 10, "--parallel-training", 0), []),  # no limit
        (("--clients", 3, "--parallel-training", 3), []),  # every client fits
    ],
)
def test_parallel_training_sets_the_slots_or_none(monkeypatch, capsys, tmp_path, args, slots):
    _, _, plans = run_plan(monkeypatch, capsys, tmp_path, *args)

    assert _slot_args(plans[0])[2:] == slots


def test_a_negative_parallel_training_is_a_usage_error(monkeypatch, capsys, tmp_path):
    code, err, plans = run_plan(monkeypatch, capsys, tmp_path, "--parallel-training", -1)

    assert code == 2 and plans == []
    assert "--parallel-training" in err


def test_client_builds_its_runtime_with_the_slots(monkeypatch, capsys, tmp_path):
    seen = []

    def build(settings):
        seen.append(settings)
        raise SystemExit(0)

    monkeypatch.setattr(fedlearn.bootstrap, "build_client", build)
    code, _ = invoke(
        monkeypatch, capsys, "client", "--log-level", "warning",
        "--slot-dir", tmp_path / "slots", "--slots", 2,
    )  # fmt: skip

    assert code == 0
    assert (seen[0].slot_dir, seen[0].slot_count) == (tmp_path / "slots", 2)


@pytest.mark.parametrize(("args", "passed"), [((), False), (("--release-heap",), True)])
def test_run_passes_release_heap_to_every_client_only_when_asked(
    monkeypatch, capsys, tmp_path, args, passed
):
    _, _, plans = run_plan(monkeypatch, capsys, tmp_path, "--clients", 3, *args)

    assert ("--release-heap" in [str(a) for a in plans[0].client_args]) is passed
