import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedlearn.core.serialization import decode_weights, encode_weights, spec_of
from fedlearn.errors import UpdateRejectedError

dtypes = st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.uint8])


@st.composite
def weight_dicts(draw):
    n = draw(st.integers(min_value=0, max_value=5))
    out = {}
    for i in range(n):
        dtype = draw(dtypes)
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
        out[f"layer{i}.w"] = draw(hnp.arrays(dtype, shape))
    return out


@settings(max_examples=150, deadline=None)
@given(weight_dicts())
def test_encode_decode_round_trips_names_shapes_dtypes_and_values(weights):
    decoded = decode_weights(encode_weights(weights))
    assert list(decoded.tensors) == list(weights)
    assert decoded.specs == spec_of(weights)
    for name, arr in weights.items():
        np.testing.assert_array_equal(decoded.tensors[name], arr)
        assert decoded.tensors[name].dtype == arr.dtype


def test_flat_view_holds_all_float32_tensors_in_order():
    weights = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, np.float32)}
    flat = decode_weights(encode_weights(weights)).flat()
    np.testing.assert_array_equal(flat, [0, 1, 2, 3, 4, 5, 1, 1])


def test_big_endian_input_is_stored_little_endian():
    weights = {"w": np.arange(4, dtype=">f4")}
    decoded = decode_weights(encode_weights(weights))
    np.testing.assert_array_equal(decoded.tensors["w"], [0, 1, 2, 3])


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b[:3],
        lambda b: b"XXXX" + b[4:],
        lambda b: b[:-1],
        lambda b: b + b"\0",
        lambda b: b[:8] + b"{not json" + b[17:],
    ],
    ids=["too-short", "bad-magic", "truncated", "trailing-bytes", "bad-header"],
)
def test_decode_rejects_malformed_payloads(mangle):
    payload = encode_weights({"w": np.ones((3, 3), np.float32)})
    with pytest.raises(UpdateRejectedError) as info:
        decode_weights(mangle(payload))
    assert info.value.reason == "malformed_payload"


def test_decode_rejects_a_header_claiming_more_than_the_payload():
    payload = bytearray(encode_weights({"w": np.ones(2, np.float32)}))
    payload[4:8] = (10**6).to_bytes(4, "little")
    with pytest.raises(UpdateRejectedError):
        decode_weights(bytes(payload))


def test_strided_and_transposed_tensors_encode_as_their_contiguous_copies():
    base = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    views = {
        "channels_last": base.transpose(0, 2, 3, 1),
        "every_other": base[:, ::2],
        "fortran": np.asfortranarray(base[0]),
    }
    copies = {name: np.ascontiguousarray(view) for name, view in views.items()}
    assert encode_weights(views) == encode_weights(copies)
    decoded = decode_weights(encode_weights(views))
    for name, view in views.items():
        np.testing.assert_array_equal(decoded.tensors[name], view)
