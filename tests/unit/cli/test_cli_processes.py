"""``ProcessGroup``: one child can be signalled, paused and restarted by name; ``stop``
ends them all, paused ones included."""

from __future__ import annotations

import signal
import sys
import time

import pytest

from fedlearn.cli.processes import ProcessGroup

pytestmark = pytest.mark.timeout(60)

# Prints its pid, then a line per SIGUSR1, and exits 0 on SIGTERM.
CHILD = """
import os, signal, sys, time
signal.signal(signal.SIGUSR1, lambda *_: print("usr1", flush=True))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("pid", os.getpid(), flush=True)
while True:
    time.sleep(0.05)
"""


def _wait_for(predicate, timeout_s: float = 10.0) -> None:
    end = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


@pytest.fixture
def group(tmp_path):
    processes = ProcessGroup(tmp_path / "logs")
    yield processes
    processes.stop(grace_s=2)


def _log(tmp_path, name: str) -> str:
    return (tmp_path / "logs" / f"{name}.log").read_text()


def test_pid_and_send_signal_reach_the_named_child_only(group, tmp_path):
    group.start("a", [sys.executable, "-c", CHILD])
    group.start("b", [sys.executable, "-c", CHILD])
    _wait_for(lambda: "pid" in _log(tmp_path, "a") and "pid" in _log(tmp_path, "b"))

    assert f"pid {group.pid('a')}" in _log(tmp_path, "a")
    group.send_signal("a", signal.SIGUSR1)
    _wait_for(lambda: "usr1" in _log(tmp_path, "a"))

    time.sleep(0.2)
    assert "usr1" not in _log(tmp_path, "b")
    with pytest.raises(KeyError):
        group.pid("c")


def test_restart_starts_the_same_command_again_and_keeps_the_log(group, tmp_path):
    group.start("a", [sys.executable, "-c", CHILD])
    _wait_for(lambda: "pid" in _log(tmp_path, "a"))
    first = group.pid("a")

    group.restart("a", grace_s=5)
    _wait_for(lambda: _log(tmp_path, "a").count("pid") == 2)

    assert group.pid("a") != first
    assert group.running("a")
    log = _log(tmp_path, "a")
    assert f"pid {first}" in log and f"pid {group.pid('a')}" in log
    assert "--- restarted a ---" in log
    assert group.failed() == []  # the stopped first run exited 0 on SIGTERM


def test_a_killed_child_is_reported_and_can_be_restarted(group, tmp_path):
    group.start("a", [sys.executable, "-c", CHILD])
    _wait_for(lambda: "pid" in _log(tmp_path, "a"))

    group.send_signal("a", signal.SIGKILL)
    _wait_for(lambda: not group.running("a"))
    assert group.failed() == [f"a exited with code -9 (see {tmp_path / 'logs' / 'a.log'})"]
    group.send_signal("a", signal.SIGTERM)  # no longer running: nothing happens

    group.restart("a")
    assert group.running("a")
    assert group.failed() == []


def test_stop_ends_a_paused_child_without_waiting_for_sigkill(group, tmp_path):
    group.start("a", [sys.executable, "-c", CHILD])
    _wait_for(lambda: "pid" in _log(tmp_path, "a"))
    group.send_signal("a", signal.SIGSTOP)

    started = time.monotonic()
    group.stop(grace_s=20)

    assert time.monotonic() - started < 10
    assert not group.running("a")
    assert group.failed() == []  # it handled SIGTERM once continued


def test_a_child_started_with_a_niceness_runs_at_a_lower_priority(group, tmp_path):
    import os

    group.start("low", [sys.executable, "-c", CHILD], niceness=7)
    group.start("plain", [sys.executable, "-c", CHILD])
    log = tmp_path / "logs"
    _wait_for(lambda: "pid" in (log / "low.log").read_text())
    _wait_for(lambda: "pid" in (log / "plain.log").read_text())
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, group.pid("low")) == min(mine + 7, 19)
    assert os.getpriority(os.PRIO_PROCESS, group.pid("plain")) == mine
    # the pid printed is the command's own: nice runs it in its own process
    printed = int((log / "low.log").read_text().split()[1])
    assert printed == group.pid("low")
