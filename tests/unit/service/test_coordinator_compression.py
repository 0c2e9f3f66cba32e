"""Compressed (``FLC1``) updates at the coordinator: accepted in the run's codec or raw,
refused in any other codec or when malformed (changing nothing), and rebuilt on restart."""

from __future__ import annotations

import struct
import zlib
from dataclasses import replace

import numpy as np
import pytest
from service_world import World, submission

from fedlearn.core.codecs import decode_update, encode_update
from fedlearn.core.serialization import encode_weights
from fedlearn.core.types import RoundConfig, RoundStatus
from fedlearn.errors import UpdateRejectedError
from fedlearn.service.messages import UpdateSubmission

CODEC = "topk:0.05+int8"
MODEL = {"w": np.zeros((40, 25), np.float32), "b": np.ones(25, np.float32)}
SIZE = sum(v.size for v in MODEL.values())  # 1,025 values
RAW_NBYTES = 4 * SIZE
BASE = np.concatenate([v.ravel() for v in MODEL.values()])

# FLC1 header: magic, version, dtype, name length, n, k, index bytes (see codecs.wire)
HEAD = struct.Struct("<4sBBHQQQ")


def CompressedWorld(**config) -> World:
    """The fake world with a model big enough for top-k to make updates smaller."""
    return World(initial=MODEL, **config)


def _world(codec: str = CODEC, **config: object) -> World:
    round_config = RoundConfig(local_epochs=1, batch_size=8, learning_rate=0.1, codec=codec)
    config.setdefault("min_clients", 3)
    return CompressedWorld(round_config=round_config, **config)


def _vector(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 0.1, SIZE).astype(np.float32)


def _tensors(vector: np.ndarray) -> dict[str, np.ndarray]:
    return {"w": vector[:1000].reshape(40, 25), "b": vector[1000:]}


def _compressed(
    client: str, payload: bytes, *, samples: int = 10, update_id: str | None = None
) -> UpdateSubmission:
    return replace(
        submission(client, 1, MODEL, samples=samples, update_id=update_id), payload=payload
    )


def _sent(payload: bytes) -> np.ndarray:
    """What the coordinator should fold in for ``payload``."""
    return decode_update(payload, expected_size=SIZE).astype(np.float64)


def _global(world: World) -> np.ndarray:
    return np.concatenate([v.ravel() for v in world.coordinator.global_weights().values()])


def test_update_in_the_runs_codec_is_accepted_and_recorded_with_codec_and_ratio():
    world = _world()
    world.register("a", "b", "c")
    payload = encode_update(_vector(1), CODEC)

    ack = world.coordinator.submit_update(_compressed("a", payload))

    assert not ack.duplicate and ack.updates_received == 1
    (stored,) = world.runs.list_updates("r", 1)
    assert stored.codec == CODEC
    assert stored.compression_ratio == pytest.approx(RAW_NBYTES / len(payload))
    assert stored.compression_ratio > 10
    assert stored.wire_bytes == len(payload)
    assert world.models.get(stored.model_update_path) == payload


def test_global_model_is_base_plus_fedavg_of_the_decoded_compressed_updates():
    world = _world()
    world.register("a", "b", "c")
    payloads = [encode_update(_vector(seed), CODEC) for seed in (1, 2, 3)]
    samples = [10, 30, 60]

    for client, payload, n in zip("abc", payloads, samples, strict=True):
        world.coordinator.submit_update(_compressed(client, payload, samples=n))

    expected = BASE + sum(n * _sent(p) for p, n in zip(payloads, samples, strict=True)) / 100
    np.testing.assert_allclose(_global(world), expected, rtol=1e-6, atol=1e-7)
    # the decoded vectors are sparse: most of the model did not move this round
    assert np.count_nonzero(_global(world) - BASE) <= 3 * 52


def test_closed_round_records_sent_bytes_and_what_they_would_have_been_uncompressed():
    world = _world()
    world.register("a", "b", "c")
    payloads = [encode_update(_vector(seed), CODEC) for seed in (1, 2)]
    raw = encode_weights(_tensors(_vector(3)))

    world.coordinator.submit_update(_compressed("a", payloads[0]))
    world.coordinator.submit_update(_compressed("b", payloads[1]))
    world.coordinator.submit_update(_compressed("c", raw))

    round1 = world.runs.get_round("r", 1)
    assert round1.status is RoundStatus.COMPLETED
    assert round1.config.codec == CODEC
    assert round1.bytes_up == len(payloads[0]) + len(payloads[1]) + len(raw)
    assert round1.raw_bytes_up == 3 * RAW_NBYTES
    assert round1.raw_bytes_up > 2 * round1.bytes_up


