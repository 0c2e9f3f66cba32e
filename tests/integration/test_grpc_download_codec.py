"""Downloads with a download codec through a real gRPC coordinator on 127.0.0.1: a client
offering the model it holds gets a quantised delta that rebuilds the announced model."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

import numpy as np
import pytest

from fedlearn.core.downstream import apply_delta, unflatten
from fedlearn.core.retry import RetryPolicy
from fedlearn.core.serialization import decode_weights, encode_weights
from fedlearn.core.strategy import FedAvg
from fedlearn.core.types import ClientCapabilities, RoundConfig
from fedlearn.persistence import InMemoryModelStore, InMemoryRunStore
from fedlearn.service.coordinator import Coordinator
from fedlearn.service.messages import CoordinatorConfig, TaskKind, UpdateSubmission
from fedlearn.transport.client import GrpcCoordinatorClient
from fedlearn.transport.server import CoordinatorServer, ServerOptions

pytestmark = pytest.mark.timeout(60)

RUN = "download-codec-run"
INITIAL = {
    "fc.weight": np.random.default_rng(7).normal(size=(64, 32)).astype(np.float32),
    "fc.bias": np.zeros(32, np.float32),
}
RETRY = RetryPolicy(initial_s=0.05, multiplier=2.0, max_delay_s=0.2, total_s=2.0)


class WallClock:
    def now(self) -> float:
        return time.time()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def served() -> Iterator[tuple[InMemoryRunStore, GrpcCoordinatorClient]]:
    runs = InMemoryRunStore()
    config = CoordinatorConfig(
        run_id=RUN,
        model_name="toy",
        num_rounds=3,
        min_clients=2,
        round_config=RoundConfig(local_epochs=1, batch_size=8, learning_rate=0.1),
        round_timeout_s=60.0,
        strategy=FedAvg(),
        download_codec="int8",
    )
    coordinator = Coordinator(
        config, INITIAL, runs=runs, models=InMemoryModelStore(), clock=WallClock()
    )
    server = CoordinatorServer(coordinator, ServerOptions(address="127.0.0.1:0", tick_s=0.05))
    server.start()
    client = GrpcCoordinatorClient(f"127.0.0.1:{server.port}", retry=RETRY, call_timeout_s=20.0)
    try:
        yield runs, client
    finally:
        client.close()
        server.stop(grace_s=0)


def _submit(client: GrpcCoordinatorClient, name: str, round_number: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    delta = {k: rng.normal(scale=0.05, size=v.shape).astype(np.float32) for k, v in INITIAL.items()}
    client.submit_update(
        UpdateSubmission(
            name, round_number, f"{name}-{round_number}", encode_weights(delta), 10, 0.5
        )
    )


def test_a_client_holding_the_previous_model_downloads_a_delta_that_rebuilds_it(served):
    runs, client = served
    for name in ("a", "b"):
        client.register(name, ClientCapabilities(available_samples=10))
    assert client.poll_task("a", wait_s=5.0).round_number == 1
    held = client.download_model("a", 1, have_sha256=_sha(b"nothing yet"))
    assert held.base_sha256 == "" and held.payload == encode_weights(INITIAL)
    _submit(client, "a", 1, seed=1)
    _submit(client, "b", 1, seed=2)
    task = client.poll_task("a", wait_s=5.0)
    assert task.kind is TaskKind.TRAIN and task.round_number == 2

    delta = client.download_model("a", 2, have_sha256=held.sha256)
    full = client.download_model("b", 2)
    wrong = client.download_model("b", 2, have_sha256=_sha(b"some other model"))

    assert delta.round_number == 1
    assert delta.base_sha256 == held.sha256
    assert delta.model_sha256 == full.sha256 == wrong.sha256
    assert delta.sha256 == _sha(delta.payload)
    held_model = decode_weights(held.payload)
    rebuilt = apply_delta(held_model.flat("float32"), delta.payload)
    rebuilt_payload = encode_weights(unflatten(rebuilt, held_model.specs))
    assert _sha(rebuilt_payload) == delta.model_sha256
    assert rebuilt_payload == full.payload
    assert full.base_sha256 == "" and wrong.base_sha256 == "" and wrong.payload == full.payload
    assert len(delta.payload) * 3.5 < len(full.payload)
    _submit(client, "a", 2, seed=3)
    _submit(client, "b", 2, seed=4)
    assert runs.get_round(RUN, 2).bytes_down == len(delta.payload) + 2 * len(full.payload)
