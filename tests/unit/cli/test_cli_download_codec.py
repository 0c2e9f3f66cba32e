"""``--download-codec`` on ``fedlearn coordinator`` and ``fedlearn run``: deterministic codecs
go through under their canonical name, stochastic ones are a usage error (exit 2)."""

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


def _forwarded(plan) -> str | None:
    args = [str(a) for a in plan.coordinator_args]
    return args[args.index("--download-codec") + 1] if "--download-codec" in args else None


@pytest.mark.parametrize("codec", ["int8:round=stochastic", "topk:0.1+int8:round=stochastic"])
def test_coordinator_refuses_a_stochastic_download_codec_as_a_usage_error(
    monkeypatch, capsys, codec
):
    code, err, seen = _coordinator(monkeypatch, capsys, "--download-codec", codec)

    assert code == 2
    assert seen == []
    assert "--download-codec" in _flat(err) and "stochastically" in _flat(err), err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        (None, None),
        ("raw", None),
        ("int8:round=nearest", "int8"),
        ("topk:1e-1+int8", "topk:0.1+int8"),
    ],
)
def test_coordinator_takes_the_canonical_download_codec(monkeypatch, capsys, given, canonical):
    args = () if given is None else ("--download-codec", given)

    code, _, seen = _coordinator(monkeypatch, capsys, *args)

    assert code is None
    assert seen[0].run.download_codec == canonical


def test_run_refuses_a_stochastic_download_codec_before_starting_anything(
    monkeypatch, capsys, tmp_path
):
    code, err, plans = _run(
        monkeypatch, capsys, tmp_path, "--download-codec", "int8:round=stochastic"
    )

    assert code == 2
    assert plans == []
    assert "--download-codec" in _flat(err), err


@pytest.mark.parametrize(
    ("given", "forwarded"), [(None, None), ("raw", None), ("int8:block=0", "int8")]
)
def test_run_forwards_the_canonical_download_codec_to_its_coordinator(
    monkeypatch, capsys, tmp_path, given, forwarded
):
    args = () if given is None else ("--download-codec", given)

    code, _, plans = _run(monkeypatch, capsys, tmp_path, *args)

    assert code is None
    assert _forwarded(plans[0]) == forwarded