def test_uncompressed_update_is_accepted_in_a_compressed_run():
    world = _world()
    world.register("a", "b", "c")
    raw = encode_weights(_tensors(_vector(1)))

    world.coordinator.submit_update(_compressed("a", raw))

    (stored,) = world.runs.list_updates("r", 1)
    assert stored.codec == "raw"
    assert stored.compression_ratio == pytest.approx(RAW_NBYTES / len(raw))
    assert world.runs.list_rejections("r", 1) == []


@pytest.mark.parametrize(
    ("run_codec", "sent_codec"),
    [
        (CODEC, "float16"),
        (CODEC, "int8"),
        (CODEC, "topk:0.1+int8"),
        (CODEC, "topk:0.05"),
        ("raw", CODEC),
        ("float16", "int8"),
    ],
)
def test_update_in_another_codec_is_rejected_as_codec_not_allowed(run_codec, sent_codec):
    world = _world(run_codec)
    world.register("a", "b", "c")
    sub = _compressed("a", encode_update(_vector(1), sent_codec))

    with pytest.raises(UpdateRejectedError) as info:
        world.coordinator.submit_update(sub)

    assert info.value.reason == "codec_not_allowed"
    assert world.runs.list_updates("r", 1) == []
    (rejection,) = world.runs.list_rejections("r", 1)
    assert (rejection.client_id, rejection.update_id) == ("a", sub.update_id)
    assert rejection.reason == "codec_not_allowed"
    assert world.coordinator.status().rejections == {"codec_not_allowed": 1}


# -- malformed payloads, made by editing the bytes of a valid one ---------------------


def _fields(payload: bytes) -> tuple[list, bytes, bytes, bytes]:
    """Header fields, codec name, index section and value section of ``payload``."""
    fields = list(HEAD.unpack_from(payload))
    name_len, index_nbytes = fields[3], fields[6]
    name = payload[HEAD.size : HEAD.size + name_len]
    index = payload[HEAD.size + name_len : HEAD.size + name_len + index_nbytes]
    values = payload[HEAD.size + name_len + index_nbytes :]
    return fields, name, index, values


def _pack(fields: list, name: bytes, index: bytes, values: bytes) -> bytes:
    fields = [*fields[:3], len(name), *fields[4:6], len(index)]
    return HEAD.pack(*fields) + name + index + values


def _truncated(payload: bytes) -> bytes:
    return payload[:-1]


def _trailing_byte(payload: bytes) -> bytes:
    return payload + b"\0"


def _one_value_short(payload: bytes) -> bytes:
    """Says the model has one value less; every section still has the right length."""
    fields, name, index, values = _fields(payload)
    fields[4] -= 1  # ceil(0.05 * 1024) == ceil(0.05 * 1025): the same 52 values kept
    return _pack(fields, name, index, values)


def _index_out_of_range(payload: bytes) -> bytes:
    """Gaps of 30 between 52 indices: the last ones lie beyond the 1,025 values."""
    fields, name, _, values = _fields(payload)
    return _pack(fields, name, zlib.compress(bytes([30]) * fields[5]), values)


def _index_section_not_zlib(payload: bytes) -> bytes:
    fields, name, index, values = _fields(payload)
    return _pack(fields, name, bytes(len(index)), values)


def _nan_scale(payload: bytes) -> bytes:
    fields, name, index, values = _fields(payload)
    return _pack(fields, name, index, struct.pack("<f", float("nan")) + values[4:])


def _unknown_codec(payload: bytes) -> bytes:
    fields, _, index, values = _fields(payload)
    return _pack(fields, b"topk:0.05+zip8", index, values)


def _float64_vector(payload: bytes) -> bytes:
    """A float64 update: its int8 scale would be 8 bytes, so keep the length consistent."""
    fields, name, index, values = _fields(payload)
    fields[2] = 3
    return _pack(fields, name, index, bytes(4) + values)


