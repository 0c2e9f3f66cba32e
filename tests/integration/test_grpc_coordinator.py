"""A real gRPC coordinator on 127.0.0.1, driven by ``GrpcCoordinatorClient``.

Each test starts a ``CoordinatorServer`` on a free port around a ``Coordinator``
with in-memory stores (one test uses SQLite) and talks to it over the network.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest
import xxhash
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedlearn.core.retry import RetryPolicy
from fedlearn.core.serialization import decode_weights, encode_weights
from fedlearn.core.strategy import FedAvg
from fedlearn.core.types import (
    ClientCapabilities,
    ComputePowerLevel,
    PrivacyConfig,
    RoundConfig,
    RoundStatus,
)
from fedlearn.errors import (
    ChecksumError,
    ConfigError,
    NotFoundError,
    StaleRoundError,
    TransportError,
    UpdateRejectedError,
)
from fedlearn.persistence import InMemoryModelStore, InMemoryRunStore, SqlRunStore, make_engine
from fedlearn.persistence.migrate import upgrade
from fedlearn.service.coordinator import Coordinator
from fedlearn.service.messages import CoordinatorConfig, TaskKind, UpdateSubmission
from fedlearn.service.ports import RunStore
from fedlearn.transport.client import GrpcCoordinatorClient
from fedlearn.transport.pb.fedlearn.v1 import fedlearn_pb2 as pb
from fedlearn.transport.pb.fedlearn.v1 import fedlearn_pb2_grpc as pb_grpc
from fedlearn.transport.server import SERVICE_NAME, CoordinatorServer, ServerOptions
from fedlearn.transport.status_codes import REASON_KEY, error_from_rpc

pytestmark = pytest.mark.timeout(60)

MESSAGE_LIMIT = 4 << 20
RUN = "grpc-run"
ROUND_CONFIG = RoundConfig(local_epochs=2, batch_size=16, learning_rate=0.01)
CAPS = ClientCapabilities(
    compute_power=ComputePowerLevel.HIGH,
    network_bandwidth_mbps=100,
    available_samples=600,
    supported_models=("toy", "cnn"),
    privacy=PrivacyConfig(epsilon=2.0, delta=1e-5, max_grad_norm=1.0, noise_multiplier=1.1),
)
FAST_RETRY = RetryPolicy(initial_s=0.05, multiplier=2.0, max_delay_s=0.2, total_s=1.0)


def toy_weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "conv.weight": rng.normal(size=(4, 1, 3, 3)).astype(np.float32),
        "conv.bias": rng.normal(size=4).astype(np.float32),
        "fc.weight": rng.normal(size=(3, 4)).astype(np.float32),
    }


def full_like(weights, value: float) -> dict[str, np.ndarray]:
    return {k: np.full(v.shape, value, np.float32) for k, v in weights.items()}


def flat(weights) -> np.ndarray:
    return np.concatenate([np.asarray(v, np.float32).ravel() for v in weights.values()])


class WallClock:
    def now(self) -> float:
        return time.time()


@dataclass
class Coord:
    """A coordinator served over gRPC, with its stores for inspection."""

    coordinator: Coordinator
    runs: RunStore
    models: InMemoryModelStore
    server: CoordinatorServer
    initial: dict[str, np.ndarray]
    clients: list[GrpcCoordinatorClient] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def client(self, **kwargs) -> GrpcCoordinatorClient:
        kwargs.setdefault("retry", FAST_RETRY)
        kwargs.setdefault("call_timeout_s", 20.0)
        client = GrpcCoordinatorClient(self.target, **kwargs)
        self.clients.append(client)
        return client

    def snapshot(self):
        """Everything a rejected request must leave alone."""
        rounds = self.runs.list_rounds(RUN)
        return (
            flat(self.coordinator.global_weights()).copy(),
            rounds,
            {r.round_number: self.runs.list_updates(RUN, r.round_number) for r in rounds},
            self.models.keys(),
        )

    def assert_unchanged(self, before) -> None:
        weights, rounds, updates, blobs = before
        now_weights, now_rounds, now_updates, now_blobs = self.snapshot()
        np.testing.assert_array_equal(now_weights, weights)
        assert now_rounds == rounds
        assert now_updates == updates
        assert now_blobs == blobs


def _options(address: str = "127.0.0.1:0") -> ServerOptions:
    return ServerOptions(address=address, max_message_bytes=MESSAGE_LIMIT, tick_s=0.05)


def _coordinator(initial, runs: RunStore, models, **config) -> Coordinator:
    settings = {
        "run_id": RUN,
        "model_name": "toy",
        "num_rounds": 3,
        "min_clients": 2,
        "round_config": ROUND_CONFIG,
        "round_timeout_s": 120.0,
        "strategy": FedAvg(),
    }
    settings.update(config)
    return Coordinator(
        CoordinatorConfig(**settings), initial, runs=runs, models=models, clock=WallClock()
    )


@contextmanager
def serve(initial=None, runs: RunStore | None = None, **config) -> Iterator[Coord]:
    initial = toy_weights() if initial is None else initial
    runs = InMemoryRunStore() if runs is None else runs
    models = InMemoryModelStore()
    coordinator = _coordinator(initial, runs, models, **config)
    server = CoordinatorServer(coordinator, _options())
    server.start()
    coord = Coord(coordinator, runs, models, server, initial)
    try:
        yield coord
    finally:
        for client in coord.clients:
            client.close()
        server.stop(grace_s=0)


@pytest.fixture
def coord() -> Iterator[Coord]:
    with serve() as c:
        yield c


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def submission(client_id: str, round_number: int, weights, *, samples: int = 10, **kw):
    return UpdateSubmission(
        client_id=client_id,
        round_number=round_number,
        update_id=kw.pop("update_id", f"{client_id}-{round_number}"),
        payload=encode_weights(weights),
        num_samples=samples,
        training_loss=kw.pop("training_loss", 0.5),
        **kw,
    )


# -- registration and tasks ------------------------------------------------------


def test_register_assigns_an_id_when_none_is_given(coord):
    client = coord.client()
    reg = client.register(None, CAPS)
    assert reg.client_id
    assert reg.run_id == RUN and reg.model_name == "toy"
    stored = coord.runs.get_client(RUN, reg.client_id)
    assert stored is not None and stored.capabilities == CAPS
    other = client.register(None, CAPS)
    assert other.client_id != reg.client_id


def test_register_keeps_a_given_id(coord):
    reg = coord.client().register("alice", CAPS)
    assert reg.client_id == "alice"
    assert [c.client_id for c in coord.runs.list_clients(RUN)] == ["alice"]


def test_get_task_returns_train_once_min_clients_registered(coord):
    client = coord.client()
    client.register("a", CAPS)
    assert client.poll_task("a", wait_s=0).kind is TaskKind.WAIT
    client.register("b", CAPS)
    task = client.poll_task("a", wait_s=0)
    assert task.kind is TaskKind.TRAIN
    assert task.round_number == 1
    assert task.config == ROUND_CONFIG
    assert task.deadline_at > time.time()


def test_long_poll_without_a_round_returns_wait_after_the_wait(coord):
    client = coord.client()
    client.register("a", CAPS)
    started = time.monotonic()
    task = client.poll_task("a", wait_s=0.4)
    assert task.kind is TaskKind.WAIT
    assert time.monotonic() - started >= 0.35


def test_long_poll_returns_promptly_when_a_round_opens_while_waiting(coord):
    waiter, other = coord.client(), coord.client()
    waiter.register("a", CAPS)
    result: dict[str, object] = {}

    def poll() -> None:
        started = time.monotonic()
        result["task"] = waiter.poll_task("a", wait_s=5.0)
        result["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.3)
    assert "task" not in result, "the poll returned before any round could open"
    other.register("b", CAPS)
    thread.join(timeout=10)
    assert result["task"].kind is TaskKind.TRAIN
    assert 0.25 <= result["elapsed"] < 2.0  # the wait was 5 s


# -- a whole round -----------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite"])
def run_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunStore]:
    if request.param == "memory":
        yield InMemoryRunStore()
        return
    url = f"sqlite:///{tmp_path / 'fedlearn.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        yield SqlRunStore(engine)
    finally:
        engine.dispose()


def test_round_closes_with_base_plus_weighted_mean_of_submitted_deltas(run_store):
    with serve(runs=run_store) as coord:
        a, b = coord.client(), coord.client()
        a.register("a", CAPS)
        b.register("b", CAPS)
        for name, client in (("a", a), ("b", b)):
            task = client.poll_task(name, wait_s=1.0)
            assert task.kind is TaskKind.TRAIN and task.round_number == 1
            blob = client.download_model(name, 1)
            assert blob.sha256 == hashlib.sha256(blob.payload).hexdigest()
            np.testing.assert_array_equal(
                flat(decode_weights(blob.payload).tensors), flat(coord.initial)
            )

        delta_a, delta_b = full_like(coord.initial, 1.0), full_like(coord.initial, -2.0)
        ack = a.submit_update(submission("a", 1, delta_a, samples=30, eval_accuracy=0.8))
        assert (ack.round_number, ack.duplicate) == (1, False)
        assert (ack.updates_received, ack.updates_expected) == (1, 2)
        ack = b.submit_update(submission("b", 1, delta_b, samples=10))
        assert (ack.updates_received, ack.updates_expected) == (2, 2)

        expected = flat(coord.initial) + (30 * 1.0 + 10 * -2.0) / 40
        np.testing.assert_allclose(flat(coord.coordinator.global_weights()), expected, rtol=1e-6)
        round1 = coord.runs.get_round(RUN, 1)
        assert round1.status is RoundStatus.COMPLETED
        assert round1.participating_clients == 2
        assert round1.bytes_up > 0 and round1.bytes_down > 0
        stored = decode_weights(coord.models.get(round1.global_model_path)).tensors
        np.testing.assert_allclose(flat(stored), expected, rtol=1e-6)

        latest = a.download_model("a", 0)
        assert latest.round_number == 1
        np.testing.assert_allclose(
            flat(decode_weights(latest.payload).tensors), expected, rtol=1e-6
        )
        status = b.status()
        assert status.completed_rounds == 1 and status.current_round == 2
        assert [r.round_number for r in status.rounds] == [0, 1, 2]
        assert {c.client_id for c in status.clients} == {"a", "b"}
        assert all(c.capabilities == CAPS for c in status.clients)


def test_cnn_sized_update_and_model_pass_a_4_mib_message_limit_in_chunks():
    from fedlearn.models.registry import build_model
    from fedlearn.models.weights import model_to_weights

    initial = model_to_weights(build_model("cnn", seed=0))
    with serve(initial, model_name="cnn", min_clients=1) as coord:
        client = coord.client()
        client.register("big", CAPS)
        assert client.poll_task("big", wait_s=1.0).kind is TaskKind.TRAIN
        blob = client.download_model("big", 1)
        assert len(blob.payload) > 6_650_000 > MESSAGE_LIMIT  # would not fit in one message
        downloaded = decode_weights(blob.payload).tensors
        assert list(downloaded) == list(initial)
        np.testing.assert_array_equal(flat(downloaded), flat(initial))

        delta = {k: np.full(v.shape, 0.25, np.float32) for k, v in initial.items()}
        update = submission("big", 1, delta, samples=50)
        assert len(update.payload) > MESSAGE_LIMIT
        ack = client.submit_update(update)
        assert (ack.updates_received, ack.updates_expected) == (1, 1)
        assert coord.runs.get_round(RUN, 1).status is RoundStatus.COMPLETED
        np.testing.assert_allclose(
            flat(coord.coordinator.global_weights()), flat(initial) + 0.25, rtol=1e-6
        )
        assert coord.runs.get_round(RUN, 1).bytes_up >= len(update.payload)


# -- rejections --------------------------------------------------------------------


@pytest.fixture
def open_round(coord) -> Coord:
    """Round 1 open for clients a and b; b has already submitted an update."""
    client = coord.client()
    client.register("a", CAPS)
    client.register("b", CAPS)
    client.submit_update(submission("b", 1, full_like(coord.initial, 0.5)))
    return coord


def _wrong_shape(initial):
    weights = full_like(initial, 1.0)
    weights["fc.weight"] = np.ones((4, 3), np.float32)
    return submission("a", 1, weights)


def _nan(initial):
    weights = full_like(initial, 1.0)
    weights["conv.bias"][2] = np.nan
    return submission("a", 1, weights)


def _inf_loss(initial):
    return submission("a", 1, initial, training_loss=float("inf"))


def _zero_samples(initial):
    return submission("a", 1, initial, samples=0)


def _unknown_client(initial):
    return submission("zed", 1, initial)


def _stale_round(initial):
    return submission("a", 7, initial)


INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("make", "error", "reason", "code"),
    [
        (_wrong_shape, UpdateRejectedError, "wrong_shape", INVALID),
        (_nan, UpdateRejectedError, "non_finite", INVALID),
        (_inf_loss, UpdateRejectedError, "non_finite", INVALID),
        (_zero_samples, UpdateRejectedError, "bad_num_samples", INVALID),
        (_unknown_client, NotFoundError, None, grpc.StatusCode.NOT_FOUND),
        (_stale_round, StaleRoundError, None, grpc.StatusCode.FAILED_PRECONDITION),
    ],
    ids=["wrong_shape", "nan", "inf_loss", "zero_samples", "unknown_client", "stale_round"],
)
def test_submit_rejection_maps_to_status_and_fedlearn_error_and_changes_nothing(
    open_round, make, error, reason, code
):
    before = open_round.snapshot()
    with pytest.raises(error) as info:
        open_round.client().submit_update(make(open_round.initial))
    assert isinstance(info.value.__cause__, grpc.RpcError)
    assert info.value.__cause__.code() is code
    if reason is not None:
        assert info.value.reason == reason
    open_round.assert_unchanged(before)
    # the rejected client may still submit a valid update for the open round
    if error is UpdateRejectedError:
        valid = submission("a", 1, full_like(open_round.initial, 1.0))
        assert open_round.client().submit_update(valid).updates_received == 2


@pytest.mark.parametrize(
    ("call", "error", "code"),
    [
        (lambda c: c.poll_task("zed", wait_s=0), NotFoundError, grpc.StatusCode.NOT_FOUND),
        (lambda c: c.download_model("zed", 1), NotFoundError, grpc.StatusCode.NOT_FOUND),
        (lambda c: c.download_model("a", 7), StaleRoundError, grpc.StatusCode.FAILED_PRECONDITION),
    ],
    ids=["poll_unknown_client", "download_unknown_client", "download_stale_round"],
)
def test_task_and_download_errors_map_to_fedlearn_errors(open_round, call, error, code):
    before = open_round.snapshot()
    with pytest.raises(error) as info:
        call(open_round.client())
    assert info.value.__cause__.code() is code
    open_round.assert_unchanged(before)


@contextmanager
def raw_stub(coord: Coord) -> Iterator[pb_grpc.FederatedLearningStub]:
    channel = grpc.insecure_channel(
        coord.target,
        options=[
            ("grpc.max_receive_message_length", MESSAGE_LIMIT),
            ("grpc.max_send_message_length", MESSAGE_LIMIT),
        ],
    )
    try:
        yield pb_grpc.FederatedLearningStub(channel)
    finally:
        channel.close()


def _header(payload: bytes, **changes) -> pb.UpdateHeader:
    fields = {
        "client_id": "a",
        "round_number": 1,
        "update_id": "raw-a-1",
        "num_samples": 10,
        "training_loss": 0.5,
        "total_bytes": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    fields.update(changes)
    return pb.UpdateHeader(**fields)


def _reason(exc: grpc.RpcError) -> str | None:
    return dict(exc.trailing_metadata() or ()).get(REASON_KEY)


@pytest.mark.parametrize(
    "wrong",
    [
        {"sha256": hashlib.sha256(b"other").hexdigest()},
        {"xxh3_128": xxhash.xxh3_128_hexdigest(b"other")},  # wins over a right SHA-256
    ],
    ids=["sha256", "xxh3"],
)
def test_stream_with_wrong_checksum_is_data_loss_and_a_checksum_error(open_round, wrong):
    payload = encode_weights(full_like(open_round.initial, 1.0))
    stream = [
        pb.UpdateChunk(header=_header(payload, **wrong)),
        *(pb.UpdateChunk(data=payload[i : i + 100]) for i in range(0, len(payload), 100)),
    ]
    before = open_round.snapshot()
    with raw_stub(open_round) as stub, pytest.raises(grpc.RpcError) as info:
        stub.SubmitUpdate(iter(stream), timeout=10)
    assert info.value.code() is grpc.StatusCode.DATA_LOSS
    assert _reason(info.value) == "checksum_mismatch"
    assert isinstance(error_from_rpc(info.value), ChecksumError)
    open_round.assert_unchanged(before)


def test_stream_with_correct_sha256_is_accepted_by_the_raw_stub(open_round):
    """The raw streams of the neighbouring tests differ from a valid one only where stated."""
    payload = encode_weights(full_like(open_round.initial, 1.0))
    stream = [pb.UpdateChunk(header=_header(payload)), pb.UpdateChunk(data=payload)]
    with raw_stub(open_round) as stub:
        ack = stub.SubmitUpdate(iter(stream), timeout=10)
    assert (ack.round_number, ack.updates_received) == (1, 2)


def test_stream_with_xxh3_only_is_accepted_as_fedlearn_clients_send_it(open_round):
    payload = encode_weights(full_like(open_round.initial, 1.0))
    header = _header(payload, sha256="", xxh3_128=xxhash.xxh3_128_hexdigest(payload))
    stream = [pb.UpdateChunk(header=header), pb.UpdateChunk(data=payload)]
    with raw_stub(open_round) as stub:
        ack = stub.SubmitUpdate(iter(stream), timeout=10)
    assert (ack.round_number, ack.updates_received) == (1, 2)


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        ([pb.UpdateChunk(data=b"FLW1....")], "no_header"),
        ([], "no_header"),
        ([pb.UpdateChunk(header=_header(b"abcd")), pb.UpdateChunk(data=b"ab")], "size_mismatch"),
        ([pb.UpdateChunk(header=_header(b"ab")), pb.UpdateChunk(data=b"abcd")], "size_mismatch"),
        ([pb.UpdateChunk(header=_header(b"", total_bytes=1 << 40))], "too_large"),
        (
            [pb.UpdateChunk(header=_header(b"ab", sha256="")), pb.UpdateChunk(data=b"ab")],
            "no_checksum",
        ),
        (
            [pb.UpdateChunk(header=_header(b"junk")), pb.UpdateChunk(data=b"junk")],
            "malformed_payload",
        ),
    ],
    ids=[
        "data_first",
        "empty",
        "too_few_bytes",
        "too_many_bytes",
        "too_large",
        "no_checksum",
        "not_weights",
    ],
)
def test_malformed_stream_is_invalid_argument_and_changes_nothing(open_round, stream, reason):
    before = open_round.snapshot()
    with raw_stub(open_round) as stub, pytest.raises(grpc.RpcError) as info:
        stub.SubmitUpdate(iter(stream), timeout=10)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _reason(info.value) == reason
    converted = error_from_rpc(info.value)
    assert isinstance(converted, UpdateRejectedError) and converted.reason == reason
    open_round.assert_unchanged(before)


# -- retries and health --------------------------------------------------------------


def test_client_gives_up_with_transport_error_after_total_s_when_nothing_listens():
    policy = RetryPolicy(initial_s=0.1, multiplier=2.0, max_delay_s=0.4, total_s=2.0)
    target = f"127.0.0.1:{free_port()}"
    with GrpcCoordinatorClient(target, retry=policy, call_timeout_s=5.0, seed=1) as client:
        started = time.monotonic()
        with pytest.raises(TransportError) as info:
            client.register(None, CAPS)
        elapsed = time.monotonic() - started
    assert policy.total_s * 0.5 <= elapsed < policy.total_s + 3.0
    assert target in str(info.value)
    assert isinstance(info.value.__cause__, grpc.RpcError)
    assert info.value.__cause__.code() is grpc.StatusCode.UNAVAILABLE


def test_client_that_calls_before_the_server_starts_succeeds_once_it_does():
    port = free_port()
    runs, models = InMemoryRunStore(), InMemoryModelStore()
    coordinator = _coordinator(toy_weights(), runs, models)
    servers: list[CoordinatorServer] = []

    def start_later() -> None:
        time.sleep(0.5)
        server = CoordinatorServer(coordinator, _options(f"127.0.0.1:{port}"))
        server.start()
        servers.append(server)

    policy = RetryPolicy(initial_s=0.1, multiplier=2.0, max_delay_s=0.5, total_s=15.0)
    starter = threading.Thread(target=start_later)
    try:
        with GrpcCoordinatorClient(f"127.0.0.1:{port}", retry=policy, seed=2) as client:
            started = time.monotonic()
            starter.start()
            reg = client.register("early", CAPS)
            elapsed = time.monotonic() - started
    finally:
        starter.join(timeout=10)
        for server in servers:
            server.stop(grace_s=0)
    assert reg.client_id == "early"
    assert elapsed >= 0.4  # it really had to wait for the server
    assert runs.get_client(RUN, "early") is not None


@pytest.mark.parametrize("service", ["", SERVICE_NAME])
def test_health_service_reports_serving(coord, service):
    with grpc.insecure_channel(coord.target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_server_refuses_an_address_in_use_with_config_error(coord):
    with pytest.raises(ConfigError, match=coord.target):
        CoordinatorServer(coord.coordinator, _options(coord.target))
