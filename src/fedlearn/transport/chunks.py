"""Cutting payloads into chunks and putting them back together, with checks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from fedlearn.errors import ChecksumError, UpdateRejectedError

__all__ = ["DEFAULT_CHUNK_BYTES", "Assembler", "split"]

DEFAULT_CHUNK_BYTES = 1 << 20


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
