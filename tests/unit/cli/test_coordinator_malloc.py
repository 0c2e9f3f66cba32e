"""The coordinator's glibc settings: one heap, and freed payload- and batch-sized buffers stay mapped."""

import platform
import subprocess
import sys

import pytest

_FAULTS = """
import ctypes, resource, sys
import numpy as np
from fedlearn.cli import coordinator_cmd
if sys.argv[1] == "tuned":
    coordinator_cmd.tune_malloc()
else:  # what tune_malloc set before: arenas and mmap threshold only
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(coordinator_cmd._M_ARENA_MAX, 2)
    libc.mallopt(coordinator_cmd._M_MMAP_THRESHOLD, coordinator_cmd._MMAP_THRESHOLD_BYTES)
def batches():
    for _ in range(20):
        activations = np.ones(2_000_000, np.float32)  # 8 MB, under the mmap threshold
        scores = activations * 2
        del activations, scores
batches()  # the first pass faults its pages in either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
batches()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _count(script: str, arg: str) -> int:
    """The number ``script`` prints (page faults, heaps), run in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", script, arg], capture_output=True, text=True, check=True
    )
    return int(out.stdout)


glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")


@glibc_only
def test_the_coordinator_heap_keeps_freed_buffers_for_the_next_one():
    untrimmed, tuned = _count(_FAULTS, "mmap-only"), _count(_FAULTS, "tuned")
    assert untrimmed > 10_000  # the freed 8 MB buffers faulted in again, page by page
    assert tuned < untrimmed / 20


_EVAL_FAULTS = """
import resource, sys
import numpy as np
import torch
from fedlearn.cli.coordinator_cmd import tune_malloc
from fedlearn.models.evaluate import TorchEvaluator
from fedlearn.models.registry import build_model
tune_malloc()
torch.set_num_threads(1)
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (1000, 28, 28), dtype=np.uint8)
labels = rng.integers(0, 10, 1000)
kwargs = {} if sys.argv[1] == "default" else {"batch_size": int(sys.argv[1])}
evaluator = TorchEvaluator("cnn", images, labels, **kwargs)
weights = {k: v.numpy() for k, v in build_model("cnn", seed=1).state_dict().items()}
for _ in range(2):  # the first evaluations fault their buffers in
    evaluator.evaluate(weights)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    evaluator.evaluate(weights)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@glibc_only
def test_the_coordinators_evaluation_batches_reuse_their_buffers():
    mapped, default = _count(_EVAL_FAULTS, "256"), _count(_EVAL_FAULTS, "default")
    assert mapped > 30_000  # 25.7 MB activations: above the mmap threshold, mapped afresh
    assert default < mapped / 5


_HEAPS = """
import ctypes, sys, tempfile, threading
import numpy as np
from fedlearn.cli import coordinator_cmd
if sys.argv[1] == "tuned":
    coordinator_cmd.tune_malloc()
else:  # the two arenas tune_malloc allowed before
    ctypes.CDLL("libc.so.6").mallopt(coordinator_cmd._M_ARENA_MAX, 2)
    ctypes.CDLL("libc.so.6").mallopt(
        coordinator_cmd._M_MMAP_THRESHOLD, coordinator_cmd._MMAP_THRESHOLD_BYTES
    )
held, ready = [], threading.Barrier(4)
def work():
    ready.wait()  # all four threads allocate at once, as the gRPC workers do
    held.append(np.ones(300_000, np.float32))  # 1.2 MB payload-sized, from a heap
    ready.wait()
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
libc = ctypes.CDLL("libc.so.6")
libc.fopen.restype = ctypes.c_void_p
with tempfile.NamedTemporaryFile(suffix=".xml") as f:
    stream = ctypes.c_void_p(libc.fopen(f.name.encode(), b"w"))
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    print(open(f.name).read().count("<heap nr="))
"""


@glibc_only
def test_the_coordinators_threads_share_one_heap():
    """Holes a freed payload leaves are then reusable by every thread."""
    assert _count(_HEAPS, "two-arenas") == 2  # the check can tell the difference
    assert _count(_HEAPS, "tuned") == 1
