"""Central DP through a real gRPC coordinator on 127.0.0.1, on SQLite: the clients'
updates are clipped and noised on the server, the status over the wire reports the
user-level epsilon, and a coordinator restarted on the same database remembers it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from fedlearn.core.central_dp import CentralDpConfig
from fedlearn.core.rdp import epsilon_spent
from fedlearn.core.retry import RetryPolicy
from fedlearn.core.serialization import decode_weights, encode_weights
from fedlearn.core.strategy import FedAvg
from fedlearn.core.types import ClientCapabilities, RoundConfig
from fedlearn.persistence import InMemoryModelStore, SqlRunStore, make_engine
from fedlearn.persistence.migrate import upgrade
from fedlearn.service.coordinator import Coordinator
from fedlearn.service.messages import CoordinatorConfig, RunState, TaskKind, UpdateSubmission
from fedlearn.transport.client import GrpcCoordinatorClient, fetch_status
from fedlearn.transport.server import CoordinatorServer, ServerOptions

pytestmark = pytest.mark.timeout(60)

DP = CentralDpConfig(clip_norm=1.0, noise_multiplier=0.8, delta=1e-5, target_epsilon=None)
INITIAL = {"w": np.zeros((3, 4), np.float32), "b": np.zeros(4, np.float32)}
SIZE = 16


class WallClock:
    def now(self) -> float:
        return time.time()


def _serve(runs: SqlRunStore, models: InMemoryModelStore, seed: int) -> CoordinatorServer:
    config = CoordinatorConfig(
        run_id="dp-run",
        model_name="toy",
        num_rounds=2,
        min_clients=2,
        round_config=RoundConfig(local_epochs=1, batch_size=8, learning_rate=0.1),
        round_timeout_s=60.0,
        strategy=FedAvg(),
        central_dp=DP,
    )
    coordinator = Coordinator(
        config,
        INITIAL,
        runs=runs,
        models=models,
        clock=WallClock(),
        noise=np.random.default_rng(seed),
    )
    server = CoordinatorServer(coordinator, ServerOptions(address="127.0.0.1:0", tick_s=0.05))
    server.start()
    return server


def _train_one_round(target: str, values: dict[str, float]) -> int:
    retry = RetryPolicy(initial_s=0.05, multiplier=2.0, max_delay_s=0.2, total_s=2.0)
    clients = {name: GrpcCoordinatorClient(target, retry=retry) for name in values}
    try:
        for name, client in clients.items():
            client.register(name, ClientCapabilities(available_samples=10))
        number = 0
        for name, client in clients.items():
            task = client.poll_task(name, wait_s=5.0)
            assert task.kind is TaskKind.TRAIN
            number = task.round_number
            client.download_model(name, number)
            delta = {k: np.full(v.shape, values[name], np.float32) for k, v in INITIAL.items()}
            client.submit_update(
                UpdateSubmission(name, number, f"{name}-{number}", encode_weights(delta), 10, 0.5)
            )
        return number
    finally:
        for client in clients.values():
            client.close()


def test_central_dp_over_grpc_noises_reports_and_survives_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fedlearn.db'}"
    upgrade(url)
    runs, models = SqlRunStore(make_engine(url)), InMemoryModelStore()
    server = _serve(runs, models, seed=1)
    try:
        assert _train_one_round(f"127.0.0.1:{server.port}", {"a": 5.0, "b": 0.01}) == 1
        status = fetch_status(f"127.0.0.1:{server.port}")
    finally:
        server.stop(grace_s=0)

    # the selection used 2 uniforms of the seeded source, then the noise was drawn
    replay = np.random.default_rng(1)
    replay.random(2)
    noise = replay.standard_normal(SIZE) * DP.noise_multiplier * DP.clip_norm / 2
    expected = (1.0 / np.sqrt(SIZE) + 0.01) / 2 + noise  # a's update is clipped to norm 1
    stored = decode_weights(models.get(runs.get_round("dp-run", 1).global_model_path))
    got = np.concatenate([np.ravel(stored.tensors["w"]), np.ravel(stored.tensors["b"])])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)

    one_round = epsilon_spent([(DP.noise_multiplier, 1.0, 1)], delta=DP.delta)
    central = status.central_privacy
    assert central is not None and central.rounds_charged == 1
    assert central.epsilon_spent == pytest.approx(one_round, rel=1e-12)
    assert central.target_epsilon is None and central.clip_norm == DP.clip_norm

    server = _serve(runs, models, seed=2)  # a restarted coordinator on the same database
    try:
        target = f"127.0.0.1:{server.port}"
        assert fetch_status(target).central_privacy.epsilon_spent == central.epsilon_spent
        assert _train_one_round(target, {"a": 0.01, "b": 0.01}) == 2
        status = fetch_status(target)
    finally:
        server.stop(grace_s=0)
    assert status.state is RunState.FINISHED
    assert status.central_privacy.rounds_charged == 2
    two_rounds = epsilon_spent([(DP.noise_multiplier, 1.0, 2)], delta=DP.delta)
    assert status.central_privacy.epsilon_spent == pytest.approx(two_rounds, rel=1e-12)
