"""Training slots: at most N holders at once, across threads and processes."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from slot_testing import most_at_once

from fedlearn.client.slots import TrainingSlots
from fedlearn.errors import ConfigError


def test_no_more_than_count_hold_a_slot_at_once(tmp_path):
    most, used = most_at_once(lambda k: TrainingSlots(tmp_path, 2, queue=k).hold())

    assert most == 2
    assert len(used) == 8 and set(used) == {0, 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slot-0.lock", "slot-1.lock"]


def test_a_client_waits_on_its_own_slot_in_the_kernel_without_polling(tmp_path, monkeypatch):
    import fedlearn.client.slots as slots_module

    held: dict[int, threading.Event] = {}
    taken = threading.Semaphore(0)

    def hold():
        with TrainingSlots(tmp_path, 2).hold() as slot:
            held[slot] = threading.Event()
            taken.release()
            held[slot].wait(10)

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for holder in holders:
        holder.start()
        assert taken.acquire(timeout=5)
    assert sorted(held) == [0, 1]

    opened = []
    real_open = os.open

    def counting_open(path, *args):
        opened.append(os.path.basename(path))
        return real_open(path, *args)

    monkeypatch.setattr(slots_module.os, "open", counting_open)
    got = []
    waiter = threading.Thread(target=lambda: got.append(_take(tmp_path, queue=3)))
    waiter.start()
    time.sleep(0.3)
    held[0].set()  # slot 0 is free now, but the waiter queues on slot 3 % 2 = 1
    time.sleep(0.2)
    assert not got
    held[1].set()
    waiter.join(10)
    for holder in holders:
        holder.join(10)
    assert got == [1]
    assert sorted(opened) == ["slot-0.lock", "slot-1.lock", "slot-1.lock"]  # no polling


def _take(folder, *, queue):
    with TrainingSlots(folder, 2, queue=queue).hold() as slot:
        return slot


def test_a_slot_is_released_when_the_block_raises(tmp_path):
    slots = TrainingSlots(tmp_path, 1)
    with pytest.raises(RuntimeError), slots.hold():
        raise RuntimeError("training failed")
    with slots.hold() as slot:  # would wait forever if the slot were still held
        assert slot == 0


_HOLDER = """
import sys, time
from pathlib import Path
from fedlearn.client.slots import TrainingSlots
with TrainingSlots(Path(sys.argv[1]), 1).hold():
    print("holding", flush=True)
    time.sleep(60)
"""


def test_another_process_waits_and_a_killed_holder_frees_its_slot(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        got = threading.Event()

        def wait_for_it():
            with TrainingSlots(tmp_path, 1).hold():
                got.set()

        waiter = threading.Thread(target=wait_for_it, daemon=True)
        waiter.start()
        assert not got.wait(0.5)  # the other process holds the only slot
        os.kill(holder.pid, signal.SIGKILL)
        assert got.wait(10)  # the kernel dropped the dead holder's lock
    finally:
        holder.kill()
        holder.wait()


def test_slots_must_be_at_least_one(tmp_path):
    with pytest.raises(ConfigError, match="at least 1"):
        TrainingSlots(tmp_path, 0)


def test_a_client_built_with_a_slot_folder_trains_inside_one_of_its_slots(tmp_path):
    from fedlearn.bootstrap import ClientSettings, DataSettings, build_client

    data = DataSettings(cache_dir=tmp_path / "cache", allow_download=False)  # bundled digits
    settings = ClientSettings(
        data=data, partition=0, num_partitions=50, slot_dir=tmp_path / "slots", slot_count=1
    )
    slot = build_client(settings)._options.compute_slot
    with TrainingSlots(tmp_path / "slots", 1).hold():  # another client holds the only slot
        got = threading.Event()
        waiter = threading.Thread(target=lambda: _enter(slot, got), daemon=True)
        waiter.start()
        assert not got.wait(0.3)
    assert got.wait(5)


def _enter(slot, got):
    with slot():
        got.set()
