"""Malformed payloads are rejected with a reason, never decoded into a wrong vector."""

import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlearn.core.codecs import decode_update, encode_update, read_header
from fedlearn.errors import UpdateRejectedError

HEAD = struct.Struct("<4sBBHQQQ")
N = 40


def build(name, body, *, n=N, k=None, index=b"", dtype=2, version=1, magic=b"FLC1"):
    name = name.encode() if isinstance(name, str) else name
    k = n if k is None else k
    return HEAD.pack(magic, version, dtype, len(name), n, k, len(index)) + name + index + body


def varint(value):
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def index_bytes(gaps):
    return zlib.compress(b"".join(varint(g) for g in gaps))


def int8_body(scale, codes):
    return np.float32(scale).tobytes() + np.asarray(codes, np.int8).tobytes()


def reason_of(payload, expected_size=N, **kwargs):
    with pytest.raises(UpdateRejectedError) as info:
        decode_update(payload, expected_size=expected_size, **kwargs)
    return info.value.reason


GOOD = build("int8", int8_body(0.5, range(N)))
FOUR_SPARSE = index_bytes([1, 2, 3, 4])  # indices 1, 4, 8, 13


def test_hand_built_payloads_decode():
    # guards the helpers below: without a mangling they produce valid payloads
    np.testing.assert_array_equal(decode_update(GOOD, expected_size=N), 0.5 * np.arange(N))
    sparse = build("topk:0.1", np.arange(4, dtype="<f4").tobytes(), k=4, index=FOUR_SPARSE)
    y = decode_update(sparse, expected_size=N)
    assert np.flatnonzero(y).tolist() == [4, 8, 13] and y[1] == 0.0


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (GOOD[:20], "malformed_payload"),
        (GOOD[:-1], "malformed_payload"),
        (GOOD + b"\0", "malformed_payload"),
        (b"FLW1" + GOOD[4:], "malformed_payload"),
        (build("int8", int8_body(0.5, range(N)), version=2), "malformed_payload"),
        (build("int8", int8_body(0.5, range(N)), dtype=9), "malformed_payload"),
        (build("zstd", b"\0" * N), "unknown_codec"),
        (build("int8+topk:0.5", b""), "unknown_codec"),
        (build(b"int\xff", b""), "malformed_payload"),
        (build("", b""), "malformed_payload"),
        (build("raw", b"\0" * 4 * N, k=N - 1), "malformed_payload"),
        (build("raw", b"\0" * 4 * N, index=b"xx"), "malformed_payload"),
        (build("raw", b"", n=2**40), "malformed_payload"),
    ],
    ids=[
        "short-header",
        "truncated",
        "trailing-byte",
        "bad-magic",
        "bad-version",
        "bad-dtype",
        "unknown-codec",
        "bad-composition",
        "non-ascii-name",
        "empty-name",
        "stored-count-mismatch",
        "dense-with-index",
        "too-long-vector",
    ],
)
def test_decode_rejects_malformed_headers(payload, reason):
    assert reason_of(payload) == reason


def test_decode_rejects_a_name_length_past_the_payload():
    payload = bytearray(GOOD)
    struct.pack_into("<H", payload, 6, 300)
    assert reason_of(bytes(payload)) == "malformed_payload"


def test_decode_rejects_a_vector_of_another_length():
    assert reason_of(GOOD, expected_size=N + 1) == "wrong_shape"


def test_decode_rejects_another_dtype_when_one_is_expected():
    assert reason_of(GOOD, dtype="float64") == "wrong_dtype"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (int8_body(np.nan, range(N)), "non_finite"),
        (int8_body(np.inf, range(N)), "non_finite"),
        (int8_body(-1.0, range(N)), "non_finite"),
        (int8_body(3e38, [127] * N), "non_finite"),
        (int8_body(0.5, [-128] + [0] * (N - 1)), "malformed_payload"),
    ],
    ids=["nan-scale", "inf-scale", "negative-scale", "overflowing-scale", "code-minus-128"],
)
def test_decode_rejects_bad_int8_content(body, reason):
    assert reason_of(build("int8", body)) == reason


@pytest.mark.parametrize(
    ("name", "body", "reason"),
    [
        ("raw", np.array([1.0] * (N - 1) + [np.nan], "<f4").tobytes(), "non_finite"),
        ("float16", np.array([np.inf] + [0.0] * (N - 1), "<f2").tobytes(), "non_finite"),
        ("sign", np.float32(np.nan).tobytes() + b"\0" * 5, "non_finite"),
        ("sign", np.float32(1.0).tobytes() + b"\0" * 4 + b"\x40", "malformed_payload"),
        ("sign:block=3", np.float32(1.0).tobytes() * 13 + b"\0" * 4 + b"\x80", "malformed_payload"),
    ],
    ids=["raw-nan", "float16-inf", "sign-nan-scale", "sign-padding-bit", "sign-padding-high"],
)
def test_decode_rejects_bad_values(name, body, reason):
    n = 38 if name.startswith("sign") else N
    assert reason_of(build(name, body, n=n), expected_size=n) == reason


