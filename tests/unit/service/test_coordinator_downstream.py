"""The coordinator's downloads with a download codec: whole models, deltas, and when each."""

import hashlib

import numpy as np
import pytest
from service_world import World, submission

from fedlearn.core import downstream
from fedlearn.core.downstream import apply_delta, unflatten
from fedlearn.core.serialization import decode_weights, encode_weights
from fedlearn.errors import ConfigError
from fedlearn.service.messages import GlobalModelBlob

INITIAL = {
    "w": np.random.default_rng(0).normal(size=(32, 16)).astype(np.float32),
    "b": np.zeros(16, np.float32),
}
SIZE = 32 * 16 + 16


def BigWorld(**config) -> World:
    """The service world around a model large enough for compression to show."""
    return World(initial=INITIAL, **config)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _flat(payload: bytes) -> np.ndarray:
    return decode_weights(payload).flat("float32")


def _update(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.normal(scale=0.05, size=v.shape).astype(np.float32) for k, v in INITIAL.items()}


def _close_round(world: World, number: int, clients=("a", "b")) -> None:
    for i, client in enumerate(clients):
        world.coordinator.submit_update(submission(client, number, _update(10 * number + i)))


def _global(world: World) -> np.ndarray:
    weights = world.coordinator.global_weights()
    return np.concatenate([np.asarray(v, np.float32).ravel() for v in weights.values()])


def _rebuild(held: bytes, delta: GlobalModelBlob) -> bytes:
    """What a client holding ``held`` makes of ``delta``: the FLW1 model it rebuilds."""
    specs = decode_weights(held).specs
    return encode_weights(unflatten(apply_delta(_flat(held), delta.payload), specs))


@pytest.fixture
def world() -> World:
    world = BigWorld(download_codec="int8", num_rounds=5)
    world.register("a", "b")
    return world


def test_the_first_download_is_the_whole_initial_model(world):
    blob = world.coordinator.get_global_model("a", 1, have_sha256=_sha(b"anything"))

    assert blob.base_sha256 == "" and blob.model_sha256 == ""
    assert blob.round_number == 0
    assert blob.payload == encode_weights(INITIAL)
    assert blob.sha256 == _sha(blob.payload)


def test_a_client_holding_the_previous_version_gets_a_delta_that_rebuilds_the_model(world):
    held = world.coordinator.get_global_model("a", 1)
    _close_round(world, 1)

    blob = world.coordinator.get_global_model("a", 2, have_sha256=held.sha256)
    full = world.coordinator.get_global_model("b", 2)

    assert blob.round_number == 1 and blob.base_sha256 == held.sha256
    assert blob.sha256 == _sha(blob.payload)
    assert blob.model_sha256 == full.sha256 != held.sha256
    rebuilt = _rebuild(held.payload, blob)
    assert _sha(rebuilt) == blob.model_sha256
    assert rebuilt == full.payload
    assert len(blob.payload) * 3.5 < len(full.payload)
    # the served version is the global model up to one int8 step of the delta
    change = _global(world) - _flat(held.payload)
    step = np.max(np.abs(change)) / 127
    np.testing.assert_allclose(_flat(full.payload), _global(world), rtol=0, atol=0.51 * step)


def test_a_client_offering_an_unknown_or_outdated_version_gets_the_whole_model(world):
    first = world.coordinator.get_global_model("a", 1)
    _close_round(world, 1)
    second = world.coordinator.get_global_model("a", 2)
    _close_round(world, 2)

    unknown = world.coordinator.get_global_model("a", 3, have_sha256=_sha(b"not a model"))
    outdated = world.coordinator.get_global_model("b", 3, have_sha256=first.sha256)
    current = world.coordinator.get_global_model("b", 3, have_sha256=second.sha256)

    for blob in (unknown, outdated):
        assert blob.base_sha256 == "" and blob.model_sha256 == ""
        assert blob.sha256 == current.model_sha256 == _sha(blob.payload)
        assert decode_weights(blob.payload).specs == decode_weights(first.payload).specs
    assert current.base_sha256 == second.sha256


