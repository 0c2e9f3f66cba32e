"""Ports: what the coordinator needs from the outside world, as protocols.

Adapters live in edge packages (``fedlearn.persistence`` and friends) and are
chosen in ``fedlearn.bootstrap``; the service only sees these protocols.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Protocol

from fedlearn.core.types import (
    CentralPrivacyState,
    ClientCapabilities,
    ClientRecord,
    ClusterEvent,
    EvalResult,
    Lease,
    PrivacySpend,
    RejectionRecord,
    RoundRecord,
    RunRecord,
    UpdateRecord,
    Weights,
)
from fedlearn.service.messages import (
    GlobalModelBlob,
    Registration,
    Task,
    TrainingStatus,
    UpdateAck,
    UpdateSubmission,
)

__all__ = [
    "Clock",
    "CoordinatorApi",
    "EventBus",
    "Evaluator",
    "LeaseStore",
    "LivenessStore",
    "ModelStore",
    "RoundCounters",
    "RunStore",
    "Subscription",
]


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...


class RunStore(Protocol):
    """Durable state of runs, clients, rounds, accepted updates and rejections.

    Errors: ``NotFoundError`` for unknown keys, ``ConflictError`` for a
    duplicate key, ``StorageError`` for a backend failure.
    """

    def get_run(self, run_id: str) -> RunRecord | None: ...

    def create_run(self, run: RunRecord) -> None: ...

    def upsert_client(self, client: ClientRecord) -> None:
        """Insert the client, or replace its capabilities and timestamps."""
        ...

    def get_client(self, run_id: str, client_id: str) -> ClientRecord | None: ...

    def list_clients(self, run_id: str) -> Sequence[ClientRecord]: ...

    def create_round(self, round_: RoundRecord) -> None:
        """Store a new round; ``ConflictError`` if that number already exists."""
        ...

    def claim_round(self, run_id: str, round_number: int) -> int:
        """Issue the round's next fencing token (1 for a round never claimed) and
        return it: from now on only writes fenced with it are accepted (a
        coordinator cluster's new round leader claims the round first). The
        database issues the tokens, so they keep counting up whatever happens to
        the lease store. ``NotFoundError`` if the round does not exist."""
        ...

    def save_round(
        self,
        round_: RoundRecord,
        *,
        fence: int | None = None,
        expect_updates: Collection[str] | None = None,
    ) -> None:
        """Replace a stored round with this version (same run and number).

        ``fence``: only while the round's fencing token is still ``fence``, else
        ``FencedError``. ``expect_updates``: only if the round's stored updates are
        exactly these update ids, else ``ConflictError`` (reason
        ``updates_changed``). Both are checked in the write's own transaction, so
        an update stored concurrently is either in the set or refused after it.
        """
        ...

    def get_round(self, run_id: str, round_number: int) -> RoundRecord | None: ...

    def latest_round(self, run_id: str) -> RoundRecord | None:
        """The round with the highest number, whatever its status."""
        ...

    def list_rounds(self, run_id: str) -> Sequence[RoundRecord]:
        """All rounds of a run, by round number."""
        ...

    def add_update(self, update: UpdateRecord, *, only_if_open: bool = False) -> None:
        """Store an accepted update; ``ConflictError`` if its ``update_id`` exists,
        or (reason ``already_submitted``) if its client already has an update in
        the round. ``only_if_open``: ``StaleRoundError`` unless the round is open,
        checked in the same transaction as the insert."""
        ...

    def get_update(self, run_id: str, update_id: str) -> UpdateRecord | None: ...

    def list_updates(self, run_id: str, round_number: int) -> Sequence[UpdateRecord]:
        """The accepted updates of a round, in the order they were stored."""
        ...

    def add_rejection(self, rejection: RejectionRecord) -> None:
        """Store a refused submission (its message truncated to 500 characters);
        ``NotFoundError`` if the run does not exist. Its round need not exist."""
        ...

    def count_rejections(self, run_id: str, round_number: int | None = None) -> dict[str, int]:
        """Rejections by reason, of one round or (``None``) of the whole run."""
        ...

    def list_rejections(self, run_id: str, round_number: int) -> Sequence[RejectionRecord]:
        """The rejections of a round, in the order they were stored."""
        ...

    def save_privacy(self, spend: PrivacySpend) -> None:
        """Insert or replace a client's privacy ledger line; ``NotFoundError`` if the
        client is not registered in the run."""
        ...

    def list_privacy(self, run_id: str) -> Sequence[PrivacySpend]:
        """The run's privacy ledger, by client id."""
        ...

    def save_central_privacy(self, state: CentralPrivacyState) -> None:
        """Insert or replace the run's central-DP accountant state; ``NotFoundError``
        if the run does not exist."""
        ...

    def get_central_privacy(self, run_id: str) -> CentralPrivacyState | None:
        """The run's central-DP accountant state, ``None`` if never saved."""
        ...


class ModelStore(Protocol):
    """Blobs: serialized global models, client updates and server state.

    Keys are relative paths such as ``run/rounds/0003/global.flw``; writes are
    atomic (a reader sees the whole blob or nothing).
    """

    def put(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key`` durably and return its path."""
        ...

    def get(self, path: str) -> bytes:
        """Read a stored blob; ``NotFoundError`` if absent."""
        ...

    def delete(self, path: str) -> None:
        """Remove a blob; absent blobs are ignored."""
        ...


class Evaluator(Protocol):
    """Scores a set of weights on a server-side test set."""

    def evaluate(self, weights: Weights) -> EvalResult: ...


class CoordinatorApi(Protocol):
    """The coordinator as a client sees it (gRPC in production, in-process in tests)."""

    def register(self, client_id: str | None, capabilities: ClientCapabilities) -> Registration: ...

    def poll_task(self, client_id: str, *, wait_s: float) -> Task: ...

    def download_model(
        self, client_id: str, round_number: int, *, have_sha256: str = ""
    ) -> GlobalModelBlob: ...

    def submit_update(self, submission: UpdateSubmission) -> UpdateAck: ...

    def status(self) -> TrainingStatus: ...


class LeaseStore(Protocol):
    """Named leases with fencing tokens, shared by the replicas of a coordinator cluster.

    A lease is held by one holder at a time until it is released or its time to live
    runs out. Every successful :meth:`acquire` of a name issues a fencing token larger
    than every token issued for that name before, also after the lease expired or was
    released, so a replica that was paused or cut off past its lease can be refused:
    a token stays valid (:meth:`check_token`) until a newer one is issued. (The
    coordinator fences its writes with tokens its database issues, which survive a
    lease store that restarts empty: see ``RunStore.claim_round``.)

    Errors: ``ValueError`` for a time to live that is not positive, ``StorageError``
    for a backend failure.
    """

    def acquire(self, name: str, holder: str, ttl_s: float) -> Lease | None:
        """Take the lease if nobody holds it (set-if-absent with expiry), with a fresh
        token; ``None`` if it is held, by this holder too (use :meth:`renew`)."""
        ...

    def renew(self, lease: Lease, ttl_s: float) -> bool:
        """Extend the lease to ``ttl_s`` from now; ``False`` (and no change) unless it
        is still held by ``lease.holder`` with ``lease.token``."""
        ...

    def release(self, lease: Lease) -> bool:
        """Give the lease up; ``False`` (and no change) unless it is still held by
        ``lease.holder`` with ``lease.token``. The token stays the newest issued."""
        ...

    def current(self, name: str) -> Lease | None:
        """The lease on ``name`` as it is now, ``None`` if nobody holds it."""
        ...

    def check_token(self, name: str, token: int) -> bool:
        """Whether ``token`` is the newest token issued for ``name``."""
        ...


class LivenessStore(Protocol):
    """Which clients were heard from lately, shared by the replicas of a coordinator.

    One store holds one group of clients (a run's, say). Errors: ``ValueError`` for a
    time to live that is not positive, ``StorageError`` for a backend failure.
    """

    def heartbeat(self, client_id: str, ttl_s: float) -> None:
        """Count the client alive for ``ttl_s`` from now (a later heartbeat replaces
        the earlier one, also with a shorter time to live)."""
        ...

    def alive(self) -> frozenset[str]:
        """The clients whose last heartbeat has not expired."""
        ...


class Subscription(Protocol):
    def close(self) -> None:
        """Stop delivering events; returns once no handler call is running."""
        ...


class EventBus(Protocol):
    """Fire-and-forget notices between the replicas of a coordinator cluster.

    Delivery is at most once and only to replicas subscribed at the time, so an
    event is a hint to act sooner: every replica also rereads the database on
    its own schedule. Handlers run on the bus's own thread, never inside
    :meth:`publish`. Errors: ``StorageError`` for a backend failure of
    :meth:`publish` (a failed delivery is logged by the bus).
    """

    def publish(self, event: ClusterEvent) -> None: ...

    def subscribe(self, handler: Callable[[ClusterEvent], None]) -> Subscription:
        """Call ``handler`` for every event published from now on (also this replica's)."""
        ...


class RoundCounters(Protocol):
    """Integer counters per round (accepted updates, say) that every replica reads.

    Errors: ``StorageError`` for a backend failure.
    """

    def add(self, run_id: str, round_number: int, name: str, amount: int = 1) -> int:
        """Add ``amount`` to the counter and return its new value."""
        ...

    def read(self, run_id: str, round_number: int) -> dict[str, int]:
        """Every counter of the round (missing ones are 0)."""
        ...
