import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedlearn.core.aggregation import BLOCK, StreamingFedAvg, weighted_mean
from fedlearn.errors import ConflictError, UpdateRejectedError

finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, width=32)


@st.composite
def client_updates(draw):
    size = draw(st.integers(min_value=1, max_value=64))
    n = draw(st.integers(min_value=1, max_value=12))
    vectors = [draw(hnp.arrays(np.float32, size, elements=finite)) for _ in range(n)]
    weights = [draw(st.integers(min_value=1, max_value=10_000)) for _ in range(n)]
    return vectors, weights


@settings(max_examples=200, deadline=None)
@given(client_updates())
def test_streaming_fedavg_equals_the_plain_weighted_mean(case):
    vectors, weights = case
    agg = StreamingFedAvg(vectors[0].size)
    for v, w in zip(vectors, weights, strict=True):
        agg.add(v, float(w))
    expected = weighted_mean(vectors, [float(w) for w in weights])
    np.testing.assert_allclose(agg.mean(), expected, rtol=1e-9, atol=1e-9)
    assert agg.count == len(vectors)
    assert agg.total_weight == sum(weights)


@pytest.mark.parametrize("size", [BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 17])
def test_streaming_fedavg_is_exact_across_block_boundaries(size):
    rng = np.random.default_rng(size)
    vectors = [rng.standard_normal(size).astype(np.float32) for _ in range(3)]
    weights = [3.0, 1.0, 250.0]
    agg = StreamingFedAvg(size)
    for v, w in zip(vectors, weights, strict=True):
        agg.add(v, w)
    np.testing.assert_allclose(agg.mean(), weighted_mean(vectors, weights), rtol=1e-12)


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


def test_accumulation_in_float64_keeps_small_updates_next_to_large_ones():
    agg = StreamingFedAvg(1)
    agg.add(np.array([1e8], np.float32), 1.0)
    for _ in range(1000):
        agg.add(np.array([1.0], np.float32), 1.0)
    expected = (1e8 + 1000.0) / 1001.0
    assert agg.mean()[0] == pytest.approx(expected, rel=1e-12)
