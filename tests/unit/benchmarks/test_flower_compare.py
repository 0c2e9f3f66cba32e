"""The Flower comparison's arithmetic: ratios, the overhead and accuracy targets, and the
rows and target for Flower's simulation runtime (no processes started here)."""

import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterable

import pytest

from benchmarks.flower_compare import (
    APP,
    FEDLEARN_BYTES,
    FLOWER,
    FLOWER_SIM,
    PINS,
    REPO_ROOT,
    RunOutcome,
    _run_data,
    compare,
    run_from_data,
)


def _outcome(
    framework: str,
    seconds: float,
    train: float,
    accuracies: list[float],
    *,
    gap: float | None = 0.0,
) -> RunOutcome:
    """Rounds of ``seconds`` each, the next starting ``gap`` s after one ends (``None``:
    no start times recorded, as in runs saved before they were)."""
    outcome = RunOutcome(framework, 10, 1)
    outcome.rounds = [
        {
            "round": k,
            "accuracy": acc,
            "started": None if gap is None else 1000.0 + (k - 1) * (seconds + gap),
            "seconds": seconds,
            "slowest_client_train_seconds": train,
            "overhead_seconds": seconds - train,
        }
        for k, acc in enumerate(accuracies, start=1)
    ]
    outcome.bytes_per_round = 1e6
    return outcome


def _rows(comparison: object) -> dict[str, list[object]]:
    return {row[1]: row for row in comparison.rows}  # type: ignore[attr-defined]


def _targets(comparison: object) -> dict[str, bool]:
    return {t.name: t.met for t in comparison.targets}  # type: ignore[attr-defined]


def test_overhead_and_accuracy_targets_against_the_deployment_runtime() -> None:
    fed = _outcome("fedlearn", 2.0, 1.5, [0.5, 0.8])
    flw = _outcome(FLOWER, 40.0, 1.5, [0.5, 0.81])
    c = compare(10, [fed], [flw])
    rows = _rows(c)
    assert rows["median framework overhead per round (s)"][2:] == [
        pytest.approx(0.5),
        pytest.approx(38.5),
        pytest.approx(0.5 / 38.5),
    ]
    targets = _targets(c)
    assert targets["framework overhead per round, 10 clients"] is True
    assert targets["accuracy per round, 10 clients"] is False  # 0.01 below in round 2
    assert not any("simulation" in name for name in rows)


def test_simulation_rows_and_target() -> None:
    fed = _outcome("fedlearn", 2.0, 1.5, [0.5, 0.8])
    flw = _outcome(FLOWER, 40.0, 1.5, [0.5, 0.8])
    sim = _outcome(FLOWER_SIM, 2.5, 1.4, [0.5, 0.8])
    c = compare(10, [fed], [flw], [sim])
    rows = _rows(c)
    assert rows["median round wall time (s), Flower simulation"][2:] == [
        pytest.approx(2.0),
        pytest.approx(2.5),
        pytest.approx(0.8),
    ]
    assert rows["final accuracy (round 2), Flower simulation"][2:4] == [0.8, 0.8]
    name = "median round wall time, 10 clients, vs Flower's simulation runtime"
    assert _targets(c)[name] is True

    slower = compare(10, [_outcome("fedlearn", 3.0, 1.5, [0.5, 0.8])], [flw], [sim])
    assert _targets(slower)[name] is False


def test_the_round_cadence_counts_what_falls_between_rounds() -> None:
    """Flower's evaluation blocks between its rounds: a shorter round wall time can
    still be a slower cadence, and the cadence target says so."""
    fed = _outcome("fedlearn", 2.0, 1.5, [0.5, 0.8, 0.9], gap=0.05)
    sim = _outcome(FLOWER_SIM, 1.9, 1.4, [0.5, 0.8, 0.9], gap=0.45)
    c = compare(10, [fed], [], [sim])
    rows, targets = _rows(c), _targets(c)
    cadence = "median round cadence (s): start to next start, evaluation included"
    assert rows[f"{cadence}, Flower simulation"][2:] == [
        pytest.approx(2.05),
        pytest.approx(2.35),
        pytest.approx(2.05 / 2.35),
    ]
    assert targets["median round wall time, 10 clients, vs Flower's simulation runtime"] is False
    assert targets["median round cadence, 10 clients, vs Flower's simulation runtime"] is True
    old = _outcome("fedlearn", 2.0, 1.5, [0.5, 0.8], gap=None)  # saved without round starts
    c = compare(10, [old], [], [sim])
    assert _rows(c)[f"{cadence}, Flower simulation"][2:] == [None, pytest.approx(2.35), None]
    name = "median round cadence, 10 clients, vs Flower's simulation runtime"
    assert _targets(c)[name] is False


