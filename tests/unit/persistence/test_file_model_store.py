"""What only ``FileModelStore`` can get wrong: files, folders, fsync, symlinks."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from fedlearn.errors import StorageError
from fedlearn.persistence import FileModelStore, model_store
from fedlearn.persistence.model_store import DIRECT_MIN_BYTES

KEY = "run-a/rounds/0001/global.flw"


def test_put_writes_the_file_under_root_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = FileModelStore(tmp_path)
    store.put(KEY, b"abc")
    store.put(KEY, b"def")
    assert (tmp_path / KEY).read_bytes() == b"def"
    assert sorted(p.name for p in (tmp_path / KEY).parent.iterdir()) == ["global.flw"]


def test_put_fsyncs_the_file_and_its_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    FileModelStore(tmp_path).put(KEY, b"abc")
    folder = str(tmp_path / "run-a" / "rounds" / "0001")
    assert any(".global.flw." in path for path in synced)  # the temporary file
    assert folder in synced  # the rename made durable
    assert str(tmp_path) in synced  # the new "run-a" folder made durable


def test_a_failed_write_keeps_the_old_blob_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileModelStore(tmp_path)
    store.put(KEY, b"old")

    def fail(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(StorageError, match="No space left"):
        store.put(KEY, b"new")
    assert store.get(KEY) == b"old"
    assert sorted(p.name for p in (tmp_path / KEY).parent.iterdir()) == ["global.flw"]


def test_a_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.flw").write_bytes(b"secret")
    root = tmp_path / "models"
    root.mkdir()
    (root / "link").symlink_to(outside)
    store = FileModelStore(root)
    with pytest.raises(StorageError, match="outside"):
        store.get("link/secret.flw")
    with pytest.raises(StorageError, match="outside"):
        store.put("link/new.flw", b"x")
    assert not (outside / "new.flw").exists()


def test_a_key_below_an_existing_blob_raises_storage_error(tmp_path: Path) -> None:
    store = FileModelStore(tmp_path)
    store.put("run-a", b"x")
    with pytest.raises(StorageError):
        store.put("run-a/global.flw", b"y")


def test_the_root_is_created_on_first_put(tmp_path: Path) -> None:
    store = FileModelStore(tmp_path / "not" / "yet")
    assert store.put("m.flw", b"x") == "m.flw"
    assert (tmp_path / "not" / "yet" / "m.flw").read_bytes() == b"x"


BIG = os.urandom(3 * 1024 * 1024 + 4096 + 17)  # above DIRECT_MIN_BYTES, not page-aligned


def _record_open_flags(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    flags: list[int] = []
    real_open = os.open

    def recording_open(path: object, flag: int, *args: object, **kwargs: object) -> int:
        flags.append(flag)
        return real_open(path, flag, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", recording_open)
    return flags


def _einval(*_args: object, **_kwargs: object) -> int:
    raise OSError(errno.EINVAL, "Invalid argument")


def test_a_large_blob_is_written_with_o_direct_and_reads_back_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flags = _record_open_flags(monkeypatch)
    store = FileModelStore(tmp_path)
    store.put(KEY, BIG)
    assert store.get(KEY) == BIG
    assert sorted(p.name for p in (tmp_path / KEY).parent.iterdir()) == ["global.flw"]
    if store._direct:  # this file system took O_DIRECT
        assert sum(bool(f & os.O_DIRECT) for f in flags) == 1


def test_a_small_blob_goes_through_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flags = _record_open_flags(monkeypatch)
    store = FileModelStore(tmp_path)
    store.put(KEY, BIG[: DIRECT_MIN_BYTES - 1])
    assert store.get(KEY) == BIG[: DIRECT_MIN_BYTES - 1]
    assert not any(f & os.O_DIRECT for f in flags)


def test_a_file_system_without_o_direct_gets_buffered_writes_from_then_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open
    direct_opens: list[int] = []

    def no_direct(path: object, flag: int, *args: object, **kwargs: object) -> int:
        if flag & os.O_DIRECT:
            direct_opens.append(flag)
            return _einval()
        return real_open(path, flag, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", no_direct)
    store = FileModelStore(tmp_path)
    store.put(KEY, BIG)
    store.put("run-a/other.flw", BIG[::-1])
    assert store.get(KEY) == BIG
    assert store.get("run-a/other.flw") == BIG[::-1]
    assert len(direct_opens) == 1  # asked once, then remembered


def test_a_direct_write_refused_midway_is_redone_through_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = model_store._AlignedBuffers()
    small.SIZE = 1 << 20  # type: ignore[misc]  # so that BIG takes several direct writes
    monkeypatch.setattr(model_store, "_BUFFERS", small)
    real_write = os.write
    calls = {"n": 0}

    def second_write_fails(fd: int, data: memoryview) -> int:
        calls["n"] += 1
        if calls["n"] == 2:  # the first 1 MiB went out with O_DIRECT, the next is refused
            return _einval()
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", second_write_fails)
    store = FileModelStore(tmp_path)
    if not store._direct:
        pytest.skip("no O_DIRECT on this platform")
    store.put(KEY, BIG)
    assert store.get(KEY) == BIG
    assert (tmp_path / KEY).stat().st_size == len(BIG)
    assert not store._direct


def test_a_failed_direct_write_keeps_the_old_blob_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileModelStore(tmp_path)
    store.put(KEY, b"old")

    def no_space(*_args: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", no_space)
    with pytest.raises(StorageError, match="No space left"):
        store.put(KEY, BIG)
    assert store.get(KEY) == b"old"
    assert sorted(p.name for p in (tmp_path / KEY).parent.iterdir()) == ["global.flw"]


def test_more_concurrent_large_writes_than_kept_buffers_all_land_whole(tmp_path: Path) -> None:
    store = FileModelStore(tmp_path)
    blobs = {
        f"run-a/updates/u{i}.flw": bytes([i]) * (DIRECT_MIN_BYTES + 4096 * i + i) for i in range(10)
    }
    barrier = threading.Barrier(len(blobs))
    errors: list[BaseException] = []

    def put(key: str, data: bytes) -> None:
        barrier.wait()
        try:
            store.put(key, data)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=put, args=item) for item in blobs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert all(store.get(key) == data for key, data in blobs.items())
    assert len(model_store._BUFFERS._free) <= model_store._BUFFERS._keep
