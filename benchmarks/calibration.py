"""How fast this machine trains the CNN, so that figures from different machines can be read.

The development machine is a shared VM whose CPU changes between sessions: on one it
trained the CNN about three times as fast as on another (AVX-512 against AVX2 only).
Every benchmark's JSON therefore records, besides the CPU model, the widest SIMD
extension the CPU reports and one measured figure: the CPU seconds of one local epoch
of fedlearn's ``LocalTrainer`` on 400 images with the CNN (batch 32, one torch thread),
the work of one client in a 10-client MNIST round. Round times in the benchmarks are
mostly multiples of it.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np
import torch

from fedlearn.client.trainer import LocalTrainer
from fedlearn.core.types import RoundConfig

__all__ = ["CALIBRATION_IMAGES", "cnn_epoch_cpu_seconds", "simd_extension"]

CALIBRATION_IMAGES = 400
_SIMD = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2"))


def simd_extension(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The widest x86 vector extension in the CPU's flags (``None`` where unknown)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return next((name for flag, name in _SIMD if flag in flags), None)


@functools.cache
def cnn_epoch_cpu_seconds(repeats: int = 3) -> float:
    """The best of ``repeats`` measurements of one CNN epoch's CPU time (see the module),
    measured once per process: it is the machine's, not the run's."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(CALIBRATION_IMAGES, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=CALIBRATION_IMAGES)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = LocalTrainer("cnn", images, labels, seed=0)
        config = RoundConfig(local_epochs=1, batch_size=32, learning_rate=0.05)
        trainer.train(config, round_number=0)  # warm-up: first-call allocations
        best = float("inf")
        for round_number in range(1, repeats + 1):
            started = time.process_time()
            trainer.train(config, round_number=round_number)
            best = min(best, time.process_time() - started)
    finally:
        torch.set_num_threads(threads)
    return round(best, 3)
