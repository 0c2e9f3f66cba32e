"""Child processes of ``fedlearn run``: started together, stopped together."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from fedlearn.errors import FedLearnError

__all__ = ["ProcessGroup", "fedlearn_command", "usable_cores"]


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def fedlearn_command(*args: object) -> list[str]:
    """The command line that runs ``fedlearn ARGS`` with this interpreter."""
    return [sys.executable, "-m", "fedlearn", *(str(a) for a in args)]


@dataclass
class _Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]
    command: list[str]


class ProcessGroup:
    """Starts named children with their output in ``logs/NAME.log``; ends them all."""

    def __init__(self, log_dir: Path, *, env: dict[str, str] | None = None) -> None:
        self._log_dir = log_dir
        self._env = env
        self._children: list[_Child] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, command: list[str], *, niceness: int = 0) -> None:
        """Start ``command`` as child ``name``; ``niceness`` > 0 lowers its CPU priority
        (through ``nice``, which runs the command in its own process, where it exists)."""
        log_path = self._log_dir / f"{name}.log"
        nice = shutil.which("nice") if niceness else None
        if nice is not None:
            command = [nice, "-n", str(niceness), *command]
        self._children.append(self._spawn(name, command, log_path.open("wb"), log_path))

    def _spawn(self, name: str, command: list[str], log: IO[bytes], log_path: Path) -> _Child:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self._env,
            start_new_session=True,  # Ctrl-C reaches only us; we stop the children
        )
        return _Child(name, process, log_path, log, list(command))

    def _child(self, name: str) -> _Child:
        for child in reversed(self._children):
            if child.name == name:
                return child
        raise KeyError(f"no child named {name!r}")

    def pid(self, name: str) -> int:
        """The process id of child ``name`` (its latest start)."""
        return self._child(name).process.pid

    def send_signal(self, name: str, sig: int) -> None:
        """Send ``sig`` to child ``name`` and its process group, if it still runs."""
        child = self._child(name)
        if child.process.poll() is None:
            _signal(child.process, sig)

    def restart(self, name: str, *, grace_s: float = 5.0) -> None:
        """Stop child ``name`` if it runs, then start its command again; its log goes on."""
        child = self._child(name)
        _stop([child], grace_s=grace_s)
        child.log.write(f"\n--- restarted {name} ---\n".encode())
        child.log.flush()
        index = self._children.index(child)
        self._children[index] = self._spawn(name, child.command, child.log, child.log_path)

    def failed(self) -> list[str]:
        """Children that exited with an error, with where to read why."""
        return [
            f"{c.name} exited with code {c.process.returncode} (see {c.log_path})"
            for c in self._children
            if c.process.poll() not in (None, 0)
        ]

    def running(self, name: str) -> bool:
        return any(c.name == name and c.process.poll() is None for c in self._children)

    def wait(self, *, timeout_s: float) -> None:
        """Wait for every child to exit; raise if one failed or time ran out."""
        end = time.monotonic() + timeout_s
        for child in self._children:
            remaining = max(0.0, end - time.monotonic())
            try:
                child.process.wait(remaining)
            except subprocess.TimeoutExpired as exc:
                raise FedLearnError(
                    f"{child.name} still running after {timeout_s:.0f} s (see {child.log_path})"
                ) from exc
        problems = self.failed()
        if problems:
            raise FedLearnError("; ".join(problems))

    def stop(self, *, grace_s: float = 5.0) -> None:
        """SIGTERM every child still running, then SIGKILL what is left after ``grace_s``."""
        _stop(self._children, grace_s=grace_s)
        for child in self._children:
            child.log.close()


def _stop(children: list[_Child], *, grace_s: float) -> None:
    """SIGTERM the children still running (SIGCONT too, in case one was paused), then
    SIGKILL those left after ``grace_s``."""
    alive = [c for c in children if c.process.poll() is None]
    for child in alive:
        _signal(child.process, signal.SIGTERM)
        _signal(child.process, signal.SIGCONT)
    end = time.monotonic() + grace_s
    for child in alive:
        try:
            child.process.wait(max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal(child.process, signal.SIGKILL)
            child.process.wait()


def _signal(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