def sparse(index, k=4):
    return build("topk:0.1", np.ones(k, "<f4").tobytes(), k=k, index=index)


@pytest.mark.parametrize(
    "index",
    [
        index_bytes([1, 2, 3, 31]),  # indices 1, 4, 8, 40: the last one == n
        index_bytes([45, 0, 0, 0]),  # first index past the end
        index_bytes([1, 2, 3]),  # three indices for four values
        index_bytes([1, 2, 3, 4, 5]),  # five indices for four values
        zlib.compress(b"\x01\x02\x03\x84"),  # last varint unfinished
        zlib.compress(b"\x01\x02\x03\x80\x00"),  # overlong varint
        zlib.compress(b"\x01\x02\x03\x80\x80\x80\x80\x80\x00"),  # six-byte varint
        b"not zlib at all",
        FOUR_SPARSE[:-3],  # truncated zlib stream
        FOUR_SPARSE + b"x",  # data after the stream
        zlib.compress(b"\x00" * 10_000),  # inflates past what four indices need
    ],
    ids=[
        "index-equals-n",
        "index-past-n",
        "too-few-indices",
        "too-many-indices",
        "unfinished-varint",
        "overlong-varint",
        "six-byte-varint",
        "not-zlib",
        "truncated-zlib",
        "data-after-zlib",
        "zlib-bomb",
    ],
)
def test_decode_rejects_bad_index_sections(index):
    assert reason_of(sparse(index)) == "malformed_payload"


def test_sparse_stored_count_must_match_the_fraction():
    # topk:0.1 of 40 values stores 4; a header claiming 5 is rejected up front
    payload = build("topk:0.1", np.ones(5, "<f4").tobytes(), k=5, index=index_bytes([0] * 5))
    assert reason_of(payload) == "malformed_payload"


FUZZ_CODECS = ["raw", "float16", "int8:block=7", "sign:block=7", "topk:0.2+int8", "topk:0.2+sign"]
FUZZ_VECTOR = np.random.default_rng(11).standard_normal(N).astype(np.float32)
FUZZ_PAYLOADS = {name: encode_update(FUZZ_VECTOR, name) for name in FUZZ_CODECS}


def decode_or_reject(payload):
    """The decoder's contract: a finite vector of the right shape, or a rejection."""
    try:
        y = decode_update(payload, expected_size=N, dtype="float32")
    except UpdateRejectedError as exc:
        assert exc.reason in {
            "malformed_payload",
            "unknown_codec",
            "wrong_shape",
            "wrong_dtype",
            "non_finite",
        }
        return None
    assert y.shape == (N,)
    assert y.dtype == np.float32
    assert np.isfinite(y).all()
    return y


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(FUZZ_CODECS), st.data())
def test_truncated_payloads_are_always_rejected(name, data):
    payload = FUZZ_PAYLOADS[name]
    cut = data.draw(st.integers(0, len(payload) - 1))
    assert decode_or_reject(payload[:cut]) is None


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(FUZZ_CODECS), st.data())
def test_bit_flipped_payloads_decode_to_right_shaped_finite_vectors_or_raise(name, data):
    payload = bytearray(FUZZ_PAYLOADS[name])
    for _ in range(data.draw(st.integers(1, 3))):
        bit = data.draw(st.integers(0, 8 * len(payload) - 1))
        payload[bit // 8] ^= 1 << (bit % 8)
    decode_or_reject(bytes(payload))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(FUZZ_CODECS), st.binary(max_size=64), st.data())
def test_payloads_with_spliced_garbage_decode_or_raise(name, garbage, data):
    payload = FUZZ_PAYLOADS[name]
    at = data.draw(st.integers(0, len(payload)))
    decode_or_reject(payload[:at] + garbage + payload[at:])
    decode_or_reject(payload[:at] + garbage + payload[at + len(garbage) :])


def test_read_header_checks_length_before_decoding():
    payload = FUZZ_PAYLOADS["topk:0.2+int8"]
    header = read_header(payload)
    assert (header.size, header.stored, header.dtype.name) == (N, 8, "float32")
    with pytest.raises(UpdateRejectedError):
        read_header(payload[:-1])
