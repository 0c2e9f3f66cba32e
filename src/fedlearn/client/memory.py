"""A client's memory: the heap kept or released between rounds, and out-of-memory during
local training (free what can be freed, halve the batch, retry)."""

from __future__ import annotations

import ctypes
import functools
import gc
import logging
from collections.abc import Callable
from typing import TypeVar

import torch

__all__ = [
    "free_memory",
    "is_out_of_memory",
    "keep_freed_heap",
    "return_free_heap",
    "train_with_smaller_batches",
]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
KEPT_HEAP_BYTES = 256 << 20
"""Buffers up to this size come from glibc's heap, and up to 4x this stays mapped."""

logger = logging.getLogger(__name__)
T = TypeVar("T")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for ``torch.cuda.OutOfMemoryError`` and a ``RuntimeError`` saying
    "out of memory" (CPU allocators and other backends raise those)."""
    cuda_oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if cuda_oom is not None and isinstance(exc, cuda_oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_memory() -> None:
    """Collect garbage and hand cached accelerator memory back."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def keep_freed_heap(limit_bytes: int = KEPT_HEAP_BYTES) -> bool:
    """Make glibc reuse freed model-sized buffers instead of handing them back.

    By default glibc maps large buffers afresh and unmaps them on free, and trims the top
    of the heap, so every round faults in its downloaded model, update and gradients page
    by page again; on a machine running many clients that kernel work cost about a third
    of the CPU. Called once at process start (``fedlearn client``); False where there is
    no glibc. The price is that a client keeps its peak heap between rounds.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(
        mallopt(_M_MMAP_THRESHOLD, limit_bytes) and mallopt(_M_TRIM_THRESHOLD, 4 * limit_bytes)
    )


def return_free_heap() -> bool:
    """Hand the free pages of the C heap back to the system (glibc's ``malloc_trim``).

    A round allocates and frees model-sized buffers (the downloaded model, the update,
    its payload) and the training's activations and gradients; glibc keeps most of that
    memory mapped for reuse, so a client's resident memory would carry the largest of
    them into its idle wait and the next round. False where there is no glibc.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def train_with_smaller_batches(
    attempt: Callable[[int], T], *, batch_size: int, min_batch_size: int, round_number: int
) -> T | None:
    """``attempt(batch_size)``, halving the batch after each out-of-memory error.

    ``attempt`` must start the round's training afresh each time. Returns ``None`` once
    the next halving would go below ``min_batch_size``; other errors propagate.
    """
    size = batch_size
    while True:
        failure = ""
        try:
            return attempt(size)
        except RuntimeError as exc:
            if not is_out_of_memory(exc):
                raise
            failure = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        # Outside the except block: the traceback no longer pins the failed step's tensors.
        free_memory()
        if size // 2 < max(1, min_batch_size):
            logger.error(
                "round %d skipped: out of memory at batch size %d, the smallest allowed is %d (%s)",
                round_number,
                size,
                min_batch_size,
                failure,
            )
            return None
        logger.warning(
            "round %d: out of memory at batch size %d, retrying with %d (%s)",
            round_number,
            size,
            size // 2,
            failure,
        )
        size //= 2
