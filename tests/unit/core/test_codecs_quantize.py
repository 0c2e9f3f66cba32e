"""Value codecs (float16, int8, sign) against slow, obvious references."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedlearn.core.codecs import decode_update, encode_update, read_header
from fedlearn.core.codecs.base import block_count, scale_dtype

WIDTH = {np.float16: 16, np.float32: 32, np.float64: 64}
BOUND = {np.float16: 8192.0, np.float32: 2.0**100, np.float64: 2.0**600}


@st.composite
def vectors(draw, dtypes=(np.float16, np.float32, np.float64), max_size=300):
    dtype = draw(st.sampled_from(dtypes))
    bound = BOUND[dtype]
    elements = st.floats(-bound, bound, width=WIDTH[dtype], allow_subnormal=False)
    size = draw(st.integers(0, max_size))
    return draw(hnp.arrays(dtype, size, elements=elements))


blocks = st.sampled_from([0, 1, 3, 8, 64])


def stored_scales(payload, block):
    header = read_header(payload)
    sdt = scale_dtype(header.dtype)
    start = header.body_offset + header.index_nbytes
    count = block_count(header.stored, block)
    return np.frombuffer(payload, dtype=sdt, count=count, offset=start)


def block_of(i, block):
    return 0 if block == 0 else i // block


@settings(max_examples=120, deadline=None)
@given(vectors(), blocks)
def test_int8_error_is_at_most_half_a_step_with_nearest_rounding(x, block):
    name = f"int8:block={block}" if block else "int8"
    payload = encode_update(x, name)
    y = decode_update(payload, expected_size=x.size)
    scales = stored_scales(payload, block).astype(np.float64)
    eps = np.finfo(x.dtype).eps
    for i in range(x.size):
        step = scales[block_of(i, block)]
        # half a step, plus the rounding of q * step in the vector's own dtype
        tolerance = step / 2 + 128 * step * eps
        assert abs(float(x[i]) - float(y[i])) <= tolerance, (i, x[i], y[i], step)


@settings(max_examples=80, deadline=None)
@given(vectors(dtypes=(np.float32, np.float64)), blocks)
def test_int8_step_is_the_block_peak_over_127(x, block):
    payload = encode_update(x, f"int8:block={block}")
    stored = stored_scales(payload, block)
    scales = stored.astype(np.float64)
    ulps = np.spacing(np.abs(stored)).astype(np.float64)  # the scale's own precision
    size = block or max(x.size, 1)
    for b, step in enumerate(scales):
        peak = float(np.abs(x[b * size : (b + 1) * size].astype(np.float64)).max())
        assert step * 127.5 >= peak  # so rounding never has to clip a value
        # rounded up by at most one step of the scale's dtype (coarse for subnormal scales)
        assert step * 127 <= peak * (1 + 1e-6) + 127 * ulps[b] + 1e-300


@settings(max_examples=60, deadline=None)
@given(vectors(), blocks, st.integers(0, 2**32))
def test_int8_stochastic_rounding_stays_within_one_step(x, block, seed):
    name = f"int8:block={block},round=stochastic"
    payload = encode_update(x, name, rng=np.random.default_rng(seed))
    y = decode_update(payload, expected_size=x.size)
    scales = stored_scales(payload, block).astype(np.float64)
    eps = np.finfo(x.dtype).eps
    for i in range(x.size):
        step = scales[block_of(i, block)]
        assert abs(float(x[i]) - float(y[i])) <= step * (1 + 128 * eps)


def test_int8_stochastic_rounding_is_unbiased():
    x = np.array([0.3, -0.71, 1.0, 0.05, -0.5], dtype=np.float64)
    rng = np.random.default_rng(7)
    decoded = [
        decode_update(encode_update(x, "int8:round=stochastic", rng=rng), expected_size=5)
        for _ in range(4000)
    ]
    step = 1.0 / 127
    # the standard error of a mean of 4000 draws is below step / 2 / sqrt(4000)
    np.testing.assert_allclose(np.mean(decoded, axis=0), x, atol=step / 20)
    nearest = decode_update(encode_update(x, "int8"), expected_size=5)
    assert not np.allclose(np.mean(decoded, axis=0), nearest, atol=step / 20)


def test_stochastic_int8_without_rng_is_refused():
    with pytest.raises(ValueError, match="rng"):
        encode_update(np.ones(3, np.float32), "int8:round=stochastic")


def test_int8_refuses_values_it_cannot_scale():
    with pytest.raises(ValueError, match="int8"):
        encode_update(np.array([3e38], np.float32), "int8")


@settings(max_examples=80, deadline=None)
@given(vectors())
def test_float16_matches_a_saturating_cast(x):
    y = decode_update(encode_update(x, "float16"), expected_size=x.size)
    reference = np.array(
        [np.float16(min(max(float(v), -65504.0), 65504.0)) for v in x], dtype=np.float16
    )
    assert y.dtype == x.dtype
    np.testing.assert_array_equal(y, reference.astype(x.dtype))


def test_float16_saturates_instead_of_overflowing():
    y = decode_update(encode_update(np.array([1e6, -1e6]), "float16"), expected_size=2)
    np.testing.assert_array_equal(y, [65504.0, -65504.0])


@settings(max_examples=80, deadline=None)
@given(vectors(), blocks)
def test_sign_sends_the_block_mean_magnitude_with_each_sign(x, block):
    y = decode_update(encode_update(x, f"sign:block={block}"), expected_size=x.size)
    size = block or max(x.size, 1)
    for start in range(0, x.size, size):
        chunk = x[start : start + size].astype(np.float64)
        mean = sum(abs(float(v)) for v in chunk) / len(chunk)
        for j, v in enumerate(chunk):
            expected = -mean if v < 0 else mean
            got = float(y[start + j])
            assert got == pytest.approx(expected, rel=2e-3 if x.dtype == np.float16 else 1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("block", [0, 1])
def test_int8_keeps_half_a_step_for_subnormal_values(dtype, block):
    smallest = float(np.finfo(dtype).smallest_subnormal)
    x = np.array([2, -5, 7, 1000, -3], dtype=dtype) * smallest
    payload = encode_update(x, f"int8:block={block}")
    y = decode_update(payload, expected_size=x.size)
    steps = stored_scales(payload, block).astype(np.float64)
    assert (steps > 0).all()  # peak / 127 underflows: the step must be rounded up
    for i in range(x.size):
        step = steps[block_of(i, block)]
        assert abs(float(x[i]) - float(y[i])) <= step / 2, (i, x[i], y[i], step)
