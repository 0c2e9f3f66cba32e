"""Downstream compression: the chain of served versions, against the exact global models."""

import hashlib

import numpy as np
import pytest

from fedlearn.core.codecs import decode_update, encode_update, read_header
from fedlearn.core.codecs.base import scale_dtype
from fedlearn.core.downstream import (
    ServedModel,
    apply_delta,
    check_download_codec,
    serve,
    unflatten,
)
from fedlearn.core.serialization import decode_weights, encode_weights
from fedlearn.core.types import TensorSpec
from fedlearn.errors import ConfigError, UpdateRejectedError

SPECS = (
    TensorSpec("conv.weight", (8, 1, 3, 3), "float32"),
    TensorSpec("conv.bias", (8,), "float32"),
    TensorSpec("fc.weight", (10, 40), "float32"),
)
SIZE = 8 * 9 + 8 + 10 * 40


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _int8_step(delta: bytes) -> float:
    """The quantisation step (the one per-vector scale) of an ``int8`` payload."""
    header = read_header(delta)
    sdt = scale_dtype(header.dtype)
    return float(np.frombuffer(delta, dtype=sdt, count=1, offset=header.body_offset)[0])


def _walk(rounds: int, *, seed: int = 0) -> list[np.ndarray]:
    """Global models ``0..rounds``: a float64 random walk, as aggregation might produce."""
    rng = np.random.default_rng(seed)
    models = [rng.normal(size=SIZE)]
    for _ in range(rounds):
        models.append(models[-1] + rng.normal(scale=0.01, size=SIZE))
    return models


def _serve(vector, number: int, *, codec: str | None = "int8", previous=None) -> ServedModel:
    return serve(vector, round_number=number, specs=SPECS, codec=codec, previous=previous)


def test_without_a_codec_the_served_version_is_the_exact_global_model():
    global_ = np.random.default_rng(1).normal(size=SIZE)  # float64, as aggregated

    served = _serve(global_, 3, codec=None, previous=_serve(np.zeros(SIZE), 2))

    expected = global_.astype(np.float32)
    assert served.vector.dtype == np.float32
    np.testing.assert_array_equal(served.vector, expected)
    assert served.payload == encode_weights(unflatten(expected, SPECS))
    assert served.sha256 == _sha(served.payload)
    assert (served.round_number, served.delta, served.base_sha256) == (3, None, "")


def test_with_a_codec_but_no_previous_version_the_global_model_is_served_whole():
    global_ = np.random.default_rng(2).normal(size=SIZE).astype(np.float32)

    served = _serve(global_, 0, previous=None)

    np.testing.assert_array_equal(served.vector, global_)
    assert served.delta is None and served.base_sha256 == ""
    decoded = decode_weights(served.payload)
    assert decoded.specs == SPECS
    np.testing.assert_array_equal(decoded.flat("float32"), global_)
    assert served.sha256 == _sha(served.payload)


def test_a_served_delta_rebuilds_the_served_version_bit_for_bit():
    models = _walk(1)
    previous = _serve(models[0], 0)

    served = _serve(models[1], 1, previous=previous)

    assert served.delta is not None and served.base_sha256 == previous.sha256
    rebuilt = apply_delta(previous.vector, served.delta)
    assert rebuilt.dtype == np.float32
    assert rebuilt.tobytes() == served.vector.tobytes()
    assert served.payload == encode_weights(unflatten(rebuilt, SPECS))
    assert served.sha256 == _sha(encode_weights(unflatten(rebuilt, SPECS)))
    assert read_header(served.delta).spec.name == "int8"
    assert len(served.delta) < len(served.payload) / 3.5


def test_the_served_chain_stays_within_one_step_of_the_global_model_while_naive_deltas_drift():
    models = _walk(20)
    served = _serve(models[0], 0)
    client = decode_weights(served.payload).flat("float32")  # rebuilt from deltas only
    naive = models[0].astype(np.float32)  # a client applying quantised global differences
    chain_errors, naive_errors, steps = [], [], []
    for r in range(1, len(models)):
        served = _serve(models[r], r, previous=served)
        assert served.delta is not None
        client = apply_delta(client, served.delta)
        assert _sha(encode_weights(unflatten(client, SPECS))) == served.sha256, r
        steps.append(_int8_step(served.delta))
        chain_errors.append(float(np.max(np.abs(client - models[r]))))
        naive_change = encode_update((models[r] - models[r - 1]).astype(np.float32), "int8")
        naive = apply_delta(naive, naive_change)
        naive_errors.append(float(np.max(np.abs(naive - models[r]))))

    for r, (error, step) in enumerate(zip(chain_errors, steps, strict=True), start=1):
        # half a step of nearest rounding, plus float32 rounding of ref_{r-1} + decoded
        assert error <= 0.51 * step, f"round {r}: {error} is over half the step {step}"
    # the chain's error does not grow: the last rounds are no worse than the first ones
    assert max(chain_errors[-5:]) <= 1.5 * max(chain_errors[:5])
    # the naive chain accumulates every round's rounding error
    assert naive_errors[-1] > 3 * steps[-1]
    assert naive_errors[-1] > 3 * chain_errors[-1]
    assert np.mean(naive_errors[-5:]) > 2 * np.mean(naive_errors[:5])


@pytest.mark.parametrize("previous_round", [4, 5], ids=["same round", "later round"])
def test_a_previous_version_that_is_not_older_gives_the_whole_model(previous_round):
    models = _walk(1)
    previous = _serve(models[0], previous_round)

    served = _serve(models[1], 4, previous=previous)

    assert served.delta is None and served.base_sha256 == ""
    np.testing.assert_array_equal(served.vector, models[1].astype(np.float32))


@pytest.mark.parametrize("codec", ["int8:round=stochastic", "topk:0.1+int8:round=stochastic"])
def test_download_codec_refuses_stochastic_rounding(codec):
    with pytest.raises(ConfigError, match="stochastic"):
        check_download_codec(codec)


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("int8", "int8"),
        ("int8:round=nearest", "int8"),
        ("int8:block=0", "int8"),
        ("int8:block=256", "int8:block=256"),
        ("topk:1e-1+int8", "topk:0.1+int8"),
        ("float16", "float16"),
    ],
)
def test_download_codec_names_are_canonicalised(given, canonical):
    assert check_download_codec(given) == canonical


def test_download_codec_refuses_unknown_codecs():
    with pytest.raises(ConfigError, match="unknown codec"):
        check_download_codec("gzip")


def test_apply_delta_rejects_a_delta_for_a_model_of_another_size():
    delta = encode_update(np.ones(SIZE - 1, np.float32), "int8")

    with pytest.raises(UpdateRejectedError, match="values"):
        apply_delta(np.zeros(SIZE, np.float32), delta)


def test_apply_delta_adds_the_decoded_delta_in_float32():
    base = np.random.default_rng(3).normal(size=SIZE).astype(np.float32)
    change = np.random.default_rng(4).normal(size=SIZE).astype(np.float32)
    delta = encode_update(change, "int8")

    out = apply_delta(base, delta)

    decoded = decode_update(delta, expected_size=SIZE, dtype="float32")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, base + decoded)
