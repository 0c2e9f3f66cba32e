"""Error feedback: what a lossy codec does not send is delayed, never lost."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedlearn.core.codecs import (
    ErrorFeedbackState,
    decode_update,
    encode_update,
    encode_with_feedback,
)
from fedlearn.errors import UpdateRejectedError

LOSSY = [
    "float16",
    "int8",
    "int8:block=8,round=stochastic",
    "sign",
    "sign:block=8",
    "topk:0.1",
    "topk:0.1+int8",
    "topk:0.05+sign",
]
WIDTH = {np.float32: 32, np.float64: 64}


@st.composite
def update_and_residual(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    size = draw(st.integers(0, 150))
    elements = st.floats(-1e4, 1e4, width=WIDTH[dtype], allow_subnormal=False)
    update = draw(hnp.arrays(dtype, size, elements=elements))
    residual = draw(hnp.arrays(dtype, size, elements=elements))
    return update, residual


def ulp_tolerance(*arrays):
    peak = max((float(np.abs(a).max()) for a in arrays if a.size), default=0.0)
    return 4 * np.finfo(arrays[0].dtype).eps * peak


@settings(max_examples=120, deadline=None)
@given(update_and_residual(), st.sampled_from(LOSSY), st.integers(0, 2**32))
def test_sent_plus_new_residual_equals_update_plus_old_residual(case, name, seed):
    update, residual = case
    state = ErrorFeedbackState(residual.copy())
    payload, after = encode_with_feedback(update, state, name, rng=np.random.default_rng(seed))
    sent = decode_update(payload, expected_size=update.size)
    before = update + residual
    assert after.residual.dtype == update.dtype
    np.testing.assert_allclose(
        sent + after.residual, before, rtol=0, atol=ulp_tolerance(before, sent)
    )
    np.testing.assert_array_equal(state.residual, residual)  # the old state is untouched


def test_residual_of_top_k_is_exactly_what_was_not_sent():
    update = np.array([5.0, -0.1, 0.2, -7.0, 0.05], dtype=np.float32)
    payload, state = encode_with_feedback(update, ErrorFeedbackState.zeros(5), "topk:0.4")
    np.testing.assert_array_equal(decode_update(payload, expected_size=5), [5.0, 0, 0, -7.0, 0])
    np.testing.assert_array_equal(state.residual, np.float32([0, -0.1, 0.2, 0, 0.05]))
    # the next round adds the residual back, so small coordinates get their turn
    payload, state = encode_with_feedback(np.zeros(5, np.float32), state, "topk:0.4")
    np.testing.assert_array_equal(
        decode_update(payload, expected_size=5), np.float32([0, -0.1, 0.2, 0, 0])
    )


def test_over_many_rounds_everything_is_eventually_accounted_for():
    rng = np.random.default_rng(5)
    state = ErrorFeedbackState.zeros(500, dtype="float64")
    total_sent = np.zeros(500)
    total_update = np.zeros(500)
    for _ in range(30):
        update = rng.standard_normal(500)
        payload, state = encode_with_feedback(update, state, "topk:0.02+sign")
        total_sent += decode_update(payload, expected_size=500)
        total_update += update
    np.testing.assert_allclose(total_sent + state.residual, total_update, atol=1e-9)


def test_lossless_codec_leaves_no_residual():
    update = np.random.default_rng(1).standard_normal(64).astype(np.float32)
    _, state = encode_with_feedback(update, ErrorFeedbackState.zeros(64), "raw")
    assert not state.residual.any()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_state_dict_round_trips_the_residual(dtype):
    residual = np.random.default_rng(2).standard_normal(33).astype(dtype)
    state = ErrorFeedbackState(residual)
    saved = state.state_dict()
    assert set(saved) == {"residual"} and isinstance(saved["residual"], bytes)
    back = ErrorFeedbackState.from_state_dict(saved, expected_size=33)
    assert back.residual.dtype == residual.dtype
    np.testing.assert_array_equal(back.residual, residual)


def test_state_dict_of_another_model_size_is_refused():
    saved = ErrorFeedbackState.zeros(10).state_dict()
    with pytest.raises(UpdateRejectedError) as info:
        ErrorFeedbackState.from_state_dict(saved, expected_size=11)
    assert info.value.reason == "wrong_shape"


def test_state_dict_in_a_lossy_codec_is_refused():
    lossy = {"residual": encode_update(np.ones(4, np.float32), "int8")}
    with pytest.raises(ValueError, match="raw"):
        ErrorFeedbackState.from_state_dict(lossy, expected_size=4)


def test_residual_of_another_length_is_refused():
    with pytest.raises(ValueError, match="residual"):
        encode_with_feedback(np.ones(4, np.float32), ErrorFeedbackState.zeros(5), "int8")
