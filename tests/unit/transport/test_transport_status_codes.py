"""The status catalog: a fedlearn error raised by the server comes back as the same error."""

from __future__ import annotations

import grpc
import pytest

from fedlearn.errors import (
    ChecksumError,
    ConfigError,
    ConflictError,
    DataError,
    FedLearnError,
    NotFoundError,
    StaleRoundError,
    StorageError,
    TransportError,
    UpdateRejectedError,
)
from fedlearn.transport.status_codes import REASON_KEY, code_for, error_from_rpc, reason_for


class FakeRpcError(grpc.RpcError):
    """What a failed call raises on the client, as the server's abort produced it."""

    def __init__(self, code: grpc.StatusCode, details: str, reason: str | None) -> None:
        super().__init__(details)
        self._code = code
        self._details = details
        self._metadata = () if reason is None else ((REASON_KEY, reason),)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self):
        return self._metadata


def _over_the_wire(error: FedLearnError) -> FedLearnError:
    return error_from_rpc(FakeRpcError(code_for(error), str(error), reason_for(error)))


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ChecksumError("sha"), grpc.StatusCode.DATA_LOSS),
        (UpdateRejectedError("wrong_shape", "bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (StaleRoundError("old"), grpc.StatusCode.FAILED_PRECONDITION),
        (ConflictError("busy"), grpc.StatusCode.FAILED_PRECONDITION),
        (NotFoundError("who"), grpc.StatusCode.NOT_FOUND),
        (ConfigError("cfg"), grpc.StatusCode.INVALID_ARGUMENT),
        (DataError("data"), grpc.StatusCode.INVALID_ARGUMENT),
        (StorageError("db"), grpc.StatusCode.UNAVAILABLE),
        (FedLearnError("other"), grpc.StatusCode.INTERNAL),
    ],
)
def test_each_error_class_maps_to_its_status_code(error, code):
    assert code_for(error) is code


@pytest.mark.parametrize(
    "error",
    [
        ChecksumError("sha"),
        UpdateRejectedError("non_finite", "nan"),
        StaleRoundError("old"),
        ConflictError("busy"),
        NotFoundError("who"),
        ConfigError("cfg"),
        DataError("data"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_client_gets_back_the_error_class_the_server_raised(error):
    back = _over_the_wire(error)
    assert type(back) is type(error)
    assert str(error) in str(back)


@pytest.mark.parametrize("reason", ["wrong_shape", "non_finite", "no_header", "too_large"])
def test_update_rejection_keeps_its_reason(reason):
    back = _over_the_wire(UpdateRejectedError(reason, "rejected"))
    assert isinstance(back, UpdateRejectedError) and back.reason == reason


@pytest.mark.parametrize("error", [StorageError("db down"), FedLearnError("boom")])
def test_server_failures_reach_the_client_as_transport_errors(error):
    assert isinstance(_over_the_wire(error), TransportError)


def test_invalid_argument_without_a_reason_is_a_config_error():
    back = error_from_rpc(FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "bad request", None))
    assert isinstance(back, ConfigError)
    assert "INVALID_ARGUMENT" in str(back)


def test_unexpected_status_becomes_transport_error_with_code_in_message():
    back = error_from_rpc(FakeRpcError(grpc.StatusCode.UNIMPLEMENTED, "no such method", None))
    assert isinstance(back, TransportError)
    assert "UNIMPLEMENTED" in str(back) and "no such method" in str(back)


@pytest.mark.parametrize("reason", ["not_selected", "already_submitted", "update_id_taken"])
def test_a_conflict_keeps_its_reason_code_over_the_wire(reason):
    back = _over_the_wire(ConflictError("not now", reason=reason))
    assert type(back) is ConflictError
    assert back.reason == reason


def test_a_conflict_without_a_reason_comes_back_without_one():
    back = _over_the_wire(ConflictError("not now"))
    assert type(back) is ConflictError
    assert back.reason is None
