"""The one catalog that maps fedlearn errors to gRPC status codes and back."""

from __future__ import annotations

import grpc

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

__all__ = ["REASON_KEY", "code_for", "error_from_rpc", "reason_for"]

REASON_KEY = "fedlearn-reason"

# Most specific classes first: the first match wins.
_CATALOG: tuple[tuple[type[FedLearnError], grpc.StatusCode], ...] = (
    (ChecksumError, grpc.StatusCode.DATA_LOSS),
    (UpdateRejectedError, grpc.StatusCode.INVALID_ARGUMENT),
    (StaleRoundError, grpc.StatusCode.FAILED_PRECONDITION),
    (ConflictError, grpc.StatusCode.FAILED_PRECONDITION),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (DataError, grpc.StatusCode.INVALID_ARGUMENT),
    (StorageError, grpc.StatusCode.UNAVAILABLE),
)


def code_for(error: FedLearnError) -> grpc.StatusCode:
    for cls, code in _CATALOG:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


def reason_for(error: FedLearnError) -> str:
    """A short machine-readable reason sent as trailing metadata."""
    if isinstance(error, UpdateRejectedError):
        return error.reason
    if isinstance(error, StaleRoundError):
        return "stale_round"
    if isinstance(error, ConflictError) and error.reason:
        return error.reason
    if isinstance(error, ChecksumError):
        return "checksum_mismatch"
    return type(error).__name__


def error_from_rpc(exc: grpc.RpcError) -> FedLearnError:
    """Turn a failed call into the fedlearn error the server raised (as near as it can)."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    reason = ""
    for key, value in (exc.trailing_metadata() or ()) if hasattr(exc, "trailing_metadata") else ():
        if key == REASON_KEY:
            reason = str(value)
    message = f"{details} [{code.name if code else 'UNKNOWN'}]"
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return _invalid_argument(reason, message)
    if code is grpc.StatusCode.NOT_FOUND:
        return NotFoundError(message)
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        if reason == "stale_round":
            return StaleRoundError(message)
        return ConflictError(message, reason=None if reason == "ConflictError" else reason)
    if code is grpc.StatusCode.DATA_LOSS:
        return ChecksumError(message)
    return TransportError(message)


def _invalid_argument(reason: str, message: str) -> FedLearnError:
    """Config and data errors carry their class name as the reason (see ``reason_for``)."""
    if reason == DataError.__name__:
        return DataError(message)
    if reason in ("", ConfigError.__name__):
        return ConfigError(message)
    return UpdateRejectedError(reason, message)
