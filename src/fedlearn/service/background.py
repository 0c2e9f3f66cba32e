"""Work that no client waits for runs at the machine's lowest CPU priority.

A coordinator scores each round's new global model on its test set while the clients
already train the next round. On a machine the clients share (``fedlearn run``: their
processes run at niceness 10), an evaluation at the coordinator's own priority took
the cores from them as soon as it started; at niceness 19 it takes what they leave
idle (the end of a round, while the last updates come in) and still progresses,
slowly, when they leave nothing.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["BACKGROUND_NICENESS", "background_thread"]

logger = logging.getLogger(__name__)

BACKGROUND_NICENESS = 19


def background_thread(name: str) -> ThreadPoolExecutor:
    """One worker thread, at the lowest CPU priority, that runs what is submitted in order."""
    return ThreadPoolExecutor(
        max_workers=1, thread_name_prefix=name, initializer=_lower_this_threads_priority
    )


def _lower_this_threads_priority() -> None:
    """Give the calling thread (not its process) the lowest priority, where the OS can.

    Linux sets niceness per thread; where that is not so (or not allowed), the thread
    keeps its priority and this logs why.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)
    except (AttributeError, OSError) as exc:
        logger.debug("background work keeps its CPU priority: %s", exc)
