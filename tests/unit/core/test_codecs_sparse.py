"""Top-k selection and the varint+zlib index code."""

import itertools
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedlearn.core.codecs import TopK, decode_update, encode_update
from fedlearn.core.codecs.sparse import decode_indices, encode_indices, topk_indices
from fedlearn.errors import ConfigError, UpdateRejectedError

finite32 = st.floats(-1e6, 1e6, width=32, allow_subnormal=False)
vectors32 = hnp.arrays(np.float32, st.integers(0, 400), elements=finite32)
fractions = st.sampled_from([0.001, 0.01, 0.1, 0.25, 0.5, 1.0])


def varint_reference(value):
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


@settings(max_examples=150, deadline=None)
@given(vectors32, st.integers(0, 400))
def test_topk_indices_keep_exactly_the_k_largest_magnitudes(x, k):
    k = min(k, x.size)
    picked = topk_indices(x, k)
    assert picked.size == k
    assert np.all(np.diff(picked) > 0)
    kept = sorted(abs(float(v)) for v in x[picked])
    largest = sorted(abs(float(v)) for v in x)[x.size - k :]
    assert kept == largest


@settings(max_examples=100, deadline=None)
@given(vectors32, fractions)
def test_topk_payload_decodes_to_the_largest_entries_and_zeros(x, fraction):
    y = decode_update(encode_update(x, f"topk:{fraction}"), expected_size=x.size)
    k = TopK(fraction).count(x.size)
    assert y.shape == x.shape and y.dtype == x.dtype
    sent = np.flatnonzero(y)
    np.testing.assert_array_equal(y[sent], x[sent])
    assert sent.size <= k
    largest = sorted((abs(float(v)) for v in x), reverse=True)[:k]
    assert sorted((abs(float(v)) for v in y), reverse=True)[:k] == largest


@pytest.mark.parametrize(
    ("fraction", "size", "k"),
    [(0.01, 1_663_370, 16_634), (0.5, 3, 2), (1e-9, 10, 1), (1.0, 7, 7), (0.3, 0, 0)],
)
def test_topk_count_is_the_rounded_up_fraction_and_at_least_one(fraction, size, k):
    assert TopK(fraction).count(size) == k


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan"), float("inf")])
def test_topk_rejects_fractions_outside_zero_one(fraction):
    with pytest.raises(ConfigError):
        TopK(fraction)


index_sets = st.integers(1, 5000).flatmap(
    lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1), max_size=min(n, 300)))
)


@settings(max_examples=150, deadline=None)
@given(index_sets)
def test_indices_round_trip_through_varint_gaps(case):
    size, chosen = case
    indices = np.array(sorted(chosen), dtype=np.int64)
    data = encode_indices(indices)
    back = decode_indices(memoryview(data), count=indices.size, size=size)
    np.testing.assert_array_equal(back, indices)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 2**31 - 2), min_size=1, max_size=50, unique=True))
def test_index_bytes_are_zlib_over_leb128_gaps_minus_one(chosen):
    indices = sorted(chosen)
    gaps = [indices[0]] + [b - a - 1 for a, b in itertools.pairwise(indices)]
    raw = b"".join(varint_reference(g) for g in gaps)
    data = encode_indices(np.array(indices, dtype=np.int64))
    assert zlib.decompress(data) == raw
    back = decode_indices(memoryview(data), count=len(indices), size=2**31 - 1)
    assert back.tolist() == indices


def test_encode_indices_refuses_unsorted_or_repeated_indices():
    for bad in ([3, 1], [2, 2], [-1, 4]):
        with pytest.raises(ValueError):
            encode_indices(np.array(bad, dtype=np.int64))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40), st.integers(0, 12), st.integers(1, 300))
def test_any_index_bytes_decode_to_increasing_in_range_indices_or_raise(raw, count, size):
    try:
        back = decode_indices(memoryview(zlib.compress(raw)), count=count, size=size)
    except UpdateRejectedError as exc:
        assert exc.reason == "malformed_payload"
        return
    assert back.size == count
    assert np.all(np.diff(back) > 0)
    assert count == 0 or (back[0] >= 0 and back[-1] < size)
