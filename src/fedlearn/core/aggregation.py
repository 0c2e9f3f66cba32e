"""FedAvg kernels: a streaming weighted mean and a plain reference."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import cast

import numpy as np
import numpy.typing as npt

from fedlearn.errors import ConflictError, UpdateRejectedError

__all__ = ["BATCH", "BLOCK", "Axpy", "StreamingFedAvg", "weighted_mean"]

FloatVector = npt.NDArray[np.floating]
Float32Vector = npt.NDArray[np.float32]

Axpy = Callable[[Float32Vector, Float32Vector, float], None]
"""``axpy(x, y, a)``: ``y += a * x`` in place, for contiguous float32 vectors of one size.

numpy has no fused multiply-add over separate vectors: its fold needs a multiply pass
and an add pass over each block. A BLAS ``saxpy`` does both in one; the coordinator's
wiring passes one in (``fedlearn.bootstrap.kernels``), and ``core`` stays numpy-only.
"""

BLOCK = 1 << 17
"""Elements per block of a fold: two 512 KiB float32 scratch rows, about one core's L2 cache."""

BATCH = 8
"""Updates held back and folded together (fewer when they would exceed ``MAX_PENDING_BYTES``)."""

MAX_PENDING_BYTES = 64 << 20


class StreamingFedAvg:
    """Folds client vectors into a running weighted sum without keeping them all.

    Memory is one float64 vector of the model's size plus at most ``BATCH``
    pending updates (and never more than 64 MiB of them), however many clients
    report. ``add`` checks an update and holds a reference to it; once a batch
    is full (or ``mean`` is asked for) the batch is folded in one pass over the
    running sum: block by block, the batch's weighted sum is formed in a small
    scratch buffer that stays in cache and then added to the float64 sum. The
    sum is therefore read and written once per batch instead of once per update,
    which is what bounded the fold by memory bandwidth.

    Precision: float32 updates are scaled and summed within a batch in float32
    (pairs of terms, at most ``BATCH`` of them), so each element of a batch sum
    is within ``BATCH`` float32 rounding steps of ``sum |w_k v_k|``; batches are
    accumulated in float64, so the error does not grow with the number of
    clients. Other dtypes are folded in float64 throughout.

    ``axpy``: a fused ``y += a * x`` for the float32 batch sums (see :data:`Axpy`);
    without one, numpy's multiply and add.

    The caller must not modify a vector after handing it to ``add``.
    """

    __slots__ = (
        "_axpy",
        "_count",
        "_max_batch",
        "_pending",
        "_scratch32",
        "_scratch64",
        "_sum",
        "_total_weight",
    )

    def __init__(self, size: int, *, axpy: Axpy | None = None) -> None:
        self._axpy = axpy
        self._sum = np.zeros(size, dtype=np.float64)
        block = min(size, BLOCK)
        self._scratch32 = np.empty((2, block), dtype=np.float32)
        self._scratch64 = np.empty((3, block), dtype=np.float64)
        self._pending: list[tuple[FloatVector, float]] = []
        self._max_batch = max(1, min(BATCH, MAX_PENDING_BYTES // max(4 * size, 1)))
        self._total_weight = 0.0
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    @property
    def total_weight(self) -> float:
        return self._total_weight

    def add(self, vector: FloatVector, weight: float) -> None:
        if vector.shape != self._sum.shape:
            raise UpdateRejectedError(
                "wrong_shape", f"vector of shape {vector.shape}, expected {self._sum.shape}"
            )
        if not weight > 0 or not np.isfinite(weight):
            raise UpdateRejectedError("bad_weight", f"weight must be positive, got {weight}")
        self._pending.append((vector, float(weight)))
        self._total_weight += float(weight)
        self._count += 1
        if len(self._pending) >= self._max_batch:
            self._flush()

    def mean(self) -> npt.NDArray[np.float64]:
        """The weighted mean so far; ``ConflictError`` when nothing was added."""
        if self._count == 0:
            raise ConflictError("cannot average zero updates")
        self._flush()
        result = self._sum / self._total_weight
        # A NaN or an infinity anywhere makes the sum non-finite; finite float64
        # means of float32 updates cannot overflow it. One pass, no mask array.
        if not math.isfinite(float(result.sum())):
            raise ConflictError("the aggregate is not finite")
        return result

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        single = all(v.dtype == np.float32 for v, _ in batch)
        scratch = self._scratch32 if single else self._scratch64
        wide = self._scratch64[2]
        weights = [np.float32(w) if single else np.float64(w) for _, w in batch]
        total = self._sum
        for start in range(0, total.size, BLOCK):
            stop = min(start + BLOCK, total.size)
            acc, term = scratch[0, : stop - start], scratch[1, : stop - start]
            if single and self._axpy is not None:
                _fused_block(batch, weights, slice(start, stop), acc=acc, axpy=self._axpy)
            else:
                _weighted_block(batch, weights, slice(start, stop), acc=acc, term=term)
            part = total[start:stop]
            if single:
                np.copyto(wide[: stop - start], acc)
                np.add(part, wide[: stop - start], out=part)
            else:
                np.add(part, acc, out=part)


def _weighted_block(
    batch: list[tuple[FloatVector, float]],
    weights: Sequence[np.floating],
    block: slice,
    *,
    acc: FloatVector,
    term: FloatVector,
) -> None:
    """``acc = sum_k weights[k] * batch[k][block]`` in ``acc``'s dtype."""
    for k, ((vector, _), weight) in enumerate(zip(batch, weights, strict=True)):
        source = vector[block]
        if source.dtype != acc.dtype:  # widen first: mixed-dtype ufuncs take a slow path
            np.copyto(term, source, casting="same_kind")
            source = term
        np.multiply(source, weight, out=acc if k == 0 else term)
        if k:
            np.add(acc, term, out=acc)


def _fused_block(
    batch: list[tuple[FloatVector, float]],
    weights: Sequence[np.floating],
    block: slice,
    *,
    acc: FloatVector,
    axpy: Axpy,
) -> None:
    """``acc = sum_k weights[k] * batch[k][block]``: one multiply, then one fused pass each.

    Every vector and ``acc`` are float32 here (``_flush`` checks the batch)."""
    first, *rest = batch
    np.multiply(first[0][block], weights[0], out=acc)
    for (vector, _), weight in zip(rest, weights[1:], strict=True):
        axpy(cast(Float32Vector, vector[block]), cast(Float32Vector, acc), float(weight))


def weighted_mean(vectors: Sequence[FloatVector], weights: Sequence[float]) -> FloatVector:
    """The obviously correct reference: ``sum(w_i * v_i) / sum(w_i)`` in float64."""
    if not vectors or len(vectors) != len(weights):
        raise ValueError("need as many weights as vectors, and at least one")
    total = np.zeros_like(np.asarray(vectors[0], dtype=np.float64))
    for vector, weight in zip(vectors, weights, strict=True):
        total = total + np.asarray(vector, dtype=np.float64) * float(weight)
    return total / float(sum(weights))
