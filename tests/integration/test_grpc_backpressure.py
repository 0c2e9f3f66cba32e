"""Uploads beyond the configured limit queue for ``upload_slot_wait_s`` and are then
refused with RESOURCE_EXHAUSTED, not buffered."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import grpc
import numpy as np

from fedlearn.core.retry import RetryPolicy
from fedlearn.core.serialization import encode_weights
from fedlearn.core.types import ClientCapabilities
from fedlearn.persistence import InMemoryModelStore, InMemoryRunStore
from fedlearn.service.coordinator import Coordinator
from fedlearn.service.messages import CoordinatorConfig, UpdateSubmission
from fedlearn.transport.client import GrpcCoordinatorClient
from fedlearn.transport.pb.fedlearn.v1 import fedlearn_pb2 as pb
from fedlearn.transport.pb.fedlearn.v1 import fedlearn_pb2_grpc as pb_grpc
from fedlearn.transport.server import CoordinatorServer, ServerOptions

WEIGHTS = {"w": np.zeros(1000, np.float32)}


class _Clock:
    def now(self) -> float:
        return time.time()


def _header(client: str) -> pb.UpdateChunk:
    payload = encode_weights({"w": np.ones(1000, np.float32)})
    return pb.UpdateChunk(
        header=pb.UpdateHeader(
            client_id=client,
            round_number=1,
            update_id=f"{client}-1",
            num_samples=5,
            training_loss=0.1,
            total_bytes=len(payload),
            sha256=hashlib.sha256(payload).hexdigest(),
        )
    ), payload


class _OneSlot(NamedTuple):
    coordinator: Coordinator
    stub: pb_grpc.FederatedLearningStub
    release: threading.Event
    """Set to let the slot-holding upload of :func:`_hold_the_only_slot` finish."""
    target: str


@contextmanager
def _one_slot_server(slot_wait_s: float) -> Iterator[_OneSlot]:
    """A coordinator served with one upload slot, and a stub to it."""
    coordinator = Coordinator(
        CoordinatorConfig(run_id="bp", model_name="toy", num_rounds=1, min_clients=2),
        WEIGHTS,
        runs=InMemoryRunStore(),
        models=InMemoryModelStore(),
        clock=_Clock(),
    )
    for name in ("a", "b"):
        coordinator.register_client(name, ClientCapabilities(available_samples=5))
    server = CoordinatorServer(
        coordinator,
        ServerOptions(
            address="127.0.0.1:0", max_concurrent_uploads=1, upload_slot_wait_s=slot_wait_s
        ),
    )
    server.start()
    release = threading.Event()
    target = f"127.0.0.1:{server.port}"
    channel = grpc.insecure_channel(target)
    try:
        yield _OneSlot(coordinator, pb_grpc.FederatedLearningStub(channel), release, target)
    finally:
        release.set()
        channel.close()
        server.stop()


def _hold_the_only_slot(stub: pb_grpc.FederatedLearningStub, release: threading.Event):
    """Client a's upload, started and holding the slot until ``release`` is set."""
    started = threading.Event()
    header_a, payload = _header("a")

    def slow_stream():
        yield header_a
        started.set()
        release.wait(10)
        yield pb.UpdateChunk(data=payload)

    first = stub.SubmitUpdate.future(slow_stream(), timeout=20)
    assert started.wait(5)
    return first


def test_an_upload_beyond_the_limit_is_refused_while_another_is_in_progress():
    with _one_slot_server(slot_wait_s=0.2) as (coordinator, stub, release, _):
        first = _hold_the_only_slot(stub, release)
        header_b, payload_b = _header("b")
        try:
            stub.SubmitUpdate(iter([header_b, pb.UpdateChunk(data=payload_b)]), timeout=5)
            raise AssertionError("the second upload should have been refused")
        except grpc.RpcError as exc:
            assert exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "retry" in exc.details()
            assert ("fedlearn-reason", "busy") in exc.trailing_metadata()
        assert coordinator.status().updates_received == 0
        release.set()
        assert first.result().updates_received == 1
        # the slot is free again: b's upload now goes through
        ack = stub.SubmitUpdate(iter([header_b, pb.UpdateChunk(data=payload_b)]), timeout=5)
        assert ack.updates_received == 2


def test_an_upload_beyond_the_limit_queues_until_a_slot_frees_within_the_wait():
    with _one_slot_server(slot_wait_s=10.0) as (coordinator, stub, release, _):
        first = _hold_the_only_slot(stub, release)
        header_b, payload_b = _header("b")
        second = stub.SubmitUpdate.future(
            iter([header_b, pb.UpdateChunk(data=payload_b)]), timeout=20
        )
        time.sleep(0.5)
        assert not second.done()  # waiting for a's slot, not refused
        assert coordinator.status().updates_received == 0
        threading.Timer(0.5, release.set).start()
        assert first.result().updates_received == 1
        assert second.result().updates_received == 2


def test_a_client_refused_as_busy_keeps_trying_past_its_unreachable_budget():
    with _one_slot_server(slot_wait_s=0.1) as (coordinator, stub, release, target):
        first = _hold_the_only_slot(stub, release)
        # 50 ms of "unreachable" budget: only the busy budget can carry it through 1.5 s
        retry = RetryPolicy(initial_s=0.01, max_delay_s=0.2, total_s=0.05, busy_total_s=30.0)
        threading.Timer(1.5, release.set).start()
        with GrpcCoordinatorClient(target, retry=retry) as api:
            ack = api.submit_update(
                UpdateSubmission(
                    client_id="b",
                    round_number=1,
                    update_id="b-1",
                    payload=encode_weights({"w": np.ones(1000, np.float32)}),
                    num_samples=5,
                    training_loss=0.1,
                )
            )
        assert first.result().updates_received == 1
        assert ack.updates_received == 2
        assert coordinator.status().completed_rounds == 1
