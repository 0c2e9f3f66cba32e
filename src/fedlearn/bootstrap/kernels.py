"""Numeric kernels the coordinator's pure-numpy core is handed: BLAS through SciPy.

``fedlearn.core`` may import numpy only, and numpy exposes no fused ``y += a * x``
over separate vectors. The streaming FedAvg fold is bound by the passes it makes over
each block of an update held in cache, so a BLAS ``saxpy`` (one pass instead of a
multiply and an add) folds float32 updates about 1.4 times as fast (``python -m
benchmarks aggregation``). SciPy's BLAS is loaded when this module is imported, so
that the coordinator's ``limit_blas_threads`` (run later, at start-up) keeps it on
the calling thread as well.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.linalg.blas import saxpy as _saxpy

from fedlearn.core.aggregation import Axpy

__all__ = ["blas_axpy"]


def blas_axpy() -> Axpy:
    """A ``y += a * x`` on float32 vectors through BLAS."""
    saxpy: Any = _saxpy  # untyped (f2py)

    def axpy(x: npt.NDArray[np.float32], y: npt.NDArray[np.float32], a: float) -> None:
        # y is a contiguous float32 scratch row: BLAS updates it in place and returns
        # it. Anything else would come back as a copy; write that back rather than lose it.
        out = saxpy(x, y, a=a)
        if out is not y:
            np.copyto(y, out)

    return axpy
