import numpy as np
import pytest

from fedlearn.core.codecs import decode_update, encode_update
from fedlearn.core.serialization import encode_weights, spec_of
from fedlearn.core.update_payload import UNCOMPRESSED, decode_update_payload
from fedlearn.errors import UpdateRejectedError


def _model(rng, dtype=np.float32):
    return {
        "conv.weight": rng.standard_normal((4, 1, 3, 3)).astype(dtype),
        "fc.bias": rng.standard_normal(10).astype(dtype),
    }


def _specs(weights):
    return spec_of(weights)


def _flat(weights):
    return np.concatenate([a.ravel() for a in weights.values()]).astype(np.float32)


def test_uncompressed_updates_decode_as_raw_with_their_values_in_model_order():
    weights = _model(np.random.default_rng(0))
    decoded = decode_update_payload(encode_weights(weights), _specs(weights))
    assert decoded.codec == UNCOMPRESSED
    np.testing.assert_array_equal(decoded.update.vector, _flat(weights))
    assert decoded.update.norm == pytest.approx(float(np.linalg.norm(_flat(weights))))
    assert 0.5 < decoded.compression_ratio <= 1.0  # the FLW1 header costs a little


def test_compressed_updates_decode_to_what_the_codec_sends_and_record_its_ratio():
    rng = np.random.default_rng(1)
    weights = _model(rng)
    payload = encode_update(_flat(weights), "topk:0.1+int8")
    decoded = decode_update_payload(payload, _specs(weights))
    assert decoded.codec == "topk:0.1+int8"
    expected = decode_update(payload, expected_size=_flat(weights).size, dtype="float32")
    np.testing.assert_array_equal(decoded.update.vector, expected)
    assert decoded.compression_ratio == pytest.approx(4 * _flat(weights).size / len(payload))
    assert decoded.compression_ratio > 1


def test_a_compressed_update_of_another_model_size_is_rejected_before_decoding():
    weights = _model(np.random.default_rng(2))
    payload = encode_update(np.ones(_flat(weights).size + 1, np.float32), "int8")
    with pytest.raises(UpdateRejectedError) as err:
        decode_update_payload(payload, _specs(weights))
    assert err.value.reason == "wrong_shape"


def test_a_truncated_compressed_update_is_rejected():
    weights = _model(np.random.default_rng(3))
    payload = encode_update(_flat(weights), "topk:0.2+int8")
    with pytest.raises(UpdateRejectedError):
        decode_update_payload(payload[:-3], _specs(weights))


def test_compressed_updates_need_a_float32_model():
    weights = _model(np.random.default_rng(4), dtype=np.float64)
    payload = encode_update(_flat(weights), "float16")
    with pytest.raises(UpdateRejectedError) as err:
        decode_update_payload(payload, _specs(weights))
    assert err.value.reason == "wrong_dtype"
