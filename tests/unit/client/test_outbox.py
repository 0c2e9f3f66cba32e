import hashlib
import json
import logging
import os

import pytest

from fedlearn.client.files import write_atomic
from fedlearn.client.outbox import Outbox, OutboxEntry
from fedlearn.client.recovery import ClientState
from fedlearn.errors import ConfigError
from fedlearn.service.messages import UpdateSubmission


def _entry(round_number=3, update_id="u1", payload=b"\x00delta\nbytes\xff"):
    sub = UpdateSubmission(
        client_id="c1",
        round_number=round_number,
        update_id=update_id,
        payload=payload,
        num_samples=40,
        training_loss=0.25,
        eval_accuracy=None,
        eval_samples=0,
        train_seconds=1.5,
    )
    return OutboxEntry(sub, run_id="run", base_digest="ab" * 32)


def test_outbox_returns_a_written_update_unchanged(tmp_path):
    outbox = Outbox(tmp_path)
    outbox.put(_entry())

    assert outbox.pending() == [_entry()]


def test_outbox_lists_pending_updates_oldest_round_first(tmp_path):
    outbox = Outbox(tmp_path)
    outbox.put(_entry(12, "late"))
    outbox.put(_entry(3, "early"))

    assert [e.submission.update_id for e in outbox.pending()] == ["early", "late"]


def test_removing_an_acknowledged_update_deletes_its_file(tmp_path):
    outbox = Outbox(tmp_path)
    outbox.put(_entry(1, "a"))
    outbox.put(_entry(2, "b"))

    outbox.remove(_entry(1, "a"))
    outbox.remove(_entry(1, "a"))  # a second removal is harmless

    assert [e.submission.update_id for e in outbox.pending()] == ["b"]
    assert len(list(tmp_path.iterdir())) == 1


def test_pending_updates_survive_a_restart(tmp_path):
    Outbox(tmp_path).put(_entry())

    assert Outbox(tmp_path).pending() == [_entry()]


@pytest.mark.parametrize("cut", [5, 40, -3])
def test_a_truncated_update_file_is_set_aside_with_a_warning(tmp_path, caplog, cut):
    outbox = Outbox(tmp_path)
    path = outbox.put(_entry(1, "cut"))
    outbox.put(_entry(2, "whole"))
    path.write_bytes(path.read_bytes()[:cut])

    with caplog.at_level(logging.WARNING):
        pending = Outbox(tmp_path).pending()

    assert [e.submission.update_id for e in pending] == ["whole"]
    assert "ignoring unreadable" in caplog.text
    assert (tmp_path / (path.name + ".corrupt")).exists()
    assert [e.submission.update_id for e in outbox.pending()] == ["whole"]  # warned once


def test_an_update_with_a_flipped_payload_byte_is_ignored(tmp_path, caplog):
    outbox = Outbox(tmp_path)
    path = outbox.put(_entry())
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))

    assert outbox.pending() == []
    assert "checksum" in caplog.text


def test_a_temporary_file_left_by_a_crash_is_cleaned_up_and_never_listed(tmp_path):
    (tmp_path / ".r000001-u1.update.abc.tmp").write_bytes(b"half")

    outbox = Outbox(tmp_path)

    assert outbox.pending() == []
    assert list(tmp_path.iterdir()) == []


def test_outbox_refuses_an_update_id_that_is_not_a_file_name(tmp_path):
    with pytest.raises(ConfigError, match="cannot name a file"):
        Outbox(tmp_path).put(_entry(update_id="../escape"))


def test_a_state_folder_is_refused_to_a_second_client(tmp_path):
    first = ClientState.open(tmp_path / "state")

    with pytest.raises(ConfigError, match="in use by another running client"):
        ClientState.open(tmp_path / "state")

    assert first.lock is not None
    first.lock.close()
    ClientState.open(tmp_path / "state")  # free again once the first one is gone


def test_an_update_written_by_another_fedlearn_version_is_still_read(tmp_path):
    outbox = Outbox(tmp_path)
    outbox.put(_entry())
    (path,) = tmp_path.iterdir()
    magic = b"fedlearn-outbox/2\n"
    line, _, payload = path.read_bytes().removeprefix(magic).partition(b"\n")
    header = json.loads(line)
    header["submission"]["field_from_the_future"] = 1
    del header["submission"]["train_seconds"]
    path.write_bytes(magic + json.dumps(header).encode() + b"\n" + payload)

    (entry,) = Outbox(tmp_path).pending()
    assert entry.submission.payload == _entry().submission.payload
    assert entry.submission.train_seconds == 0.0


def test_a_version_1_file_checked_with_sha256_is_still_read(tmp_path):
    outbox = Outbox(tmp_path)
    outbox.put(_entry())
    (path,) = tmp_path.iterdir()
    line, _, payload = path.read_bytes().removeprefix(b"fedlearn-outbox/2\n").partition(b"\n")
    header = json.loads(line)
    del header["payload_xxh3_128"]
    header["payload_sha256"] = hashlib.sha256(payload).hexdigest()
    v1 = b"fedlearn-outbox/1\n" + json.dumps(header).encode() + b"\n"
    path.write_bytes(v1 + payload)

    (entry,) = Outbox(tmp_path).pending()
    assert entry.submission.payload == _entry().submission.payload

    path.write_bytes(v1 + payload[:-1] + bytes([payload[-1] ^ 1]))  # one bit flipped
    assert Outbox(tmp_path).pending() == []
    assert [p.name for p in tmp_path.iterdir()] == [path.name + ".corrupt"]


def _count_fsyncs(monkeypatch):
    calls = []
    real = os.fsync

    def fsync(fd):
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def test_an_outbox_entry_is_renamed_into_place_without_an_fsync(tmp_path, monkeypatch):
    """The outbox guards against the process dying (the page cache survives it), so it
    spares every upload a model-sized flush; the privacy ledger's writes still sync."""
    fsyncs = _count_fsyncs(monkeypatch)
    outbox = Outbox(tmp_path / "outbox")
    outbox.put(_entry())
    assert fsyncs == []
    assert Outbox(tmp_path / "outbox").pending() == [_entry()]
    assert not list((tmp_path / "outbox").glob(".*"))  # no temporary file left behind

    write_atomic(tmp_path / "ledger.json", b"{}")
    assert len(fsyncs) == 2  # the file, then its folder
