"""Low-rank factorisation of matrix-shaped tensors (PowerSGD, Vogels et al. 2019).

Each tensor of two or more dimensions is viewed as a matrix ``M`` (its first
dimension by the rest) and sent as two thin factors, ``P`` (rows x r) and ``Q``
(cols x r), with ``M ~= P Q^T``: ``r * (rows + cols)`` values instead of
``rows * cols``. ``P`` comes from one step of subspace iteration, ``P = orth(M Q0)``,
then ``Q = M^T P``. ``Q0`` is the ``Q`` this client sent last round (its *basis*:
the update's dominant directions change slowly from round to round, so one step
per round tracks them), or a Gaussian start. Tensors too small to gain (vectors,
or ``min(rows, cols) <= 2 r``) travel dense. Meant to run with error feedback,
which keeps ``M - P Q^T`` for the next round.

The payload's structure section lists the segments in tensor order, each as
three LEB128 varints ``rows, cols, rank`` (rank 0: dense), after their count.
The decoder checks that the segments cover exactly the vector, that every rank
is below ``min(rows, cols) / 2`` and at most the codec's rank, and that the
values stored are exactly what the segments need, before it multiplies anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedlearn.core.codecs.base import FloatVector, leb128, reject
from fedlearn.errors import ConfigError

__all__ = ["MAX_RANK", "LowRank", "Segment", "decode_layout", "encode_layout"]

MAX_RANK = 64
_MAX_SEGMENTS = 1 << 16
_VARINT_MAX_BYTES = 10


@dataclass(frozen=True, slots=True)
class Segment:
    """One tensor of the flat vector: ``rows x cols`` values, factored at ``rank`` (0: dense)."""

    rows: int
    cols: int
    rank: int

    @property
    def size(self) -> int:
        return self.rows * self.cols

    @property
    def stored(self) -> int:
        """Values the payload holds for this segment."""
        return self.rank * (self.rows + self.cols) if self.rank else self.size


@dataclass(frozen=True, slots=True)
class LowRank:
    """Send every large enough matrix as rank-``rank`` factors."""

    rank: int

    def __post_init__(self) -> None:
        if not 1 <= self.rank <= MAX_RANK:
            raise ConfigError(f"lowrank rank must be 1-{MAX_RANK}, got {self.rank}")

    def layout(self, shapes: Sequence[tuple[int, ...]]) -> tuple[Segment, ...]:
        """The segments of a vector made of tensors of these shapes, in order."""
        segments = []
        for shape in shapes:
            dims = [int(d) for d in shape]
            rows, cols = (dims[0], math.prod(dims[1:])) if len(dims) >= 2 else (1, math.prod(dims))
            if rows * cols == 0:
                continue  # an empty tensor adds no values
            rank = self.rank if len(dims) >= 2 and min(rows, cols) > 2 * self.rank else 0
            segments.append(Segment(rows, cols, rank))
        return tuple(segments)

    def factorize(
        self,
        vector: FloatVector,
        segments: Sequence[Segment],
        *,
        basis: FloatVector | None,
        rng: np.random.Generator,
    ) -> FloatVector:
        """The values to send: dense segments as they are, factored ones as ``P`` then ``Q``.

        ``basis``: the ``Q`` factors of the previous payload (see :func:`basis_of`),
        used as the start of the subspace step when it fits these segments.
        """
        starts = _basis_starts(segments)
        start_basis = basis if basis is not None and basis.size == starts[-1] else None
        parts: list[FloatVector] = []
        offset = 0
        for index, segment in enumerate(segments):
            block = vector[offset : offset + segment.size]
            offset += segment.size
            if not segment.rank:
                parts.append(block)
                continue
            matrix = block.reshape(segment.rows, segment.cols)
            if start_basis is not None:
                start = start_basis[starts[index] : starts[index + 1]]
                q0 = start.reshape(segment.cols, segment.rank).astype(matrix.dtype)
            else:
                q0 = rng.standard_normal((segment.cols, segment.rank)).astype(matrix.dtype)
            p, q = _subspace_step(matrix, q0)
            parts.extend((p.ravel().astype(vector.dtype), q.ravel().astype(vector.dtype)))
        return np.concatenate(parts) if parts else vector[:0].copy()

    @staticmethod
    def expand(values: FloatVector, segments: Sequence[Segment], *, size: int) -> FloatVector:
        """The vector the factors stand for (``P Q^T`` per factored segment)."""
        out: FloatVector = np.empty(size, dtype=values.dtype)
        at = offset = 0
        for segment in segments:
            if not segment.rank:
                out[offset : offset + segment.size] = values[at : at + segment.size]
            else:
                p_size = segment.rows * segment.rank
                p = values[at : at + p_size].reshape(segment.rows, segment.rank)
                q = values[at + p_size : at + segment.stored].reshape(segment.cols, segment.rank)
                with np.errstate(over="ignore", invalid="ignore"):  # refused as non-finite
                    out[offset : offset + segment.size] = (p @ q.T).ravel()
            at += segment.stored
            offset += segment.size
        return out

    @staticmethod
    def basis_of(values: FloatVector, segments: Sequence[Segment]) -> FloatVector:
        """The ``Q`` factors among the sent values: the next round's start."""
        parts = []
        at = 0
        for segment in segments:
            if segment.rank:
                parts.append(values[at + segment.rows * segment.rank : at + segment.stored])
            at += segment.stored
        return np.concatenate(parts) if parts else values[:0].copy()


