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

__all__ = [
    "BUSY_REASON",
    "BUSY_RETRY_AFTER_S",
    "REASON_KEY",
    "RETRY_AFTER_KEY",
    "busy_metadata",
    "busy_retry_after_s",
    "code_for",
    "error_from_rpc",
    "reason_for",
]

REASON_KEY = "fedlearn-reason"
RETRY_AFTER_KEY = "retry-after-ms"
BUSY_REASON = "busy"
"""The reason of a RESOURCE_EXHAUSTED refusal from a server that is up but has no room
for the call now: the client may come back after ``retry-after-ms``."""
BUSY_RETRY_AFTER_S = 0.5
"""When a busy refusal tells the client to come back, unless it says otherwise."""

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


def _trailing(exc: grpc.RpcError) -> dict[str, str]:
    """The trailing metadata of a failed call, as text (empty where it has none)."""
    metadata = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    return {str(key): str(value) for key, value in (metadata or ())}


def busy_metadata(retry_after_s: float = BUSY_RETRY_AFTER_S) -> tuple[tuple[str, str], ...]:
    """Trailing metadata of a "busy, come back in ``retry_after_s``" refusal."""
    return ((REASON_KEY, BUSY_REASON), (RETRY_AFTER_KEY, str(round(retry_after_s * 1000))))


def busy_retry_after_s(exc: grpc.RpcError) -> float | None:
    """Seconds the server asked to wait if ``exc`` says it is busy (see ``busy_metadata``);
    ``None`` for every other failure."""
    code = exc.code() if hasattr(exc, "code") else None
    if code is not grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    values = _trailing(exc)
    if values.get(REASON_KEY) != BUSY_REASON:
        return None
    try:
        return max(0.0, float(values[RETRY_AFTER_KEY]) / 1000)
    except (KeyError, ValueError):
        return BUSY_RETRY_AFTER_S


def error_from_rpc(exc: grpc.RpcError) -> FedLearnError:
    """Turn a failed call into the fedlearn error the server raised (as near as it can)."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    reason = _trailing(exc).get(REASON_KEY, "")
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