MALFORMED = {
    "truncated": (_truncated, "malformed_payload"),
    "trailing-byte": (_trailing_byte, "malformed_payload"),
    "wrong-size": (_one_value_short, "wrong_shape"),
    "index-out-of-range": (_index_out_of_range, "malformed_payload"),
    "index-not-zlib": (_index_section_not_zlib, "malformed_payload"),
    "nan-scale": (_nan_scale, "non_finite"),
    "unknown-codec": (_unknown_codec, "unknown_codec"),
    "float64": (_float64_vector, "wrong_dtype"),
}


def _snapshot(world: World):
    assert world.coordinator.wait_for_evaluations(5.0)
    return (
        _global(world).copy(),
        world.runs.list_rounds("r"),
        world.runs.list_updates("r", 1),
        set(world.models._blobs),
        world.coordinator.status().updates_received,
    )


def _unchanged(a, b) -> bool:
    weights_a, *rest_a = a
    weights_b, *rest_b = b
    return bool(np.array_equal(weights_a, weights_b)) and rest_a == rest_b


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_compressed_payload_is_rejected_and_changes_nothing(name):
    edit, reason = MALFORMED[name]
    world = _world()
    world.register("a", "b", "c")
    first = encode_update(_vector(1), CODEC)
    world.coordinator.submit_update(_compressed("a", first, samples=10))
    valid = encode_update(_vector(2), CODEC)
    bad = edit(valid)
    assert bad != valid
    before = _snapshot(world)

    with pytest.raises(UpdateRejectedError) as info:
        world.coordinator.submit_update(_compressed("b", bad, samples=30, update_id="b-bad"))

    assert info.value.reason == reason, info.value
    assert _unchanged(_snapshot(world), before)
    (rejection,) = world.runs.list_rejections("r", 1)
    assert (rejection.update_id, rejection.reason) == ("b-bad", reason)
    # the aggregate holds only what was accepted: b's good update and c's close the round
    world.coordinator.submit_update(_compressed("b", valid, samples=30))
    third = encode_update(_vector(3), CODEC)
    world.coordinator.submit_update(_compressed("c", third, samples=60))
    expected = BASE + (10 * _sent(first) + 30 * _sent(valid) + 60 * _sent(third)) / 100
    np.testing.assert_allclose(_global(world), expected, rtol=1e-6, atol=1e-7)
    assert world.runs.get_round("r", 1).participating_clients == 3


# -- restart ----------------------------------------------------------------------------


def test_restart_rebuilds_the_open_round_from_its_stored_compressed_update():
    world = _world()
    world.register("a", "b", "c")
    first = encode_update(_vector(1), CODEC)
    world.coordinator.submit_update(_compressed("a", first, samples=10))

    world.restart()

    assert world.coordinator.status().updates_received == 1
    second = encode_update(_vector(2), CODEC)
    raw = _vector(3)
    world.coordinator.submit_update(_compressed("b", second, samples=30))
    world.coordinator.submit_update(_compressed("c", encode_weights(_tensors(raw)), samples=60))
    expected = BASE + (10 * _sent(first) + 30 * _sent(second) + 60 * raw.astype(np.float64)) / 100
    np.testing.assert_allclose(_global(world), expected, rtol=1e-6, atol=1e-7)
    round1 = world.runs.get_round("r", 1)
    assert round1.participating_clients == 3
    assert round1.raw_bytes_up == 3 * RAW_NBYTES
    assert [u.codec for u in world.runs.list_updates("r", 1)] == [CODEC, CODEC, "raw"]


def test_lowrank_updates_are_folded_as_the_product_of_their_factors():
    codec = "lowrank:2+int8:block=64"
    world = _world(codec)
    world.register("a", "b", "c")
    shapes = [(40, 25), (25,)]
    rng = np.random.default_rng(5)
    payloads = [encode_update(_vector(k), codec, rng=rng, shapes=shapes) for k in range(3)]

    for client, payload in zip("abc", payloads, strict=True):
        world.coordinator.submit_update(_compressed(client, payload))

    (record,) = [r for r in world.runs.list_rounds("r") if r.round_number == 1]
    assert record.status is RoundStatus.COMPLETED
    expected = BASE + np.mean([_sent(p) for p in payloads], axis=0)
    np.testing.assert_allclose(_global(world), expected, rtol=1e-5, atol=1e-6)
    stored = world.runs.list_updates("r", 1)
    assert {u.codec for u in stored} == {codec}
    assert all(u.compression_ratio > 4 for u in stored)
