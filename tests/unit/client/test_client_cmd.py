"""``fedlearn client`` turns data problems into an ``error:`` line and a non-zero exit."""

import sys

import pytest

import fedlearn.bootstrap
from fedlearn.cli.main import main
from fedlearn.client.recovery import Recovery
from fedlearn.errors import DataError


class BadDataRuntime:
    def __init__(self):
        self.recovery = None

    def with_recovery(self, recovery):
        self.recovery = recovery
        return self

    def run(self):
        raise DataError("training data: 3 labels outside [0, 10) (first: 12 at index 4)")


def _client(monkeypatch, capsys, *args):
    runtime = BadDataRuntime()
    monkeypatch.setattr(fedlearn.bootstrap, "build_client", lambda settings: runtime)
    monkeypatch.setattr(sys, "argv", ["fedlearn", "client", "--log-level", "warning", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    return exited.value.code, capsys.readouterr().err, runtime.recovery


def test_client_with_bad_data_prints_the_problem_and_exits_non_zero(monkeypatch, capsys, tmp_path):
    code, err, _ = _client(monkeypatch, capsys, "--state-dir", tmp_path / "s")

    assert code == 2
    assert "error:" in err and "3 labels outside [0, 10)" in err
    assert "Traceback" not in err


def test_client_keeps_its_state_under_the_cache_dir_by_client_id(monkeypatch, capsys, tmp_path):
    args = ("--client-id", "c7", "--cache-dir", tmp_path, "--min-batch-size", 8)
    _, _, recovery = _client(monkeypatch, capsys, *map(str, args))

    assert isinstance(recovery, Recovery) and recovery.min_batch_size == 8
    assert recovery.state.directory == tmp_path / "client-state" / "c7"
    assert (tmp_path / "client-state" / "c7" / "outbox").is_dir()


def test_client_without_an_id_or_state_dir_keeps_no_state(monkeypatch, capsys, tmp_path):
    _, _, recovery = _client(monkeypatch, capsys, "--cache-dir", str(tmp_path))

    assert recovery.state is None
    assert not (tmp_path / "client-state").exists()
