"""Running ``fedlearn`` commands in-process with the expensive parts faked."""

import sys
from types import SimpleNamespace

import pytest

import fedlearn.bootstrap
from fedlearn.cli import run_cmd
from fedlearn.cli.main import main


class Built(Exception):
    """Raised by the stand-ins to stop once the command has built its settings."""


def invoke(monkeypatch, capsys, *argv):
    monkeypatch.setattr(sys, "argv", ["fedlearn", *map(str, argv)])
    with pytest.raises((SystemExit, Built)) as exited:
        main()
    code = exited.value.code if isinstance(exited.value, SystemExit) else None
    return code, capsys.readouterr().err


def coordinator_settings(monkeypatch, capsys, *args):
    seen = []

    def build(settings):
        seen.append(settings)
        raise Built

    monkeypatch.setattr(fedlearn.bootstrap, "build_coordinator", build)
    code, err = invoke(monkeypatch, capsys, "coordinator", "--log-level", "warning", *args)
    return code, err, seen


def run_plan(monkeypatch, capsys, tmp_path, *args, during=None):
    """``fedlearn run`` with the data and the processes faked; returns what it planned
    (and calls ``during(plan)`` where the processes would have run)."""
    plans = []

    def no_processes(plan, console):
        plans.append(plan)
        if during is not None:
            during(plan)
        raise Built

    data = SimpleNamespace(source="fake", train_labels=[0] * 40, test_labels=[0] * 10)
    monkeypatch.setattr(fedlearn.bootstrap, "load_data", lambda settings: data)
    monkeypatch.setattr(run_cmd, "_run_processes", no_processes)
    argv = ("run", "--log-level", "warning", "--out", tmp_path / "out", *args)
    code, err = invoke(monkeypatch, capsys, *argv)
    return code, err, plans


def flat(text: str) -> str:
    """``text`` without whitespace or the borders of rich's error panel, which wraps."""
    return "".join(text.replace("\u2502", " ").split())
