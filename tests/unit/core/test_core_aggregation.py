import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedlearn.core.aggregation import BATCH, BLOCK, StreamingFedAvg, weighted_mean
from fedlearn.errors import ConflictError, UpdateRejectedError

finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, width=32)


@st.composite
def client_updates(draw):
    size = draw(st.integers(min_value=1, max_value=64))
    n = draw(st.integers(min_value=1, max_value=12))
    vectors = [draw(hnp.arrays(np.float32, size, elements=finite)) for _ in range(n)]
    weights = [draw(st.integers(min_value=1, max_value=10_000)) for _ in range(n)]
    return vectors, weights


def error_bound(vectors, weights):
    """The documented bound: BATCH float32 rounding steps of sum |w v|, over the total weight."""
    magnitude = sum(
        np.abs(np.asarray(v, np.float64)) * w for v, w in zip(vectors, weights, strict=True)
    )
    return (BATCH + 1) * np.finfo(np.float32).eps * magnitude / sum(weights) + 1e-300


@settings(max_examples=200, deadline=None)
@given(client_updates())
def test_streaming_fedavg_equals_the_plain_weighted_mean(case):
    vectors, weights = case
    agg = StreamingFedAvg(vectors[0].size)
    for v, w in zip(vectors, weights, strict=True):
        agg.add(v, float(w))
    expected = weighted_mean(vectors, [float(w) for w in weights])
    assert np.all(np.abs(agg.mean() - expected) <= error_bound(vectors, weights))
    assert agg.count == len(vectors)
    assert agg.total_weight == sum(weights)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 17])
def test_streaming_fedavg_is_exact_across_block_and_batch_boundaries(size, dtype):
    rng = np.random.default_rng(size)
    vectors = [rng.standard_normal(size).astype(dtype) for _ in range(BATCH + 3)]
    weights = [3.0, 1.0, 250.0] * (len(vectors) // 3) + [7.0] * (len(vectors) % 3)
    agg = StreamingFedAvg(size)
    for v, w in zip(vectors, weights, strict=True):
        agg.add(v, w)
    expected = weighted_mean(vectors, weights)
    if dtype == np.float64:  # folded in float64 throughout
        np.testing.assert_allclose(agg.mean(), expected, rtol=1e-12, atol=1e-15)
    else:
        assert np.all(np.abs(agg.mean() - expected) <= error_bound(vectors, weights))


def test_mixed_dtypes_in_one_batch_are_folded_in_float64():
    agg = StreamingFedAvg(1)
    agg.add(np.array([1e8], np.float64), 1.0)
    for _ in range(BATCH - 1):
        agg.add(np.array([1.0], np.float32), 1.0)
    assert agg.mean()[0] == (1e8 + BATCH - 1) / BATCH


def test_fedavg_weights_updates_by_sample_count():
    agg = StreamingFedAvg(2)
    agg.add(np.array([1.0, 0.0], np.float32), 3.0)
    agg.add(np.array([0.0, 1.0], np.float32), 1.0)
    np.testing.assert_allclose(agg.mean(), [0.75, 0.25])


def test_mean_of_no_updates_is_an_error():
    with pytest.raises(ConflictError):
        StreamingFedAvg(3).mean()


@pytest.mark.parametrize("weight", [0.0, -1.0, float("nan"), float("inf")])
def test_add_rejects_non_positive_or_non_finite_weights(weight):
    agg = StreamingFedAvg(2)
    with pytest.raises(UpdateRejectedError):
        agg.add(np.ones(2, np.float32), weight)
    assert agg.count == 0


def test_add_rejects_a_vector_of_the_wrong_size_and_keeps_the_sum():
    agg = StreamingFedAvg(3)
    agg.add(np.ones(3, np.float32), 1.0)
    with pytest.raises(UpdateRejectedError):
        agg.add(np.ones(4, np.float32), 1.0)
    np.testing.assert_allclose(agg.mean(), np.ones(3))


def test_error_does_not_grow_with_the_number_of_clients():
    """Batches are summed in float64: 50,000 clients, and the mean is still the value sent.

    A float32 running sum drifts by about 1e-5 here (checked below, so that the test
    would catch an accumulator that is not float64).
    """
    rng = np.random.default_rng(3)
    value = np.float32(0.3)
    weights = rng.integers(1, 1000, size=50_000).astype(float)
    agg = StreamingFedAvg(1)
    naive = np.float32(0.0)
    for w in weights:
        agg.add(np.array([value], np.float32), w)
        naive = np.float32(naive + np.float32(w) * value)
    tolerance = 1e-7
    assert abs(agg.mean()[0] / float(value) - 1) < tolerance
    assert abs(float(naive) / weights.sum() / float(value) - 1) > tolerance


def test_updates_held_back_in_a_batch_count_at_once_and_reach_the_mean():
    agg = StreamingFedAvg(2)
    for i in range(BATCH - 1):
        agg.add(np.array([float(i), 1.0], np.float32), 1.0)
    assert agg.count == BATCH - 1
    np.testing.assert_allclose(agg.mean(), [(BATCH - 2) / 2, 1.0])
    agg.add(np.array([0.0, 1.0], np.float32), 1.0)  # the mean flushed: nothing folded twice
    np.testing.assert_allclose(agg.mean(), [(BATCH - 2) * (BATCH - 1) / 2 / BATCH, 1.0])


def numpy_axpy(calls):
    """A fused-kernel stand-in written in numpy: ``y += a * x``, counting its calls."""

    def axpy(x, y, a):
        assert x.dtype == np.float32 and y.dtype == np.float32 and x.shape == y.shape
        calls.append(x.size)
        y += np.float32(a) * x

    return axpy


@pytest.mark.parametrize("size", [5, BLOCK + 1, 2 * BLOCK + 3])
def test_a_handed_in_axpy_folds_float32_batches_to_the_same_mean(size):
    rng = np.random.default_rng(size)
    vectors = [rng.standard_normal(size).astype(np.float32) for _ in range(BATCH + 3)]
    weights = [float(w) for w in rng.integers(1, 500, len(vectors))]
    calls: list[int] = []
    agg = StreamingFedAvg(size, axpy=numpy_axpy(calls))
    for v, w in zip(vectors, weights, strict=True):
        agg.add(v, w)
    mean = agg.mean()
    assert np.all(np.abs(mean - weighted_mean(vectors, weights)) <= error_bound(vectors, weights))
    blocks = -(-size // BLOCK)
    # the first update of each batch is scaled, the others go through the kernel, block by block
    assert len(calls) == blocks * ((BATCH - 1) + (3 - 1))
    assert sum(calls) == size * ((BATCH - 1) + (3 - 1))


def test_a_handed_in_axpy_is_not_used_for_float64_or_mixed_batches():
    calls: list[int] = []
    agg = StreamingFedAvg(3, axpy=numpy_axpy(calls))
    agg.add(np.array([1.0, 2.0, 3.0], np.float64), 1.0)
    agg.add(np.array([3.0, 2.0, 1.0], np.float32), 3.0)
    np.testing.assert_allclose(agg.mean(), [2.5, 2.0, 1.5])
    assert calls == []
