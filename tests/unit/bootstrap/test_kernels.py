import numpy as np
import pytest
import threadpoolctl

from fedlearn.bootstrap.kernels import blas_axpy
from fedlearn.core.aggregation import BATCH, BLOCK, StreamingFedAvg, weighted_mean


@pytest.fixture
def axpy():
    kernel = blas_axpy()
    assert kernel is not None, "scipy is a dependency: the BLAS kernel must load"
    return kernel


def test_blas_axpy_adds_a_scaled_vector_in_place(axpy):
    x = np.arange(6, dtype=np.float32)
    x.setflags(write=False)  # payload views are read-only
    y = np.ones(6, dtype=np.float32)
    before = y.ctypes.data
    axpy(x, y, 0.5)
    np.testing.assert_array_equal(y, 1 + 0.5 * np.arange(6, dtype=np.float32))
    assert y.ctypes.data == before
    np.testing.assert_array_equal(x, np.arange(6))


def test_blas_axpy_takes_strided_sources(axpy):
    x = np.arange(12, dtype=np.float32)[::2]
    y = np.zeros(6, dtype=np.float32)
    axpy(x, y, 2.0)
    np.testing.assert_array_equal(y, 2 * np.arange(0, 12, 2, dtype=np.float32))


def test_the_coordinators_fold_with_blas_matches_numpys(axpy):
    size = 2 * BLOCK + 5
    rng = np.random.default_rng(7)
    vectors = [rng.standard_normal(size, dtype=np.float32) for _ in range(2 * BATCH + 1)]
    weights = [float(w) for w in rng.integers(1, 1000, len(vectors))]
    fused, plain = StreamingFedAvg(size, axpy=axpy), StreamingFedAvg(size)
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        for v, w in zip(vectors, weights, strict=True):
            fused.add(v, w)
            plain.add(v, w)
    expected = weighted_mean(vectors, weights)
    np.testing.assert_allclose(fused.mean(), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(fused.mean(), plain.mean(), rtol=0, atol=1e-6)
