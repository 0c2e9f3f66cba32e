"""FedAvg kernels: a streaming weighted mean and a plain reference."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fedlearn.errors import ConflictError, UpdateRejectedError

__all__ = ["StreamingFedAvg", "weighted_mean"]

FloatVector = npt.NDArray[np.floating]

BLOCK = 1 << 15
"""Elements per block of ``StreamingFedAvg.add``: a 256 KiB float64 scratch (L2-sized)."""


class StreamingFedAvg:
    """Folds client vectors into a running weighted sum, one at a time.

    Memory is one float64 vector of the model's size, however many clients
    report: ``add`` accumulates ``weight * vector`` and ``mean`` divides by the
    total weight. Accumulation is in float64 so that thousands of float32
    updates lose no precision.

    ``add`` works block by block: each block of the update is widened and scaled
    in a small scratch buffer that stays in the CPU's L2 cache, then added to
    the running sum, so the update is read from memory once instead of being
    widened into a model-sized float64 copy and read back twice.
    """

    __slots__ = ("_count", "_scratch", "_sum", "_total_weight")

    def __init__(self, size: int) -> None:
        self._sum = np.zeros(size, dtype=np.float64)
        self._scratch = np.empty(min(size, BLOCK), dtype=np.float64)
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
        total, scratch = self._sum, self._scratch
        for start in range(0, total.size, BLOCK):
            part = total[start : start + BLOCK]
            block = scratch[: part.size]
            # widen first, then scale and add in place: numpy's mixed-dtype
            # multiply goes through a slower buffered casting loop
            np.copyto(block, vector[start : start + BLOCK], casting="same_kind")
            np.multiply(block, weight, out=block)
            np.add(part, block, out=part)
        self._total_weight += float(weight)
        self._count += 1

    def mean(self) -> npt.NDArray[np.float64]:
        """The weighted mean so far; ``ConflictError`` when nothing was added."""
        if self._count == 0:
            raise ConflictError("cannot average zero updates")
        result = self._sum / self._total_weight
        if not np.isfinite(result).all():
            raise ConflictError("the aggregate is not finite")
        return result


def weighted_mean(vectors: Sequence[FloatVector], weights: Sequence[float]) -> FloatVector:
    """The obviously correct reference: ``sum(w_i * v_i) / sum(w_i)`` in float64."""
    if not vectors or len(vectors) != len(weights):
        raise ValueError("need as many weights as vectors, and at least one")
    total = np.zeros_like(np.asarray(vectors[0], dtype=np.float64))
    for vector, weight in zip(vectors, weights, strict=True):
        total = total + np.asarray(vector, dtype=np.float64) * float(weight)
    return total / float(sum(weights))
