"""Ctrl-C on ``fedlearn run`` stops the whole local federation, children included."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cli_harness import Started, Transcript, start

CLIENT_LOGS = ("client-00.log", "client-01.log", "client-02.log")


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/PID/stat`` after the command name: state, ppid, ... (None once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rpartition(")")[2].split()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _children(pid: int) -> list[int]:
    return [p for p in _pids() if (fields := _stat_fields(p)) and fields[1] == str(pid)]


def _alive(pid: int) -> bool:
    """Running (not a zombie) and still a fedlearn process (not a reused pid)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z" and "-m fedlearn" in _cmdline(pid)


def _fedlearn_processes_naming(path: Path) -> list[int]:
    return [
        p
        for p in _pids()
        if p != os.getpid() and "-m fedlearn" in (c := _cmdline(p)) and str(path) in c and _alive(p)
    ]


def _wait_until_clients_train(out: Path, run: Started, *, timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    logs = [out / "logs" / name for name in CLIENT_LOGS]
    while time.monotonic() < end:
        if all(log.exists() and "registered as" in log.read_text() for log in logs):
            return
        if run.process.poll() is not None:
            pytest.fail(f"fedlearn run exited with {run.process.returncode} before the clients")
        time.sleep(0.1)
    pytest.fail(f"the clients did not register within {timeout_s:.0f} s")


def _take_ctrl_c() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_ctrl_c_stops_run_and_every_child_process(
    background: list[Started],
    transcript: Transcript,
    tmp_path: Path,
    cli_env: dict[str, str],
) -> None:
    out = tmp_path / "out"
    transcript.log_dirs.append(out / "logs")
    run = start(
        background, tmp_path, cli_env,
        "run", "--clients", 3, "--rounds", 50, "--model", "mlp", "--out", out,
        "--cache-dir", out / "cache",  # so that every child's command line names `out`
        start_new_session=True,  # its own process group, as a shell's foreground job
        # a foreground job takes Ctrl-C even where this test runs as a background job
        # (whose shell set SIGINT to ignored, which every child would inherit)
        preexec_fn=_take_ctrl_c,
    )  # fmt: skip
    children: list[int] = []
    try:
        _wait_until_clients_train(out, run, timeout_s=120)
        children = _children(run.process.pid)
        commands = sorted(_cmdline(p).split(" -m fedlearn ")[1].split()[0] for p in children)
        assert commands == ["client", "client", "client", "coordinator"], children
        assert sorted(_fedlearn_processes_naming(out)) == sorted([run.process.pid, *children])

        os.killpg(run.process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        try:
            done = run.finish(timeout_s=20)
        except subprocess.TimeoutExpired:
            pytest.fail("fedlearn run was still running 20 s after Ctrl-C")
        transcript.add("fedlearn run", f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}")

        assert done.returncode == 130
        assert "interrupted" in done.stdout + done.stderr
        assert "Traceback" not in done.stdout + done.stderr
        assert [p for p in children if _alive(p)] == []
        assert _fedlearn_processes_naming(out) == []
    finally:
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
