"""What a coordinator needs to run as one replica of a cluster, and its round lease.

Replicas share the ``RunStore`` (PostgreSQL: the source of truth) and the
``ModelStore`` (a shared folder), and through these ports:

- ``LeaseStore``: one lease per round. Its holder, the round's *leader*, is the
  only replica that folds the round's updates, closes or fails it and opens the
  next one. Before it acts, the leader claims the round in the database, which
  issues the round's next fencing token; every write it then makes on the round
  row carries that token and is refused once a newer claim exists, so a leader
  that was paused or cut off past its lease cannot change the round after
  another replica took it over. The database issues the tokens (not Redis,
  which may restart empty), so they only ever count up;
- ``EventBus``: notices of round transitions, accepted updates and
  registrations, so replicas act at once instead of at their next resync;
- ``RoundCounters``: per-round counts every replica reads (updates accepted,
  bytes sent down);
- ``LivenessStore``: client heartbeats; rounds select among live clients.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fedlearn.core.types import ClusterEvent, ClusterEventKind, Lease, round_lease_name
from fedlearn.errors import StorageError
from fedlearn.service.ports import Clock, EventBus, LeaseStore, LivenessStore, RoundCounters

__all__ = ["ClusterPorts", "Leadership"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClusterPorts:
    """The shared services of a coordinator cluster, and this replica's name in it."""

    replica_id: str
    leases: LeaseStore
    events: EventBus
    counters: RoundCounters
    liveness: LivenessStore | None = None
    lease_ttl_s: float = 3.0
    """How long a round's lease outlives its holder's last renewal (renewed every third)."""
    resync_s: float = 1.0
    """How often a replica rereads the run from the database, events or not."""
    client_ttl_s: float = 60.0
    """A client that was not heard from for this long is not selected for new rounds."""

    def tell(
        self, kind: ClusterEventKind, run_id: str, round_number: int = 0, *, update_id: str = ""
    ) -> None:
        """Tell the other replicas; if Redis is down they find out at their next resync."""
        event = ClusterEvent(
            kind, run_id=run_id, replica=self.replica_id, round_number=round_number,
            update_id=update_id,
        )  # fmt: skip
        try:
            self.events.publish(event)
        except StorageError as exc:
            logger.warning("could not tell the other replicas (%s): %s", kind.value, exc)

    def heard_from(self, client_id: str) -> None:
        """Count the client alive (for the selection of later rounds)."""
        if self.liveness is None:
            return
        try:
            self.liveness.heartbeat(client_id, self.client_ttl_s)
        except StorageError as exc:
            logger.warning("could not record a heartbeat of %s: %s", client_id, exc)


class Leadership:
    """This replica's lease on the one round it leads, if any, and the fencing token
    the database issued when this replica claimed the round."""

    def __init__(self, ports: ClusterPorts, run_id: str, clock: Clock) -> None:
        self._ports = ports
        self._run_id = run_id
        self._clock = clock
        self.lease: Lease | None = None
        self.fence: int | None = None
        """``RunStore.claim_round``'s token: what this replica's writes to the round carry."""
        self._renewed_at = 0.0

    def name(self, round_number: int) -> str:
        return round_lease_name(self._run_id, round_number)

    def leads(self, round_number: int) -> bool:
        """Holds the round's lease and has claimed the round."""
        lease = self.lease
        return (
            lease is not None and self.fence is not None and lease.name == self.name(round_number)
        )

    @property
    def token(self) -> int:
        if self.fence is None:
            raise RuntimeError("this replica has claimed no round")
        return self.fence

    def acquire(self, round_number: int) -> Lease | None:
        """Take the round's lease if nobody holds it (giving up any other lease first)."""
        self.release()
        lease = self._ports.leases.acquire(
            self.name(round_number), self._ports.replica_id, self._ports.lease_ttl_s
        )
        if lease is not None:
            self.lease = lease
            self._renewed_at = self._clock.now()
        return lease

    def held_elsewhere(self, round_number: int) -> bool:
        current = self._ports.leases.current(self.name(round_number))
        return current is not None and current.holder != self._ports.replica_id

    def keep(self) -> bool:
        """Renew the lease once a third of its time has passed; ``False`` when it
        was lost (expired and perhaps taken), after which this replica holds none."""
        lease = self.lease
        if lease is None:
            return False
        now = self._clock.now()
        if now - self._renewed_at < self._ports.lease_ttl_s / 3:
            return True
        if self._ports.leases.renew(lease, self._ports.lease_ttl_s):
            self._renewed_at = now
            return True
        logger.warning("replica %s lost the lease %s", self._ports.replica_id, lease.name)
        self.lease = self.fence = None
        return False

    def drop(self) -> None:
        """Forget the lease without releasing it (it is no longer this replica's)."""
        self.lease = self.fence = None

    def release(self) -> None:
        lease, self.lease, self.fence = self.lease, None, None
        if lease is None:
            return
        try:
            self._ports.leases.release(lease)
        except StorageError as exc:  # it expires on its own
            logger.warning("could not release lease %s: %s", lease.name, exc)