def _basis_starts(segments: Sequence[Segment]) -> list[int]:
    starts = [0]
    for segment in segments:
        starts.append(starts[-1] + (segment.cols * segment.rank if segment.rank else 0))
    return starts


def _subspace_step(matrix: np.ndarray, q0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``P = orth(M Q0)``, ``Q = M^T P``, scaled so that P's and Q's columns have equal
    norms (the product is unchanged; a quantiser after this sees one range).

    The two products over the whole matrix run in its own dtype (BLAS); the thin
    factorisation and the norms in float64.
    """
    p, _ = np.linalg.qr((matrix @ q0).astype(np.float64))
    q = (matrix.T @ p.astype(matrix.dtype)).astype(np.float64)
    norms = np.linalg.norm(q, axis=0)
    balance = np.sqrt(np.where(norms > 0, norms, 1.0))
    return p * balance, q / balance


def encode_layout(segments: Sequence[Segment]) -> bytes:
    """The structure section: the segment count, then ``rows, cols, rank`` of each."""
    fields = [len(segments)]
    for segment in segments:
        fields.extend((segment.rows, segment.cols, segment.rank))
    return b"".join(leb128(f) for f in fields)


def _read_varints(data: memoryview) -> list[int]:
    numbers: list[int] = []
    value = shift = length = 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        length += 1
        if length > _VARINT_MAX_BYTES:
            raise reject("structure varint longer than 10 bytes")
        if byte & 0x80:
            shift += 7
            continue
        if byte == 0 and length > 1:
            raise reject("structure varint is not in its shortest form")
        numbers.append(value)
        value = shift = length = 0
    if length:
        raise reject("structure section ends inside a varint")
    return numbers


def decode_layout(data: memoryview, *, size: int, max_rank: int) -> tuple[Segment, ...]:
    """Read and check a structure section for a vector of ``size`` values."""
    if len(data) > (3 * _MAX_SEGMENTS + 1) * _VARINT_MAX_BYTES:
        raise reject("structure section is longer than any layout needs")
    numbers = _read_varints(data)
    if not numbers or numbers[0] != (len(numbers) - 1) / 3 or numbers[0] > _MAX_SEGMENTS:
        raise reject("structure section does not hold the segments it announces")
    segments = []
    covered = 0
    for at in range(1, len(numbers), 3):
        rows, cols, rank = numbers[at : at + 3]
        if rows < 1 or cols < 1:
            raise reject(f"segment of {rows} x {cols} values")
        if rank and (rank > max_rank or min(rows, cols) <= 2 * rank):
            raise reject(f"segment {rows} x {cols} cannot be factored at rank {rank}")
        covered += rows * cols
        if covered > size:
            raise reject(f"segments cover more than the vector's {size} values")
        segments.append(Segment(rows, cols, rank))
    if covered != size:
        raise reject(f"segments cover {covered} of the vector's {size} values")
    return tuple(segments)
