"""``fedlearn run`` end to end, ``fedlearn evaluate`` on what it saved, and the messages
of commands given something that cannot work."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from cli_harness import Finished, Started, Transcript, fedlearn, free_port, start, write_digits

from fedlearn.cli.processes import usable_cores
from fedlearn.cli.run_cmd import SLOTS_PER_CORE
from fedlearn.core.serialization import decode_weights
from fedlearn.models.checkpoint import read_model_file, save_model_file
from fedlearn.models.registry import build_model
from fedlearn.models.weights import model_to_weights
from fedlearn.persistence import FileModelStore, SqlRunStore, make_engine

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROUND_KEYS = {"round", "accuracy", "loss", "clients", "bytes_up", "bytes_down", "seconds"}


@dataclass(frozen=True)
class Federation:
    out: Path
    done: Finished


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory, cli_env: dict[str, str]) -> Federation:
    """The command as a user types it; with no MNIST at hand (the test's empty cache, no
    network) every process falls back to the bundled digits, so this takes a while."""
    out = tmp_path_factory.mktemp("run") / "out"
    done = fedlearn(
        "run", "--clients", 3, "--rounds", 2, "--model", "mlp", "--local-epochs", 1,
        "--out", out,
        env=cli_env, timeout_s=240,
    )  # fmt: skip
    return Federation(out, done)


def _show(federation: Federation, transcript: Transcript) -> None:
    done = federation.done
    transcript.add(
        f"fedlearn run -> {done.returncode}",
        f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}",
    )
    transcript.log_dirs.append(federation.out / "logs")


def _no_space(text: str) -> str:
    """``text`` without whitespace: rich wraps long messages wherever it likes."""
    return "".join(text.split())


@pytest.mark.slow
def test_run_trains_a_local_federation_and_saves_its_results(
    federation: Federation, transcript: Transcript
) -> None:
    _show(federation, transcript)
    out, done = federation.out, federation.done

    assert done.returncode == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {"config", "rounds", "final_accuracy"} <= set(summary)
    config = summary["config"]
    assert (config["clients"], config["rounds"], config["model"]) == (3, 2, "mlp")
    assert config["local_epochs"] == 1
    # by default one client per core trains at once (none wait where each has a core)
    per_machine = SLOTS_PER_CORE * usable_cores()
    assert config["slots"] == (per_machine if per_machine < 3 else 0)
    rounds = summary["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    for row in rounds:
        assert set(row) >= ROUND_KEYS, row
        assert 0.0 <= row["accuracy"] <= 1.0, row
        assert math.isfinite(row["loss"]) and row["loss"] > 0, row
        assert row["clients"] == 3, row
        assert isinstance(row["bytes_up"], int) and row["bytes_up"] > 0, row
        assert isinstance(row["bytes_down"], int) and row["bytes_down"] > 0, row
        assert row["seconds"] >= 0, row
        assert row["completed_at"] - row["started_at"] == pytest.approx(row["seconds"]), row
        # the per-round table: round, accuracy, loss, clients, MB up, MB down, seconds
        line = rf"^\W*{row['round']}\W+{row['accuracy']:.4f}\W+{row['loss']:.4f}\W+3\W"
        assert re.search(line, done.stdout, re.MULTILINE), f"no table row for {row}"
    final = summary["final_accuracy"]
    assert isinstance(final, float) and 0.0 <= final <= 1.0
    assert final == rounds[-1]["accuracy"]
    assert f"final accuracy {final:.4f}" in done.stdout

    saved = read_model_file(out / "global_model.pt")  # torch.load(weights_only=True) inside
    assert saved.model_name == "mlp"
    assert saved.metadata["rounds"] == 2
    engine = make_engine(f"sqlite:///{out / 'state' / 'fedlearn.db'}")
    try:
        last = SqlRunStore(engine).list_rounds(summary["run_id"])[-1]
    finally:
        engine.dispose()
    assert last.round_number == 2
    stored = decode_weights(FileModelStore(out / "state" / "models").get(last.global_model_path))
    assert list(saved.weights) == list(stored.tensors)
    for name, tensor in stored.tensors.items():
        np.testing.assert_array_equal(saved.weights[name], tensor, err_msg=name)

    png = (out / "accuracy.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    assert png[12:16] == b"IHDR" and int.from_bytes(png[16:20], "big") > 0
    assert sorted(p.name for p in (out / "logs").glob("*.log")) == [
        "client-00.log",
        "client-01.log",
        "client-02.log",
        "coordinator.log",
    ]


@pytest.mark.slow
def test_evaluate_reproduces_the_final_accuracy_of_the_run(
    federation: Federation, transcript: Transcript, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    _show(federation, transcript)
    assert federation.done.returncode == 0
    summary = json.loads((federation.out / "summary.json").read_text())
    test_dir = write_digits(tmp_path / "t10k", splits=("t10k",))  # the same 1,000 digits

    done = fedlearn(
        "evaluate", "--model", federation.out / "global_model.pt", "--dataset", "mnist",
        "--data-dir", test_dir, "--json",
        env=cli_env, timeout_s=120, transcript=transcript,
    )  # fmt: skip

    assert done.returncode == 0
    result = json.loads(done.stdout)
    assert set(result) == {"accuracy", "loss", "samples"}
    assert result["samples"] == 1000
    assert result["accuracy"] == pytest.approx(summary["final_accuracy"], abs=1e-6)
    assert result["loss"] == pytest.approx(summary["rounds"][-1]["loss"], rel=1e-4)


@pytest.mark.slow
def test_run_reads_its_images_from_data_dir(
    transcript: Transcript, tmp_path: Path, digits_dir: Path, cli_env: dict[str, str]
) -> None:
    out = tmp_path / "out"
    transcript.log_dirs.append(out / "logs")

    done = fedlearn(
        "run", "--clients", 3, "--rounds", 1, "--model", "mlp", "--local-epochs", 1,
        "--out", out, "--data-dir", digits_dir,
        env=cli_env, timeout_s=240, transcript=transcript,
    )  # fmt: skip

    assert done.returncode == 0
    assert _no_space(f"from {digits_dir}") in _no_space(done.stdout)
    summary = json.loads((out / "summary.json").read_text())
    assert [r["clients"] for r in summary["rounds"]] == [3]


# -- commands that cannot work: a clear message and a non-zero exit, no traceback -------


@dataclass(frozen=True)
class Refusals:
    folder: Path
    results: dict[str, Finished]


@pytest.fixture(scope="module")
def refusals(
    tmp_path_factory: pytest.TempPathFactory, cli_env: dict[str, str]
) -> Iterator[Refusals]:
    """Every failing command, started side by side (each pays the ~10 s import of torch)."""
    folder = tmp_path_factory.mktemp("refusals")
    test_dir = write_digits(folder / "t10k", splits=("t10k",))
    (folder / "text.pt").write_bytes(b"this is not a model file\n" * 40)
    (folder / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    save_model_file(
        folder / "whole.pt", model_name="mlp", weights=model_to_weights(build_model("mlp"))
    )
    whole = (folder / "whole.pt").read_bytes()
    (folder / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    state = folder / "coordinator-state"
    commands: dict[str, tuple[object, ...]] = {
        "evaluate-missing": (
            "evaluate", "--model", folder / "missing.pt", "--data-dir", test_dir, "--json",
        ),
        "evaluate-text": (
            "evaluate", "--model", folder / "text.pt", "--data-dir", test_dir, "--json",
        ),
        "evaluate-random": (
            "evaluate", "--model", folder / "random.pt", "--data-dir", test_dir, "--json",
        ),
        "evaluate-truncated": (
            "evaluate", "--model", folder / "truncated.pt", "--data-dir", test_dir, "--json",
        ),
        "status-nobody-listening": (
            "status", "--coordinator", f"127.0.0.1:{free_port()}", "--json",
        ),
        "coordinator-unknown-strategy": (
            "coordinator", "--strategy", "nope", "--address", "127.0.0.1:0",
            "--database-url", f"sqlite:///{state / 'fedlearn.db'}", "--model-dir", state / "models",
            "--model", "mlp", "--no-download",
        ),
    }  # fmt: skip
    started: dict[str, Started] = {}
    runs: list[Started] = []
    try:
        for name, args in commands.items():
            started[name] = start(runs, folder, cli_env, *args)
        yield Refusals(folder, {name: run.finish(120) for name, run in started.items()})
    finally:
        for run in runs:
            if run.process.poll() is None:
                run.process.kill()
                run.process.wait(10)


def _refused(refusals: Refusals, name: str, transcript: Transcript) -> Finished:
    done = refusals.results[name]
    transcript.add(name, f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}")
    assert done.returncode not in (0, None)
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stdout.strip() == ""  # nothing that a script could mistake for a result
    return done


@pytest.mark.slow
def test_evaluate_refuses_a_missing_model_file(refusals: Refusals, transcript: Transcript) -> None:
    done = _refused(refusals, "evaluate-missing", transcript)
    assert "does not exist" in done.stderr
    assert _no_space(str(refusals.folder / "missing.pt")) in _no_space(done.stderr)


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind",
    [
        "random",
        "truncated",
        "text",
    ],
)
def test_evaluate_refuses_a_corrupt_model_file(
    refusals: Refusals, transcript: Transcript, kind: str
) -> None:
    done = _refused(refusals, f"evaluate-{kind}", transcript)
    assert "error:" in done.stderr
    assert "corrupt" in done.stderr
    assert _no_space(str(refusals.folder / f"{kind}.pt")) in _no_space(done.stderr)


@pytest.mark.slow
def test_status_without_a_coordinator_fails_within_its_timeout(
    refusals: Refusals, transcript: Transcript
) -> None:
    done = _refused(refusals, "status-nobody-listening", transcript)
    # The client reports how long it kept retrying; it must give up at its --timeout (5 s)
    # rather than the default retry budget of a minute. Wall-clock time is not asserted:
    # process start-up on a loaded machine says nothing about the retry policy.
    match = re.search(r"unreachable for ([0-9.]+) s", done.stderr)
    assert match, done.stderr
    assert float(match.group(1)) <= 10.0, done.stderr


@pytest.mark.slow
def test_coordinator_refuses_an_unknown_strategy_before_touching_its_state(
    refusals: Refusals, transcript: Transcript
) -> None:
    done = _refused(refusals, "coordinator-unknown-strategy", transcript)
    assert "error:" in done.stderr
    assert "unknown strategy 'nope'" in done.stderr
    assert "fedavg" in done.stderr  # says what would work
    assert not (refusals.folder / "coordinator-state").exists()
