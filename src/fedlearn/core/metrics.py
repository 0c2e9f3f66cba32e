"""Convergence metrics computed when a round closes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["ConvergenceMetrics", "convergence_metrics"]


@dataclass(frozen=True, slots=True)
class ConvergenceMetrics:
    update_norm: float
    """L2 norm of the aggregated client update (the mean delta)."""
    model_delta_norm: float
    """L2 norm of the change of the global model (differs from the update with momentum)."""
    convergence_score: float
    """Relative change ``||new - old|| / ||old||``: tends to 0 as training converges."""


def _norm(vector: npt.NDArray[np.floating]) -> float:
    v = vector.astype(np.float64, copy=False)
    return math.sqrt(float(np.dot(v, v)))


def convergence_metrics(
    old: npt.NDArray[np.floating],
    new: npt.NDArray[np.floating],
    mean_delta: npt.NDArray[np.floating],
) -> ConvergenceMetrics:
    change = _norm(np.subtract(new, old, dtype=np.float64))
    base = _norm(old)
    return ConvergenceMetrics(
        update_norm=_norm(mean_delta),
        model_delta_norm=change,
        convergence_score=change / base if base > 0 else change,
    )