def test_without_deployment_rounds_accuracy_is_judged_against_the_simulation() -> None:
    fed = _outcome("fedlearn", 2.0, 1.5, [0.5, 0.8])
    failed = RunOutcome(FLOWER, 10, 1, error="the SuperLink stopped answering")
    targets = {t.name: t for t in compare(10, [fed], [failed], []).targets}
    assert targets["accuracy per round, 10 clients"].measured == "not measured"

    for sim_accuracy, met in ((0.8, True), (0.81, False)):
        sim = _outcome(FLOWER_SIM, 2.5, 1.4, [0.5, sim_accuracy])
        target = next(
            t for t in compare(10, [fed], [failed], [sim]).targets if t.name.startswith("accuracy")
        )
        assert target.met is met
        assert "simulation runtime (no deployment rounds) over 2 rounds" in target.measured
    overhead = next(t for t in compare(10, [fed], [failed], [sim]).targets if "overhead" in t.name)
    assert overhead.met is False  # the deployment runtime's own target stays unmeasured


def test_a_failed_simulation_run_leaves_its_target_unmet() -> None:
    fed = _outcome("fedlearn", 2.0, 1.5, [0.5])
    flw = _outcome(FLOWER, 40.0, 1.5, [0.5])
    failed = RunOutcome(FLOWER_SIM, 10, 1, error="the SuperLink exited")
    c = compare(10, [fed], [flw], [failed])
    target = next(t for t in c.targets if "simulation" in t.name)
    assert (target.met, target.measured) == (False, "not measured")


def test_a_run_reads_back_from_its_json_form() -> None:
    run = _outcome(FLOWER, 40.0, 1.5, [0.5, 0.8])
    run.peaks_mb = {"superlink": 400.0}
    run.error = None
    run.bytes_note = "counted by the SuperLink"
    run.extra = {"load_1min_at_start": 1.5, "command": "flwr run"}
    again = run_from_data(_run_data(run))
    assert again == run
    old = _run_data(_outcome("fedlearn", 2.0, 1.5, [0.5]))
    del old["bytes_note"]  # flower.json written before the note was kept
    assert run_from_data(old).bytes_note == FEDLEARN_BYTES


def _by_name(specs: Iterable[str]) -> dict[str, str]:
    """``name[extra]==version`` specs as {name: version}."""
    found = {}
    for spec in specs:
        name, _, version = spec.partition("==")
        found[re.sub(r"\[.*\]", "", name).lower()] = version
    return found


def test_the_flower_environment_pins_every_dependency_the_bench_app_imports() -> None:
    """The Flower venv installs fedlearn without its dependencies, so each one the bench app
    pulls in through fedlearn must be among PINS, at fedlearn's own pin."""
    imported: set[str] = set()
    for source in (APP / "flowerbench").glob("*.py"):
        imported |= set(re.findall(r"^\s*from (fedlearn[\w.]*) import", source.read_text(), re.M))
    assert imported, "the bench app imports nothing from fedlearn?"
    probe = (
        "import importlib, importlib.metadata as m, json, sys\n"
        f"for name in {sorted(imported)!r}: importlib.import_module(name)\n"
        "owners = m.packages_distributions()\n"
        "print(json.dumps(sorted({d.lower() for top in {n.split('.')[0] for n in sys.modules}"
        " for d in owners.get(top, ())})))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    )
    distributions = set(json.loads(found.stdout))
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    ours, pinned = _by_name(project["dependencies"]), _by_name(PINS)
    needed = {d for d in distributions if d in ours}
    missing = sorted(d for d in needed if d not in pinned)
    assert not missing, f"PINS lacks {missing}, which the bench app imports through fedlearn"
    drift = sorted(d for d in needed if pinned[d] != ours[d])
    assert not drift, f"PINS and pyproject.toml pin {drift} differently"
