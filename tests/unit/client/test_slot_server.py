"""Training slots served by one process: at most N holders, first come first served,
across threads and processes, and a dead holder's slot comes back."""

import logging
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from slot_testing import most_at_once

from fedlearn.client.slot_server import ServedSlots, SlotServer
from fedlearn.errors import ConfigError


@pytest.fixture
def server():
    with SlotServer(2) as running:
        yield running


def _holder(path, turns: list, release: threading.Event, name: str) -> threading.Thread:
    def hold():
        with ServedSlots(path).hold() as slot:
            turns.append((name, slot))
            release.wait(10)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    return thread


def _wait_until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_no_more_than_count_hold_a_slot_at_once(server):
    most, used = most_at_once(lambda k: ServedSlots(server.path).hold())

    assert most == 2
    assert len(used) == 8 and set(used) == {0, 1}


def test_waiting_clients_get_the_next_free_slot_in_the_order_they_came(server):
    turns: list = []
    releases = {name: threading.Event() for name in "abcde"}
    threads = {}
    for name in "abcde":  # a and b hold both slots; c, d and e queue in this order
        threads[name] = _holder(server.path, turns, releases[name], name)
        _wait_until(lambda: len(server._waiting) + len(server._holders) == len(threads))
    assert turns == [("a", 0), ("b", 1)]

    releases["b"].set()  # whichever slot frees goes to the head of the queue
    _wait_until(lambda: len(turns) == 3)
    releases["a"].set()
    _wait_until(lambda: len(turns) == 4)
    assert turns[2:] == [("c", 1), ("d", 0)]
    for release in releases.values():
        release.set()
    for thread in threads.values():
        thread.join(10)
    assert [name for name, _ in turns] == list("abcde")


def test_a_slot_is_released_when_the_block_raises(server):
    slots = ServedSlots(server.path)
    for _ in range(3):  # three times through two slots: each raise gave its slot back
        with pytest.raises(RuntimeError), slots.hold():
            raise RuntimeError("training failed")
    _wait_until(lambda: not server._holders)
    with slots.hold() as first, slots.hold() as second:
        assert {first, second} == {0, 1}


def test_a_client_that_gives_up_waiting_takes_no_slot(server):
    holders = [socket.socket(socket.AF_UNIX) for _ in range(2)]
    for conn in holders:
        conn.connect(str(server.path))
        assert conn.recv(16).endswith(b"\n")
    quitter = socket.socket(socket.AF_UNIX)
    quitter.connect(str(server.path))
    _wait_until(lambda: len(server._waiting) == 1)
    quitter.close()  # e.g. a client stopped while it waited
    _wait_until(lambda: not server._waiting)

    holders[0].close()
    with ServedSlots(server.path).hold() as slot:  # the freed slot is not lost to the quitter
        assert slot in (0, 1)
    holders[1].close()


_HOLDER = """
import sys, time
from pathlib import Path
from fedlearn.client.slot_server import ServedSlots
with ServedSlots(Path(sys.argv[1])).hold() as slot:
    print("holding", slot, flush=True)
    time.sleep(60)
"""


def test_another_process_waits_and_a_killed_holder_frees_its_slot():
    with SlotServer(1) as server:
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(server.path)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "holding 0"
            got = threading.Event()
            waiter = _holder(server.path, [], got, "waiter")
            time.sleep(0.3)
            assert len(server._waiting) == 1  # the other process holds the only slot
            holder.send_signal(signal.SIGKILL)
            _wait_until(lambda: not server._waiting)  # the kernel closed its connection
            got.set()
            waiter.join(10)
        finally:
            holder.kill()
            holder.wait()


def test_waiting_clients_train_without_a_slot_once_the_server_stops(caplog):
    server = SlotServer(1).start()
    release = threading.Event()
    first = _holder(server.path, [], release, "first")
    _wait_until(lambda: len(server._holders) == 1)
    turns: list = []
    second = _holder(server.path, turns, threading.Event(), "second")
    _wait_until(lambda: len(server._waiting) == 1)
    with caplog.at_level(logging.WARNING, logger="fedlearn.client.slot_server"):
        server.close()
        _wait_until(lambda: turns == [("second", None)])
    assert "training without a slot" in caplog.text
    assert not server.path.parent.exists()
    release.set()
    first.join(10)
    second.join(10)


def test_a_client_needs_a_servers_socket(tmp_path):
    with pytest.raises(ConfigError, match="no training-slot server"):
        ServedSlots(tmp_path / "missing.sock")
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="not a training-slot server"):
        ServedSlots(tmp_path / "file")


def test_slots_must_be_at_least_one():
    with pytest.raises(ConfigError, match="at least 1"):
        SlotServer(0)


def test_the_socket_path_is_short_whatever_the_run_folder(server):
    assert len(str(server.path).encode()) < 100  # sockaddr_un holds 108 bytes


def test_a_client_built_with_a_slot_server_trains_inside_one_of_its_slots(tmp_path):
    from fedlearn.bootstrap import ClientSettings, DataSettings, build_client

    data = DataSettings(cache_dir=tmp_path / "cache", allow_download=False)  # bundled digits
    with SlotServer(1) as server:
        settings = ClientSettings(
            data=data, partition=0, num_partitions=50, slot_server=server.path
        )
        slot = build_client(settings)._options.compute_slot
        with ServedSlots(server.path).hold():  # another client holds the only slot
            got = threading.Event()
            waiter = threading.Thread(target=lambda: _enter(slot, got), daemon=True)
            waiter.start()
            assert not got.wait(0.3)
        assert got.wait(5)
        waiter.join(5)


def _enter(slot, got):
    with slot():
        got.set()


def test_a_slot_server_and_a_slot_folder_are_one_too_many(tmp_path):
    from fedlearn.bootstrap import ClientSettings, DataSettings, build_client

    data = DataSettings(cache_dir=tmp_path / "cache", allow_download=False)
    with SlotServer(1) as server:
        settings = ClientSettings(
            data=data, slot_server=server.path, slot_dir=tmp_path / "slots", slot_count=1
        )
        with pytest.raises(ConfigError, match="not both"):
            build_client(settings)
