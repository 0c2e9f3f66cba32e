"""Cutting payloads into chunks and putting them back together, with checks."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator

from fedlearn.errors import ChecksumError, UpdateRejectedError
from fedlearn.service.messages import GlobalModelBlob
from fedlearn.transport.pb.fedlearn.v1 import fedlearn_pb2 as pb

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "Assembler",
    "EncodedModelCache",
    "data_chunk_wire_bytes",
    "split",
]

DEFAULT_CHUNK_BYTES = 1 << 20


def data_chunk_wire_bytes(size: int) -> int:
    """Serialized size of a chunk message holding ``size`` bytes of data: the
    field's tag byte, its varint length, the data."""
    return 1 + max(1, (size.bit_length() + 6) // 7) + size


def split(payload: bytes, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[bytes]:
    view = memoryview(payload)
    for start in range(0, len(view), chunk_bytes):
        yield bytes(view[start : start + chunk_bytes])


class Assembler:
    """Collects the chunks of one payload whose size and SHA-256 were announced.

    Chunks are kept as received and joined once at the end: one copy of the
    payload instead of a copy into a buffer and another out of it.
    """

    __slots__ = ("_chunks", "_digest", "_filled", "_sha256", "_total")

    def __init__(self, total_bytes: int, sha256: str, *, max_bytes: int) -> None:
        if total_bytes > max_bytes:
            raise UpdateRejectedError(
                "too_large", f"payload of {total_bytes} bytes exceeds the limit of {max_bytes}"
            )
        self._total = total_bytes
        self._chunks: list[bytes] = []
        self._filled = 0
        self._sha256 = sha256
        self._digest = hashlib.sha256()

    def add(self, data: bytes) -> None:
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
        if self._digest.hexdigest() != self._sha256:
            raise ChecksumError("payload SHA-256 does not match the announced checksum")
        payload = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
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
        )
        first = pb.ModelChunk(header=header).SerializeToString()
        rest = (
            pb.ModelChunk(data=data).SerializeToString()
            for data in split(blob.payload, self._chunk_bytes)
        )
        return (first, *rest)
