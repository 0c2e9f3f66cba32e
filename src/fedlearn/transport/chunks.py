"""Cutting payloads into chunks and putting them back together, with checks."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

import xxhash

from fedlearn.core.codecs.base import leb128
from fedlearn.errors import ChecksumError, UpdateRejectedError
from fedlearn.service.messages import GlobalModelBlob
from fedlearn.transport.pb.fedlearn.v1 import fedlearn_pb2 as pb

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "Assembler",
    "EncodedModelCache",
    "PayloadChecksum",
    "chunk_reader",
    "data_chunk_message",
    "data_chunk_wire_bytes",
    "data_of_chunk_message",
    "serialized",
    "split",
]

DEFAULT_CHUNK_BYTES = 1 << 20
_DATA_TAG = 0x12
"""Field 2 (``data`` of ``UpdateChunk`` and ``ModelChunk``), wire type 2 (length-delimited)."""


class _Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...
    def hexdigest(self) -> str: ...


@dataclass(frozen=True, slots=True)
class PayloadChecksum:
    """The checksum a stream's header announces for its whole payload.

    Updates carry XXH3-128: a non-cryptographic hash that catches corruption
    and truncation at ~50 GB/s, where SHA-256 runs at ~1.8 GB/s even with the
    CPU's SHA instructions. It is no defence against tampering; neither is a
    bare SHA-256 that the sender computes, and TLS is. Models carry both: the
    SHA-256 names them (``have_sha256``, the delta chain's checks) and the
    XXH3-128, computed once per version by the server, is what each client
    checks the download against; a server too old to send it is checked
    against the SHA-256.
    """

    algorithm: str
    hexdigest: str

    @classmethod
    def xxh3_128(cls, payload: bytes) -> PayloadChecksum:
        return cls("xxh3-128", xxhash.xxh3_128_hexdigest(payload))

    @classmethod
    def of_header(cls, *, xxh3_128: str, sha256: str) -> PayloadChecksum:
        """The checksum a stream is checked against: XXH3-128 when its header
        carries one (from a peer that predates it: none), else SHA-256."""
        return cls("xxh3-128", xxh3_128) if xxh3_128 else cls("sha256", sha256)

    @classmethod
    def announced(cls, *, xxh3_128: str, sha256: str) -> PayloadChecksum:
        """The checksum of an update header, which must carry one of the two."""
        if not (xxh3_128 or sha256):
            raise UpdateRejectedError("no_checksum", "update header carries no payload checksum")
        return cls.of_header(xxh3_128=xxh3_128, sha256=sha256)

    def hasher(self) -> _Hasher:
        if self.algorithm == "xxh3-128":
            return xxhash.xxh3_128()
        return hashlib.sha256()


def data_chunk_wire_bytes(size: int) -> int:
    """Serialized size of a chunk message holding ``size`` bytes of data: the
    field's tag byte, its varint length, the data."""
    return 1 + max(1, (size.bit_length() + 6) // 7) + size


def data_chunk_message(data: bytes | memoryview) -> bytes:
    """The serialized chunk message (``UpdateChunk`` or ``ModelChunk``) holding ``data``.

    Written by hand: one copy of the data, where building the protobuf message
    and serializing it copied it twice.
    """
    return b"".join((bytes((_DATA_TAG,)), leb128(len(data)), data))


def data_of_chunk_message(message: bytes) -> memoryview | None:
    """The data of a chunk message that holds nothing else, without copying it.

    ``None`` for any other message (a header, unknown fields, a repeated field):
    those are left to protobuf, so the fast path never reads a message
    differently from the generated parser.
    """
    if len(message) < 2 or message[0] != _DATA_TAG:
        return None
    length = shift = 0
    position = 1
    while position < len(message) and position <= 10:
        byte = message[position]
        length |= (byte & 0x7F) << shift
        position += 1
        if not byte & 0x80:
            break
        shift += 7
    else:
        return None
    if position + length != len(message):
        return None
    return memoryview(message)[position:]


_Message = TypeVar("_Message")


def chunk_reader(parse: Callable[[bytes], _Message]) -> Callable[[bytes], memoryview | _Message]:
    """A gRPC deserializer for chunk messages: a plain data chunk comes back as a view
    of gRPC's message (protobuf would copy each MiB out of it, and the assembler then
    copies it again), anything else (headers, unusual messages) as ``parse`` reads it."""

    def read(message: bytes) -> memoryview | _Message:
        data = data_of_chunk_message(message)
        return data if data is not None else parse(message)

    return read


def serialized(message: bytes) -> bytes:
    """The gRPC serializer for messages that are serialized already (chunk messages
    built by :func:`data_chunk_message`): they go out as they are."""
    return message


def split(payload: bytes, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[memoryview]:
    """Views of consecutive ``chunk_bytes`` slices of ``payload`` (no copies)."""
    view = memoryview(payload)
    for start in range(0, len(view), chunk_bytes):
        yield view[start : start + chunk_bytes]


class Assembler:
    """Collects the chunks of one payload whose size and checksum were announced.

    Chunks are kept as received (views of gRPC's message buffers, where the
    fast parser gave them) and joined once at the end: one copy of the payload.
    """

    __slots__ = ("_checksum", "_chunks", "_digest", "_filled", "_total")

    def __init__(self, total_bytes: int, checksum: PayloadChecksum, *, max_bytes: int) -> None:
        if total_bytes > max_bytes:
            raise UpdateRejectedError(
                "too_large", f"payload of {total_bytes} bytes exceeds the limit of {max_bytes}"
            )
        self._total = total_bytes
        self._chunks: list[bytes | memoryview] = []
        self._filled = 0
        self._checksum = checksum
        self._digest = checksum.hasher()

    def add(self, data: bytes | memoryview) -> None:
        if self._filled + len(data) > self._total:
            raise UpdateRejectedError(
                "size_mismatch", f"received more than the announced {self._total} bytes"
            )
        self._chunks.append(data)
        self._digest.update(data)
        self._filled += len(data)

    def finish(self) -> bytes:
        if self._filled != self._total:
            raise UpdateRejectedError(
                "size_mismatch",
                f"received {self._filled} of the announced {self._total} bytes",
            )
        if self._digest.hexdigest() != self._checksum.hexdigest:
            raise ChecksumError(
                f"payload {self._checksum.algorithm} does not match the announced checksum"
            )
        only = self._chunks[0] if len(self._chunks) == 1 else None
        payload = only if isinstance(only, bytes) else b"".join(self._chunks)
        self._chunks = []
        return payload


class EncodedModelCache:
    """The serialized ``ModelChunk`` messages of the latest global model.

    Every client of a round downloads the same model: it is cut and serialized
    once per version, and each download streams the same ``bytes``. With a
    download codec a version goes out in two forms (in full, and as a delta from
    the version before), so the last few payloads are kept.
    """

    KEEP = 4

    def __init__(self, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        self._chunk_bytes = chunk_bytes
        self._lock = threading.Lock()
        self._cache: dict[tuple[int, str], tuple[bytes, ...]] = {}

    def chunks(self, blob: GlobalModelBlob) -> tuple[bytes, ...]:
        key = (blob.round_number, blob.sha256)
        with self._lock:
            messages = self._cache.pop(key, None) or self._encode(blob)
            self._cache[key] = messages  # most recently used last
            while len(self._cache) > self.KEEP:
                del self._cache[next(iter(self._cache))]
            return messages

    def _encode(self, blob: GlobalModelBlob) -> tuple[bytes, ...]:
        header = pb.BlobHeader(
            round_number=blob.round_number,
            total_bytes=len(blob.payload),
            sha256=blob.sha256,
            base_sha256=blob.base_sha256,
            model_sha256=blob.model_sha256,
            xxh3_128=xxhash.xxh3_128_hexdigest(blob.payload),
        )
        first = pb.ModelChunk(header=header).SerializeToString()
        rest = (data_chunk_message(data) for data in split(blob.payload, self._chunk_bytes))
        return (first, *rest)
