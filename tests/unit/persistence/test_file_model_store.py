"""What only ``FileModelStore`` can get wrong: files, folders, fsync, symlinks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fedlearn.errors import StorageError
from fedlearn.persistence import FileModelStore

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
