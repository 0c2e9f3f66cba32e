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
    """Collects the chunks of one payload whose size and SHA-256 were announced."""

    __slots__ = ("_buffer", "_digest", "_filled", "_sha256")

    def __init__(self, total_bytes: int, sha256: str, *, max_bytes: int) -> None:
        if total_bytes > max_bytes:
            raise UpdateRejectedError(
                "too_large", f"payload of {total_bytes} bytes exceeds the limit of {max_bytes}"
            )
        self._buffer = bytearray(total_bytes)
        self._filled = 0
        self._sha256 = sha256
        self._digest = hashlib.sha256()

    def add(self, data: bytes) -> None:
        end = self._filled + len(data)
        if end > len(self._buffer):
            raise UpdateRejectedError(
                "size_mismatch", f"received more than the announced {len(self._buffer)} bytes"
            )
        self._buffer[self._filled : end] = data
        self._digest.update(data)
        self._filled = end

    def finish(self) -> bytes:
        if self._filled != len(self._buffer):
            raise UpdateRejectedError(
                "size_mismatch",
                f"received {self._filled} of the announced {len(self._buffer)} bytes",
            )
        if self._digest.hexdigest() != self._sha256:
            raise ChecksumError("payload SHA-256 does not match the announced checksum")
        return bytes(self._buffer)
