"""Low-rank (PowerSGD) codec: layout, exactness on low-rank matrices, warm starts, refusals."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlearn.core.codecs import (
    ErrorFeedbackState,
    LowRank,
    basis_of_payload,
    decode_update,
    encode_update,
    encode_with_feedback,
    parse_codec,
    read_header,
)
from fedlearn.core.codecs.lowrank import Segment, decode_layout, encode_layout
from fedlearn.errors import ConfigError, UpdateRejectedError

CNN_SHAPES = [(32, 1, 5, 5), (32,), (64, 32, 5, 5), (64,), (512, 3136), (512,), (10, 512), (10,)]
HEAD = struct.Struct("<4sBBHQQQ")


def _flat(arrays):
    return np.concatenate([a.ravel() for a in arrays]).astype(np.float32)


def test_names_parse_and_print_back():
    spec = parse_codec("lowrank:4+int8:block=256")
    assert spec.factorize == LowRank(4) and spec.sparsify is None
    assert spec.name == "lowrank:4+int8:block=256"
    assert parse_codec(spec.name) == spec
    assert parse_codec("lowrank:rank=2").name == "lowrank:2"


@pytest.mark.parametrize(
    "name", ["lowrank:0", "lowrank:65", "lowrank:1.5", "topk:0.1+lowrank:4", "lowrank:4+topk:0.1"]
)
def test_bad_lowrank_names_are_config_errors(name):
    with pytest.raises(ConfigError):
        parse_codec(name)


def test_cnn_layout_factors_the_matrices_and_keeps_vectors_dense():
    segments = LowRank(4).layout(CNN_SHAPES)
    assert [(s.rows, s.cols, s.rank) for s in segments] == [
        (32, 25, 4), (1, 32, 0), (64, 800, 4), (1, 64, 0), (512, 3136, 4), (1, 512, 0),
        (10, 512, 4), (1, 10, 0),
    ]  # fmt: skip
    assert sum(s.size for s in segments) == 1_663_370
    stored = sum(s.stored for s in segments)
    assert stored == 4 * (57 + 864 + 3648 + 522) + 32 + 64 + 512 + 10
    assert 1_663_370 / stored > 75  # before any value codec


def test_a_matrix_too_small_to_gain_is_sent_dense():
    (segment,) = LowRank(4).layout([(8, 100)])
    assert segment.rank == 0 and segment.stored == 800


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(9, 40),
    cols=st.integers(9, 40),
    true_rank=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_matrix_of_rank_at_most_r_comes_back_exactly(rows, cols, true_rank, seed):
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((rows, true_rank)) @ rng.standard_normal((true_rank, cols))
    bias = rng.standard_normal(rows)
    vector = _flat([matrix, bias])
    payload = encode_update(vector, "lowrank:4", rng=rng, shapes=[(rows, cols), (rows,)])
    decoded = decode_update(payload, expected_size=vector.size)
    scale = float(np.abs(vector).max())
    np.testing.assert_allclose(decoded, vector, atol=1e-4 * scale, rtol=0)


def test_payload_is_smaller_by_the_factor_the_layout_promises():
    rng = np.random.default_rng(0)
    vector = rng.standard_normal(512 * 3136 + 512).astype(np.float32)
    payload = encode_update(vector, "lowrank:4", rng=rng, shapes=[(512, 3136), (512,)])
    header = read_header(payload)
    assert header.stored == 4 * (512 + 3136) + 512
    assert len(payload) == header.body_offset + header.index_nbytes + 4 * header.stored


def test_warm_start_from_the_last_basis_captures_more_of_the_same_matrix():
    rng = np.random.default_rng(1)
    spectrum = 2.0 ** -np.arange(40)
    left, _ = np.linalg.qr(rng.standard_normal((60, 40)))
    right, _ = np.linalg.qr(rng.standard_normal((80, 40)))
    vector = ((left * spectrum) @ right.T).ravel().astype(np.float32)
    shapes = [(60, 80)]
    cold = encode_update(vector, "lowrank:2", rng=np.random.default_rng(2), shapes=shapes)
    basis = basis_of_payload(cold)
    assert basis is not None and basis.size == 80 * 2
    warm = encode_update(vector, "lowrank:2", rng=rng, shapes=shapes, basis=basis)
    error_cold = np.linalg.norm(decode_update(cold, expected_size=vector.size) - vector)
    error_warm = np.linalg.norm(decode_update(warm, expected_size=vector.size) - vector)
    assert error_warm < error_cold


def test_error_feedback_keeps_what_the_factors_missed_and_the_basis():
    rng = np.random.default_rng(3)
    shapes = [(40, 50), (40,)]
    size = 40 * 50 + 40
    state = ErrorFeedbackState.zeros(size)
    for _ in range(3):
        update = rng.standard_normal(size).astype(np.float32)
        payload, new = encode_with_feedback(update, state, "lowrank:3", rng=rng, shapes=shapes)
        sent = decode_update(payload, expected_size=size)
        np.testing.assert_allclose(sent + new.residual, update + state.residual, atol=1e-5)
        assert new.basis is not None and new.basis.size == 50 * 3
        state = new
    restored = ErrorFeedbackState.from_state_dict(state.state_dict(), expected_size=size)
    np.testing.assert_array_equal(restored.residual, state.residual)
    assert restored.basis is not None
    np.testing.assert_array_equal(restored.basis, state.basis)


def test_lowrank_needs_shapes_and_an_rng():
    vector = np.ones(20 * 20, dtype=np.float32)
    with pytest.raises(ValueError, match="shapes"):
        encode_update(vector, "lowrank:2", rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="shapes"):
        encode_update(vector, "lowrank:2", rng=np.random.default_rng(0), shapes=[(20, 19)])
    with pytest.raises(ValueError, match="rng"):
        encode_update(vector, "lowrank:2", shapes=[(20, 20)])


def test_other_codecs_have_no_basis():
    payload = encode_update(np.ones(100, np.float32), "topk:0.1+int8")
    assert basis_of_payload(payload) is None


# -- malformed payloads ----------------------------------------------------------------


def _payload(name: str, layout: bytes, values: np.ndarray, *, n: int, k: int | None = None):
    body = values.astype("<f4").tobytes()
    k = values.size if k is None else k
    return HEAD.pack(b"FLC1", 1, 2, len(name), n, k, len(layout)) + name.encode() + layout + body


def _good():
    layout = encode_layout([Segment(20, 20, 2), Segment(1, 5, 0)])
    return layout, np.ones(2 * 40 + 5, np.float32), 405


def test_a_well_formed_handmade_payload_decodes():
    layout, values, n = _good()
    decoded = decode_update(_payload("lowrank:2", layout, values, n=n), expected_size=n)
    np.testing.assert_allclose(decoded[:400], 2.0)  # two ones-columns: P Q^T = 2
    np.testing.assert_allclose(decoded[400:], 1.0)


@pytest.mark.parametrize(
    ("layout", "n", "k", "message"),
    [
        (encode_layout([Segment(20, 20, 2)]), 405, 80, "cover 400"),
        (encode_layout([Segment(20, 20, 2), Segment(1, 10, 0)]), 405, 90, "more than"),
        (encode_layout([Segment(20, 20, 3), Segment(1, 5, 0)]), 405, 125, "rank 3"),
        (encode_layout([Segment(4, 100, 2), Segment(1, 5, 0)]), 405, 213, "cannot be factored"),
        (encode_layout([Segment(20, 20, 2), Segment(1, 5, 0)]), 405, 86, "stores 85"),
        (encode_layout([Segment(20, 20, 2), Segment(1, 5, 0)])[:-1], 405, 85, "segments"),
        (b"\x02\x14\x14\x02\x01\x05", 405, 85, "segments"),
        (b"\x02\x94\x00\x14\x02\x01\x05\x00", 405, 85, "shortest"),
        (b"\x02\x14\x14\x82", 405, 85, "inside a varint"),
        (encode_layout([Segment(0, 5, 0)]), 0, 0, "0 x 5"),
        (b"", 405, 85, "segments"),
    ],
    ids=[
        "short_cover",
        "over_cover",
        "rank_above_codec",
        "rank_too_big_for_matrix",
        "stored_mismatch",
        "truncated_layout",
        "count_mismatch",
        "overlong_varint",
        "cut_varint",
        "empty_segment",
        "no_layout",
    ],
)
def test_malformed_layouts_are_refused_before_decoding(layout, n, k, message):
    values = np.ones(k, np.float32)
    with pytest.raises(UpdateRejectedError, match=message) as info:
        decode_update(_payload("lowrank:2", layout, values, n=n, k=k), expected_size=n)
    assert info.value.reason == "malformed_payload"


def test_a_payload_cut_in_its_values_is_refused():
    layout, values, n = _good()
    payload = _payload("lowrank:2", layout, values, n=n)
    with pytest.raises(UpdateRejectedError, match="truncated"):
        decode_update(payload[:-3], expected_size=n)


def test_a_payload_for_another_model_size_is_wrong_shape():
    layout, values, n = _good()
    with pytest.raises(UpdateRejectedError) as info:
        decode_update(_payload("lowrank:2", layout, values, n=n), expected_size=n + 1)
    assert info.value.reason == "wrong_shape"


def test_factors_that_overflow_to_infinity_are_non_finite():
    layout, values, n = _good()
    values[:80] = 3e38
    with pytest.raises(UpdateRejectedError) as info:
        decode_update(_payload("lowrank:2", layout, values, n=n), expected_size=n)
    assert info.value.reason == "non_finite"


def test_decode_layout_bounds_the_section_length():
    with pytest.raises(UpdateRejectedError):
        decode_layout(memoryview(b"\x01" * 3_000_000), size=10, max_rank=4)


def test_layout_round_trips():
    segments = LowRank(8).layout(CNN_SHAPES)
    assert decode_layout(memoryview(encode_layout(segments)), size=1_663_370, max_rank=8) == (
        segments
    )
    assert math.prod(CNN_SHAPES[4]) == 512 * 3136