def test_each_delta_is_encoded_once_however_many_clients_download_it(monkeypatch):
    names = [f"c{i}" for i in range(6)]
    world = BigWorld(download_codec="int8", min_clients=len(names), num_rounds=3)
    world.register(*names)
    encoded = []
    real_encode = downstream.encode_update

    def counting_encode(vector, codec, **kwargs):
        encoded.append(codec)
        return real_encode(vector, codec, **kwargs)

    monkeypatch.setattr(downstream, "encode_update", counting_encode)
    held = world.coordinator.get_global_model("c0", 1)
    _close_round(world, 1, clients=names)

    blobs = [world.coordinator.get_global_model(n, 2, have_sha256=held.sha256) for n in names]

    assert encoded == ["int8"]
    assert all(b.payload is blobs[0].payload for b in blobs)
    assert {b.model_sha256 for b in blobs} == {blobs[0].model_sha256}


def test_the_rounds_bytes_down_count_what_each_client_was_sent(world):
    held = world.coordinator.get_global_model("a", 1)
    world.coordinator.get_global_model("b", 1)
    _close_round(world, 1)
    delta = world.coordinator.get_global_model("a", 2, have_sha256=held.sha256)
    full = world.coordinator.get_global_model("b", 2, have_sha256="")
    _close_round(world, 2)

    assert world.runs.get_round("r", 1).bytes_down == 2 * len(held.payload)
    assert world.runs.get_round("r", 2).bytes_down == len(delta.payload) + len(full.payload)
    assert len(delta.payload) < len(full.payload)


def test_after_a_rollback_the_restored_model_is_sent_whole_then_deltas_resume(world):
    first = world.coordinator.get_global_model("a", 1)
    _close_round(world, 1)
    round1 = _global(world)
    second = world.coordinator.get_global_model("a", 2, have_sha256=first.sha256)
    assert second.base_sha256 == first.sha256
    _close_round(world, 2)
    third = world.coordinator.get_global_model("a", 3, have_sha256=second.model_sha256)
    assert third.base_sha256 == second.model_sha256

    world.coordinator.rollback(1, reason="test")

    for have in (third.model_sha256, second.model_sha256, first.sha256):
        blob = world.coordinator.get_global_model("a", 4, have_sha256=have)
        assert blob.base_sha256 == "" and blob.model_sha256 == ""
        np.testing.assert_array_equal(_flat(blob.payload), round1)
    restored = world.coordinator.get_global_model("b", 4)
    _close_round(world, 4)
    resumed = world.coordinator.get_global_model("a", 5, have_sha256=restored.sha256)
    assert resumed.base_sha256 == restored.sha256
    assert _sha(_rebuild(restored.payload, resumed)) == resumed.model_sha256


def test_without_a_download_codec_the_global_model_is_sent_whole_as_stored():
    world = BigWorld(num_rounds=3)
    world.register("a", "b")
    held = world.coordinator.get_global_model("a", 1)
    _close_round(world, 1)

    blob = world.coordinator.get_global_model("a", 2, have_sha256=held.sha256)
    again = world.coordinator.get_global_model("b", 2, have_sha256=held.sha256)

    stored = world.models.get(world.runs.get_round("r", 1).global_model_path)
    assert blob.payload == stored and blob.sha256 == _sha(stored)
    assert blob.base_sha256 == "" and blob.model_sha256 == ""
    assert again is blob  # the global model's own blob, encoded once
    np.testing.assert_array_equal(_flat(blob.payload), _global(world))


def test_a_coordinator_refuses_a_stochastic_download_codec():
    with pytest.raises(ConfigError, match="stochastic"):
        BigWorld(download_codec="int8:round=stochastic")


def test_a_restarted_coordinator_serves_the_same_version_and_keeps_sending_deltas(world):
    world.coordinator.get_global_model("a", 1)
    _close_round(world, 1)
    round_one = world.coordinator.get_global_model("a", 2)
    assert round_one.base_sha256 == ""  # nothing offered: the whole served version

    world.restart()
    again = world.coordinator.get_global_model("a", 2)
    assert again.payload == round_one.payload  # the chained version, not the exact global
    _close_round(world, 2)
    delta = world.coordinator.get_global_model("a", 3, have_sha256=round_one.sha256)
    assert delta.base_sha256 == round_one.sha256
    assert _sha(_rebuild(round_one.payload, delta)) == delta.model_sha256
