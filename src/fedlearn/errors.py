"""The fedlearn error tree.

Every error fedlearn raises on purpose derives from :class:`FedLearnError`;
third-party errors are translated at the edges with ``raise ... from exc``::

    FedLearnError
    ├── ConfigError             settings that cannot work together
    ├── PrivacyBudgetExhaustedError  training would spend more epsilon than allowed
    ├── DataError               a data set that is missing, corrupt or empty
    │   └── ChecksumError       a file or payload whose checksum does not match
    ├── NotFoundError           an unknown client, round, run or model
    ├── ConflictError           a request that does not fit the current state
    │   ├── StaleRoundError     an update for a round that is not open
    │   └── FencedError         a write whose lease token is older than the newest issued
    ├── UpdateRejectedError     an update that fails validation (``reason`` says why)
    ├── StorageError            the database or model store failed
    └── TransportError          the coordinator could not be reached
"""

from __future__ import annotations

__all__ = [
    "ChecksumError",
    "ConfigError",
    "ConflictError",
    "DataError",
    "FedLearnError",
    "FencedError",
    "NotFoundError",
    "PrivacyBudgetExhaustedError",
    "StaleRoundError",
    "StorageError",
    "TransportError",
    "UpdateRejectedError",
]


class FedLearnError(Exception):
    """Root of every error fedlearn raises on purpose."""


class ConfigError(FedLearnError):
    """Settings that cannot work together."""


class PrivacyBudgetExhaustedError(FedLearnError):
    """Training would take a client past its differential-privacy budget.

    ``spent`` is the epsilon already used, ``would_spend`` the epsilon after the refused
    round and ``budget`` the limit (all at the client's delta).
    """

    def __init__(self, *, spent: float, would_spend: float, budget: float) -> None:
        super().__init__(
            f"privacy budget exhausted: epsilon spent {spent:.4f}, the next round would "
            f"bring it to {would_spend:.4f}, over the budget of {budget:.4f}"
        )
        self.spent = spent
        self.would_spend = would_spend
        self.budget = budget


class DataError(FedLearnError):
    """A data set that is missing, corrupt or empty."""


class ChecksumError(DataError):
    """A file or payload whose checksum differs from the announced one."""


class NotFoundError(FedLearnError):
    """An unknown client, round, run or stored object."""


class ConflictError(FedLearnError):
    """A request that does not fit the current state (for example a duplicate).

    ``reason`` is an optional short code (``not_selected``, ``already_submitted`` ...)
    that travels to the client with the error.
    """

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class StaleRoundError(ConflictError):
    """An update or request for a round that is not the open one."""


class FencedError(ConflictError):
    """A write guarded by a lease token that is no longer the newest for its lease.

    Another holder acquired the lease since (``name``), so the writer, perhaps a
    replica that was paused or cut off while its lease expired, must stop. ``token``
    is the refused token; ``reason`` is ``"fenced"``.
    """

    def __init__(self, name: str, token: int) -> None:
        super().__init__(
            f"lease {name!r}: token {token} is not the newest; another holder took over",
            reason="fenced",
        )
        self.name = name
        self.token = token


class UpdateRejectedError(FedLearnError):
    """An update that fails validation; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class StorageError(FedLearnError):
    """The database or the model store failed."""


class TransportError(FedLearnError):
    """The coordinator could not be reached or answered with an error."""
