"""The ``ModelStore`` contract, run against ``FileModelStore`` and ``InMemoryModelStore``.

Documented choice both share: a key that could leave the store (absolute,
``..``, backslash, empty) raises ``StorageError``.
"""

from __future__ import annotations

import os
import threading

import pytest

from fedlearn.errors import NotFoundError, StorageError
from fedlearn.service.ports import ModelStore

KEY = "run-a/rounds/0003/global.flw"


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", b"weights", os.urandom(7 * 1024 * 1024), os.urandom(3 * 1024 * 1024 + 123)],
    ids=["empty", "nul", "short", "7MiB", "3MiB+123"],
)
def test_put_then_get_returns_the_same_bytes(model_store: ModelStore, data: bytes) -> None:
    path = model_store.put(KEY, data)
    assert model_store.get(path) == data


def test_put_returns_the_key_as_a_relative_path(model_store: ModelStore) -> None:
    assert model_store.put(KEY, b"x") == KEY
    assert model_store.put("run-a/./rounds//0004/global.flw", b"y") == (
        "run-a/rounds/0004/global.flw"
    )
    assert model_store.get("run-a/rounds/0004/global.flw") == b"y"


def test_put_accepts_a_bytearray(model_store: ModelStore) -> None:
    data = bytearray(b"abc")
    path = model_store.put(KEY, data)  # type: ignore[arg-type]
    data[0] = ord("z")
    assert model_store.get(path) == b"abc"


def test_put_overwrites_an_existing_blob(model_store: ModelStore) -> None:
    model_store.put(KEY, b"old contents, longer than the new")
    model_store.put(KEY, b"new")
    assert model_store.get(KEY) == b"new"


def test_keys_are_independent(model_store: ModelStore) -> None:
    model_store.put("a/one.flw", b"1")
    model_store.put("a/two.flw", b"2")
    model_store.delete("a/one.flw")
    assert model_store.get("a/two.flw") == b"2"


def test_delete_removes_the_blob(model_store: ModelStore) -> None:
    path = model_store.put(KEY, b"x")
    model_store.delete(path)
    with pytest.raises(NotFoundError):
        model_store.get(path)


def test_delete_of_an_absent_blob_is_ignored(model_store: ModelStore) -> None:
    model_store.delete("never/stored.flw")
    model_store.put(KEY, b"x")
    model_store.delete(KEY)
    model_store.delete(KEY)


@pytest.mark.parametrize("path", ["missing.flw", "run-a/rounds/0003/global.flw", "run-a"])
def test_get_of_a_missing_blob_raises_not_found(model_store: ModelStore, path: str) -> None:
    model_store.put("run-a/rounds/0001/global.flw", b"x")
    with pytest.raises(NotFoundError):
        model_store.get(path)


ESCAPING_KEYS = ["", ".", "../x.flw", "a/../../x.flw", "a/..", "/etc/passwd", "a\\..\\x", "a\x00b"]


@pytest.mark.parametrize("key", ESCAPING_KEYS)
def test_keys_that_could_leave_the_store_are_refused(model_store: ModelStore, key: str) -> None:
    with pytest.raises(StorageError):
        model_store.put(key, b"x")
    with pytest.raises(StorageError):
        model_store.get(key)
    with pytest.raises(StorageError):
        model_store.delete(key)


def test_concurrent_overwrites_leave_one_whole_blob(model_store: ModelStore) -> None:
    blobs = [bytes([i]) * 200_000 for i in range(8)]
    threads = [threading.Thread(target=model_store.put, args=(KEY, b)) for b in blobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert model_store.get(KEY) in blobs
