"""Helpers for running the ``fedlearn`` command as a user types it, as real processes.

A module of its own (not ``conftest``), so that tests can import it whichever way pytest
was started: several test folders have a ``conftest`` module.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from fedlearn_testing import free_port, write_digits

__all__ = [
    "Finished",
    "Started",
    "Transcript",
    "fedlearn",
    "free_port",
    "start",
    "write_digits",
]

LOG_TAIL_CHARS = 6_000


@dataclass
class Transcript:
    """What the commands of one test printed, shown when the test fails."""

    entries: list[tuple[str, str]] = field(default_factory=list)
    log_dirs: list[Path] = field(default_factory=list)

    def add(self, title: str, text: str) -> None:
        self.entries.append((title, text[-LOG_TAIL_CHARS:]))

    def sections(self) -> list[tuple[str, str]]:
        out = list(self.entries)
        for folder in self.log_dirs:
            for log in sorted(folder.glob("*.log")) if folder.is_dir() else []:
                out.append((str(log), log.read_text(errors="replace")[-LOG_TAIL_CHARS:]))
        return out


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def fedlearn(
    *args: object, env: dict[str, str], timeout_s: float, transcript: Transcript | None = None
) -> Finished:
    """Run ``python -m fedlearn ARGS`` to the end (killed after ``timeout_s``)."""
    command = [sys.executable, "-m", "fedlearn", *(str(a) for a in args)]
    started = time.monotonic()
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=timeout_s, check=False
    )
    result = Finished(done.returncode, done.stdout, done.stderr, time.monotonic() - started)
    if transcript is not None:
        title = f"fedlearn {' '.join(map(str, args))} -> {done.returncode}"
        transcript.add(title, f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}")
    return result


@dataclass
class Started:
    """A ``fedlearn`` process running in the background, with its output in files."""

    args: tuple[object, ...]
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    started: float

    def finish(self, timeout_s: float) -> Finished:
        self.process.wait(timeout_s)
        return Finished(
            int(self.process.returncode),
            self.stdout.read_text(errors="replace"),
            self.stderr.read_text(errors="replace"),
            time.monotonic() - self.started,
        )


def start(
    into: list[Started], folder: Path, env: dict[str, str], *args: object, **popen: object
) -> Started:
    """Start ``python -m fedlearn ARGS`` with its output in ``folder``; add it to ``into``."""
    index = len(into)
    stdout, stderr = folder / f"cmd{index}.out", folder / f"cmd{index}.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "fedlearn", *(str(a) for a in args)],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
            **popen,  # type: ignore[call-overload]
        )
    run = Started(args, process, stdout, stderr, time.monotonic())
    into.append(run)
    return run
