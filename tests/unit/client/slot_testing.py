"""Shared checks of the two kinds of training slots (files and a server)."""

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager


def most_at_once(
    hold: Callable[[int], AbstractContextManager[int | None]], workers: int = 8
) -> tuple[int, list[int | None]]:
    """Let ``workers`` threads each hold a slot (``hold(k)``, its own connection or file
    description, so that threads contend as processes do) for 50 ms; return the most
    that held one at the same time and the slots they were given."""
    holding, most, lock = [0], [0], threading.Lock()
    used: list[int | None] = []

    def train(k: int) -> None:
        with hold(k) as slot:
            with lock:
                holding[0] += 1
                most[0] = max(most[0], holding[0])
                used.append(slot)
            time.sleep(0.05)
            with lock:
                holding[0] -= 1

    threads = [threading.Thread(target=train, args=(k,)) for k in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return most[0], used
