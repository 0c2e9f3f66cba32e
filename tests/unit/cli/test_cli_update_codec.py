"""``--update-codec`` on ``fedlearn coordinator`` and ``fedlearn run``: canonical names
go through, anything else is a usage error (exit 2) before anything starts."""

import sys
from types import SimpleNamespace

import pytest

import fedlearn.bootstrap
from fedlearn.cli import run_cmd
from fedlearn.cli.main import main


class Built(Exception):
    """Raised by the stand-ins to stop once the command has built its settings."""


def _main(monkeypatch, capsys, *argv):
    monkeypatch.setattr(sys, "argv", ["fedlearn", *map(str, argv)])
    with pytest.raises((SystemExit, Built)) as exited:
        main()
    code = exited.value.code if isinstance(exited.value, SystemExit) else None
    return code, capsys.readouterr().err


def _coordinator(monkeypatch, capsys, *args):
    seen = []

    def build(settings):
        seen.append(settings)
        raise Built

    monkeypatch.setattr(fedlearn.bootstrap, "build_coordinator", build)
    code, err = _main(monkeypatch, capsys, "coordinator", "--log-level", "warning", *args)
    return code, err, seen


def _run(monkeypatch, capsys, tmp_path, *args):
    """``fedlearn run`` with the data and the processes faked; returns what it planned."""
    plans = []

    def no_processes(plan, console):
        plans.append(plan)
        raise Built

    data = SimpleNamespace(source="fake", train_labels=[0] * 40, test_labels=[0] * 10)
    monkeypatch.setattr(fedlearn.bootstrap, "load_data", lambda settings: data)
    monkeypatch.setattr(run_cmd, "_run_processes", no_processes)
    argv = ("run", "--log-level", "warning", "--out", tmp_path / "out", *args)
    code, err = _main(monkeypatch, capsys, *argv)
    return code, err, plans


def _flat(text: str) -> str:
    """``text`` without whitespace or the borders of rich's error panel, which wraps."""
    return "".join(text.replace("\u2502", " ").split())


def _forwarded_codec(plan) -> str:
    args = [str(a) for a in plan.coordinator_args]
    return args[args.index("--update-codec") + 1]


def test_coordinator_takes_the_canonical_name_of_the_update_codec(monkeypatch, capsys):
    code, _, seen = _coordinator(monkeypatch, capsys, "--update-codec", "topk:1e-2+int8:block=0")

    assert code is None
    assert seen[0].run.round_config.codec == "topk:0.01+int8"


def test_coordinator_update_codec_defaults_to_raw(monkeypatch, capsys):
    _, _, seen = _coordinator(monkeypatch, capsys)

    assert seen[0].run.round_config.codec == "raw"


@pytest.mark.parametrize(
    ("codec", "message"),
    [
        ("bogus", "unknown codec 'bogus'"),
        ("topk:2", "topk fraction must be in (0, 1]"),
        ("int8+topk:0.1", "at most one 'topk' first"),
        ("int8:block=x", "int8 block must be a whole number"),
    ],
)
def test_coordinator_refuses_a_bad_update_codec_as_a_usage_error(
    monkeypatch, capsys, codec, message
):
    code, err, seen = _coordinator(monkeypatch, capsys, "--update-codec", codec)

    assert code == 2
    assert seen == []
    assert "--update-codec" in _flat(err) and _flat(message) in _flat(err), err
    assert "Traceback" not in err


def test_run_forwards_the_canonical_update_codec_to_its_coordinator(monkeypatch, capsys, tmp_path):
    code, _, plans = _run(monkeypatch, capsys, tmp_path, "--update-codec", "topk:1e-2+int8")

    assert code is None
    assert _forwarded_codec(plans[0]) == "topk:0.01+int8"


@pytest.mark.parametrize(
    ("codec", "message"),
    [("topk:2", "topk fraction must be in (0, 1]"), ("bogus", "unknown codec 'bogus'")],
)
def test_run_refuses_a_bad_update_codec_before_starting_anything(
    monkeypatch, capsys, tmp_path, codec, message
):
    code, err, plans = _run(monkeypatch, capsys, tmp_path, "--update-codec", codec)

    assert code == 2
    assert plans == []
    assert "--update-codec" in _flat(err) and _flat(message) in _flat(err), err
    assert "Traceback" not in err
