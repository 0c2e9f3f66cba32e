"""Updates written to disk before they are sent, and deleted once acknowledged.

A client that dies between computing an update and hearing the coordinator's ack finds
the update here when it starts again and re-sends it with the same update id; the
coordinator stores an update id once and acknowledges a repeat as a duplicate, so an
update never counts twice.

Files are renamed into place but not fsynced: they guard against the client process
dying, which leaves the kernel's page cache intact, and most are deleted a second
later, before the kernel writes them back, so an update costs a copy into memory rather
than a model-sized disk write and its flush (10 to 500 ms on a shared virtual disk) on
the way to every upload. A power cut may lose a pending file or tear it; the checksum
sets a torn one aside, and a lost update is trained again, as after any crash before
the outbox write.

One file per update, ``r<round>-<update id>.update``::

    fedlearn-outbox/2\\n
    {"run_id": ..., "base_digest": ..., "submission": {...}, "payload_xxh3_128": ...}\\n
    <payload bytes>

The checksum only has to catch a torn or damaged file, so it is XXH3-128 (about
20 times faster than SHA-256 on a model-sized payload, which every client writes
every round). Version 1 files, checked with SHA-256, are still read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import xxhash

from fedlearn.client.files import TEMP_SUFFIX, write_atomic
from fedlearn.errors import ConfigError
from fedlearn.service.messages import UpdateSubmission

__all__ = ["Outbox", "OutboxEntry"]

logger = logging.getLogger(__name__)

_MAGIC = b"fedlearn-outbox/2\n"
_MAGIC_V1 = b"fedlearn-outbox/1\n"  # payload checked with SHA-256
_SUFFIX = ".update"
_SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An update waiting for its ack, with what is needed to tell if it still fits."""

    submission: UpdateSubmission
    run_id: str
    base_digest: str
    """SHA-256 of the global model the update was trained from."""


class Outbox:
    """A folder of pending updates; safe against the client's process dying at any point."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob(f".*{TEMP_SUFFIX}"):  # a write cut short by a crash
            stale.unlink(missing_ok=True)

    def _path(self, submission: UpdateSubmission) -> Path:
        if not _SAFE_ID.fullmatch(submission.update_id):
            raise ConfigError(f"update id {submission.update_id!r} cannot name a file")
        return self.directory / f"r{submission.round_number:06d}-{submission.update_id}{_SUFFIX}"

    def put(self, entry: OutboxEntry) -> Path:
        """Store ``entry`` (temp file, rename; no fsync, see above); returns its file."""
        path = self._path(entry.submission)
        write_atomic(path, _encode_header(entry), entry.submission.payload, sync=False)
        logger.debug("outbox: stored update %s", entry.submission.update_id)
        return path

    def pending(self) -> list[OutboxEntry]:
        """Every readable entry, oldest round first; unreadable files are set aside."""
        entries = []
        for path in sorted(self.directory.glob(f"*{_SUFFIX}")):
            try:
                entries.append(_decode(path.read_bytes()))
            except (ValueError, TypeError, KeyError) as exc:
                aside = path.with_name(path.name + ".corrupt")
                logger.warning("outbox: ignoring unreadable %s (%s); moved to %s", path, exc, aside)
                path.replace(aside)
        return entries

    def remove(self, entry: OutboxEntry) -> None:
        """Forget ``entry`` (acknowledged or no longer wanted); no error if it is gone."""
        self._path(entry.submission).unlink(missing_ok=True)


def _encode_header(entry: OutboxEntry) -> bytes:
    """The file up to the payload, which is written after it as it is (no joined copy)."""
    fields = {
        f.name: getattr(entry.submission, f.name)
        for f in dataclasses.fields(UpdateSubmission)
        if f.name != "payload"
    }
    payload: bytes = entry.submission.payload
    header = {
        "run_id": entry.run_id,
        "base_digest": entry.base_digest,
        "submission": fields,
        "payload_bytes": len(payload),
        "payload_xxh3_128": xxhash.xxh3_128_hexdigest(payload),
    }
    return _MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n"


def _decode(data: bytes) -> OutboxEntry:
    if data.startswith(_MAGIC):
        version = 2
    elif data.startswith(_MAGIC_V1):
        version = 1
    else:
        raise ValueError("not an outbox file")
    line, sep, payload = data[len(_MAGIC) :].partition(b"\n")
    if not sep:
        raise ValueError("truncated header")
    header = json.loads(line)
    if len(payload) != header["payload_bytes"]:
        raise ValueError(f"payload has {len(payload)} bytes, expected {header['payload_bytes']}")
    if version == 1:
        ok = hashlib.sha256(payload).hexdigest() == header["payload_sha256"]
    else:
        ok = xxhash.xxh3_128_hexdigest(payload) == header["payload_xxh3_128"]
    if not ok:
        raise ValueError("payload checksum mismatch")
    # fields this version does not know are ignored, missing ones take their
    # defaults: an update written by an older or newer fedlearn is still sent
    known = {f.name for f in dataclasses.fields(UpdateSubmission)} - {"payload"}
    fields = {k: v for k, v in header["submission"].items() if k in known}
    submission = UpdateSubmission(payload=payload, **fields)
    return OutboxEntry(submission, run_id=header["run_id"], base_digest=header["base_digest"])
