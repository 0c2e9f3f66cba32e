"""The ``--central-dp-*`` flags: what they build, the errors they give, and the status line."""

import sys

import pytest
from rich.console import Console

import fedlearn.bootstrap
from fedlearn.cli.central_dp_opts import central_dp_config
from fedlearn.cli.main import main
from fedlearn.cli.status_cmd import render_status
from fedlearn.core.central_dp import CentralDpConfig
from fedlearn.core.rdp import epsilon_spent
from fedlearn.errors import ConfigError
from fedlearn.service.messages import CentralPrivacyStatus, RunState, TrainingStatus


class Built(Exception):
    """Raised by the stand-in ``build_coordinator`` to stop after the settings are built."""


def _coordinator(monkeypatch, capsys, *args):
    seen = []

    def build(settings):
        seen.append(settings)
        raise Built

    monkeypatch.setattr(fedlearn.bootstrap, "build_coordinator", build)
    argv = ["fedlearn", "coordinator", "--log-level", "warning", *map(str, args)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises((SystemExit, Built)) as exited:
        main()
    code = exited.value.code if isinstance(exited.value, SystemExit) else None
    return code, capsys.readouterr().err, (seen[0].run.central_dp if seen else None)


def _config(**given):
    args = {
        "clip": 1.0,
        "noise": None,
        "epsilon": None,
        "delta": 1e-5,
        "rounds": 10,
        "min_clients": 2,
        "clients_per_round": None,
        "fraction": None,
        "expected_clients": None,
    }
    args.update(given)
    return central_dp_config(**args)


def test_coordinator_flags_build_the_central_dp_config(monkeypatch, capsys):
    args = ("--central-dp-clip", 0.5, "--central-dp-noise", 1.2, "--central-dp-epsilon", 8)
    code, _, central = _coordinator(monkeypatch, capsys, *args, "--central-dp-delta", 1e-6)

    assert code is None
    assert central == CentralDpConfig(
        clip_norm=0.5, noise_multiplier=1.2, delta=1e-6, target_epsilon=8.0
    )


def test_coordinator_without_central_dp_flags_has_it_off(monkeypatch, capsys):
    assert _coordinator(monkeypatch, capsys)[2] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--central-dp-noise", 1.0), "needs --central-dp-clip"),
        (("--central-dp-clip", 1.0), "--central-dp-noise, --central-dp-epsilon, or both"),
        (("--central-dp-clip", -1.0, "--central-dp-noise", 1.0), "clip norm must be > 0"),
        (("--central-dp-clip", 1.0, "--central-dp-noise", 0.0), "noise multiplier must be > 0"),
        (("--central-dp-clip", 1, "--central-dp-epsilon", 2, "--central-dp-delta", 2), "delta"),
        (("--central-dp-clip", 1, "--central-dp-epsilon", -2), "epsilon must be > 0"),
    ],
)
def test_bad_central_dp_flags_are_a_clear_error(monkeypatch, capsys, args, message):
    code, err, _ = _coordinator(monkeypatch, capsys, *args)

    assert code == 2
    assert "error:" in err and message in err
    assert "Traceback" not in err


def test_a_target_alone_derives_the_noise_for_the_planned_sample_rate():
    every_round = _config(epsilon=4.0)
    half = _config(epsilon=4.0, clients_per_round=5, expected_clients=10)

    assert every_round.target_epsilon == half.target_epsilon == 4.0
    assert half.noise_multiplier < every_round.noise_multiplier
    for config, q in ((every_round, 1.0), (half, 0.5)):
        assert epsilon_spent([(config.noise_multiplier, q, 10)], delta=1e-5) <= 4.0


def test_min_clients_raises_the_planned_sample_rate():
    raised = _config(epsilon=4.0, clients_per_round=2, min_clients=5, expected_clients=10)
    assert raised == _config(epsilon=4.0, clients_per_round=5, expected_clients=10)


def test_expected_clients_must_be_positive():
    with pytest.raises(ConfigError, match="expected-clients"):
        _config(epsilon=4.0, expected_clients=0)


def test_status_shows_central_epsilon_spent_over_the_target():
    central = CentralPrivacyStatus(1.23456, 2.0, 1e-5, 1.1, 0.5, 4, exhausted=True)
    report = TrainingStatus(
        "r", "cnn", RunState.FINISHED, 10, 4, 4, 0, 0, (), (), central_privacy=central
    )  # fmt: skip
    console = Console(record=True, width=200)
    render_status(report, console)
    text = console.export_text()

    assert "central DP (user-level): epsilon spent 1.2346 / 2 at delta 1e-05" in text
    assert "over 4 noised rounds" in text and "target reached" in text


def test_fedlearn_run_forwards_central_dp_flags_the_coordinator_accepts(monkeypatch, capsys):
    from fedlearn.cli.run_cmd import _central_dp_args

    off = _central_dp_args(clip=None, noise=None, epsilon=None, delta=1e-5, rounds=5, clients=3)
    assert off == []
    args = _central_dp_args(clip=0.5, noise=1.3, epsilon=6.0, delta=1e-6, rounds=5, clients=3)
    _, _, central = _coordinator(monkeypatch, capsys, *args)

    assert central == CentralDpConfig(
        clip_norm=0.5, noise_multiplier=1.3, delta=1e-6, target_epsilon=6.0
    )
    with pytest.raises(ConfigError, match="needs --central-dp-clip"):
        _central_dp_args(clip=None, noise=None, epsilon=2.0, delta=1e-5, rounds=5, clients=3)
