"""Top-k sparsification and the index code for sparse updates.

Indices are sent as gaps: the first index, then ``index[i] - index[i-1] - 1`` for the
rest, each as a LEB128 varint, the whole run deflated with zlib. Storing gaps minus
one as unsigned numbers makes unsorted or repeated indices impossible to express, so
the decoder only has to check the count, the varint framing and the range.

Measured on a 1,663,370-value vector at 1% density: 18.9 KB when the kept positions
are uniform, 9.7 KB when they cluster by layer (as real updates do), against 17.8 KB
for Elias-Fano (which cannot exploit clusters), 24 KB for zlib over uint32 gaps and
23 KB for zlib over a bitmap.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedlearn.core.codecs.base import FloatVector, reject
from fedlearn.errors import ConfigError

__all__ = ["TopK", "decode_indices", "encode_indices", "topk_indices"]

IndexVector = npt.NDArray[np.int64]

_VARINT_MAX_BYTES = 5  # gaps are below MAX_ELEMENTS < 2**35


@dataclass(frozen=True, slots=True)
class TopK:
    """Keep the ``ceil(fraction * n)`` entries of largest magnitude (at least one)."""

    fraction: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.fraction) and 0 < self.fraction <= 1):
            raise ConfigError(f"topk fraction must be in (0, 1], got {self.fraction}")

    def count(self, size: int) -> int:
        """How many entries a vector of ``size`` keeps."""
        if size == 0:
            return 0
        return min(size, max(1, math.ceil(self.fraction * size)))


def topk_indices(vector: FloatVector, k: int) -> IndexVector:
    """Sorted positions of ``k`` entries of largest magnitude (ties broken arbitrarily)."""
    n = vector.size
    if k >= n:
        return np.arange(n, dtype=np.int64)
    if k == 0:
        return np.empty(0, dtype=np.int64)
    picked = np.argpartition(np.abs(vector), n - k)[n - k :]
    return np.sort(picked).astype(np.int64, copy=False)


def _varints(gaps: npt.NDArray[np.uint64]) -> bytes:
    nbytes = np.ones(gaps.size, dtype=np.int64)
    for shift in range(7, 7 * _VARINT_MAX_BYTES, 7):
        nbytes += gaps >= (1 << shift)
    starts = np.cumsum(nbytes) - nbytes
    out = np.empty(int(nbytes.sum()), dtype=np.uint8)
    for j in range(_VARINT_MAX_BYTES):
        here = nbytes > j
        if not here.any():
            break
        low7 = (gaps[here] >> np.uint64(7 * j)) & np.uint64(0x7F)
        more = np.where(nbytes[here] > j + 1, 0x80, 0).astype(np.uint64)
        out[starts[here] + j] = (low7 | more).astype(np.uint8)
    return out.tobytes()


def encode_indices(indices: IndexVector) -> bytes:
    """Strictly increasing non-negative ``indices`` as zlib-deflated varint gaps."""
    if indices.size == 0:
        return zlib.compress(b"")
    gaps = np.diff(indices, prepend=-1) - 1
    if int(gaps.min()) < 0:
        raise ValueError("indices must be non-negative and strictly increasing")
    return zlib.compress(_varints(gaps.astype(np.uint64)), 6)


def _inflate(data: memoryview, limit: int) -> npt.NDArray[np.uint8]:
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise reject(f"index section is not valid zlib data: {exc}") from exc
    if len(raw) > limit or inflater.unconsumed_tail:
        raise reject("index section inflates to more than its indices can need")
    if not inflater.eof:
        raise reject("index section is truncated")
    if inflater.unused_data:
        raise reject("index section has bytes after the end of its zlib stream")
    return np.frombuffer(raw, dtype=np.uint8)


def _gaps_from_varints(raw: npt.NDArray[np.uint8], count: int) -> npt.NDArray[np.uint64]:
    ends = np.flatnonzero(raw < 0x80)
    if ends.size != count or (raw.size and ends[-1] != raw.size - 1):
        raise reject(f"index section holds {ends.size} complete varints, expected {count}")
    lengths = np.diff(ends, prepend=-1)
    if int(lengths.max()) > _VARINT_MAX_BYTES:
        raise reject("index varint longer than 5 bytes")
    if bool(((raw[ends] == 0) & (lengths > 1)).any()):
        raise reject("index varint is not in its shortest form")
    starts = ends - lengths + 1
    shifts = 7 * (np.arange(raw.size) - np.repeat(starts, lengths))
    parts = (raw & 0x7F).astype(np.uint64) << shifts.astype(np.uint64)
    return np.add.reduceat(parts, starts)


def decode_indices(data: memoryview, *, count: int, size: int) -> IndexVector:
    """Decode ``count`` strictly increasing indices, all below ``size``, or raise."""
    raw = _inflate(data, count * _VARINT_MAX_BYTES)
    if count == 0:
        if raw.size:
            raise reject("index section holds data but no indices were declared")
        return np.empty(0, dtype=np.int64)
    gaps = _gaps_from_varints(raw, count)
    if int(gaps.max()) >= size:
        raise reject(f"index gap exceeds the vector length {size}")
    indices = np.cumsum(gaps.astype(np.int64) + 1) - 1
    if int(indices[-1]) >= size:
        raise reject(f"index {int(indices[-1])} is out of range for a vector of {size}")
    return indices
