"""Which gRPC failures the client retries: transient ones, and calls cut mid-stream."""

from __future__ import annotations

import grpc
import pytest

from fedlearn.core.retry import RetryPolicy
from fedlearn.errors import FedLearnError, TransportError
from fedlearn.transport.client import GrpcCoordinatorClient


class FakeRpcError(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self): ...
    def trailing_metadata(self): ...
    def is_active(self): ...
    def time_remaining(self): ...
    def cancel(self): ...
    def add_callback(self, callback): ...


def flaky(*errors: FakeRpcError):
    remaining = list(errors)
    calls = []

    def call() -> str:
        calls.append(1)
        if remaining:
            raise remaining.pop(0)
        return "answer"

    return call, calls


@pytest.fixture
def client():
    retry = RetryPolicy(initial_s=0.001, max_delay_s=0.002, total_s=5.0)
    with GrpcCoordinatorClient("127.0.0.1:1", retry=retry, seed=0) as api:
        yield api


@pytest.mark.parametrize(
    ("code", "details"),
    [
        (grpc.StatusCode.UNAVAILABLE, "failed to connect"),
        (grpc.StatusCode.UNKNOWN, "Stream removed (Data frame with END_STREAM flag received)"),
        (grpc.StatusCode.INTERNAL, "Received RST_STREAM with error code 2"),
        (grpc.StatusCode.UNKNOWN, "Socket closed"),
    ],
)
def test_transient_and_cut_calls_are_retried(client, code, details) -> None:
    call, calls = flaky(FakeRpcError(code, details), FakeRpcError(code, details))
    assert client._call("poll", call) == "answer"
    assert len(calls) == 3


@pytest.mark.parametrize(
    ("code", "details"),
    [
        (grpc.StatusCode.UNKNOWN, "Exception calling application: boom"),
        (grpc.StatusCode.INVALID_ARGUMENT, "bad update"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max (5 vs. 4)"),
    ],
)
def test_other_failures_are_not_retried(client, code, details) -> None:
    call, calls = flaky(FakeRpcError(code, details))
    with pytest.raises(FedLearnError):
        client._call("poll", call)
    assert len(calls) == 1


class BusyError(FakeRpcError):
    """What the coordinator answers when all its upload slots are taken."""

    def __init__(self, reason: str = "busy") -> None:
        super().__init__(grpc.StatusCode.RESOURCE_EXHAUSTED, "4 uploads in progress; retry")
        self._metadata = (("fedlearn-reason", reason), ("retry-after-ms", "1"))

    def trailing_metadata(self):
        return self._metadata


def test_busy_refusals_do_not_use_up_the_unreachable_budget() -> None:
    # 5 ms of "unreachable" budget, but the coordinator answered every time
    retry = RetryPolicy(initial_s=0.001, max_delay_s=0.002, total_s=0.005, busy_total_s=5.0)
    with GrpcCoordinatorClient("127.0.0.1:1", retry=retry, seed=0) as api:
        call, calls = flaky(*[BusyError() for _ in range(20)])
        assert api._call("submit", call) == "answer"
    assert len(calls) == 21


def test_a_coordinator_busy_past_the_busy_budget_is_an_error() -> None:
    retry = RetryPolicy(initial_s=0.001, max_delay_s=0.002, total_s=5.0, busy_total_s=0.01)
    with GrpcCoordinatorClient("127.0.0.1:1", retry=retry, seed=0) as api:
        call, calls = flaky(*[BusyError() for _ in range(1000)])
        with pytest.raises(TransportError, match="still busy after"):
            api._call("submit", call)
    assert 2 <= len(calls) < 1000


def test_other_resource_exhausted_refusals_count_as_unreachable() -> None:
    retry = RetryPolicy(initial_s=0.001, max_delay_s=0.002, total_s=0.02, busy_total_s=60.0)
    with GrpcCoordinatorClient("127.0.0.1:1", retry=retry, seed=0) as api:
        call, calls = flaky(*[BusyError(reason="other") for _ in range(1000)])
        with pytest.raises(TransportError, match="unreachable for"):
            api._call("submit", call)
    assert len(calls) < 1000
