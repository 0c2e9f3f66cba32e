"""``InMemoryRunStore``: the ``RunStore`` port in dictionaries, for tests and simulation.

It behaves like ``SqlRunStore`` in every way the contract tests check: the same
errors for duplicates (``ConflictError``), missing parents and unknown rounds
(``NotFoundError``) and values SQL cannot hold (``StorageError``), the same
orders, and records that read back as a SQL round trip returns them.
One lock guards all state, so it is safe to share between threads.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from fedlearn.core.types import (
    CentralPrivacyState,
    ClientRecord,
    PrivacySpend,
    RejectionRecord,
    RoundRecord,
    RunRecord,
    UpdateRecord,
    round_lease_name,
)
from fedlearn.errors import ConflictError, FencedError, NotFoundError
from fedlearn.persistence import _records as rec

if TYPE_CHECKING:
    from fedlearn.service.ports import RunStore

__all__ = ["InMemoryRunStore"]


class InMemoryRunStore:
    """Runs, clients, rounds, updates and rejections held in this process only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, RunRecord] = {}
        self._clients: dict[tuple[str, str], ClientRecord] = {}
        self._rounds: dict[tuple[str, int], RoundRecord] = {}
        self._updates: dict[tuple[str, str], UpdateRecord] = {}
        # update ids of each round, in the order they were stored
        self._round_updates: dict[tuple[str, int], list[str]] = {}
        self._rejections: list[RejectionRecord] = []
        self._privacy: dict[tuple[str, str], PrivacySpend] = {}
        self._central: dict[str, CentralPrivacyState] = {}
        self._tokens: dict[tuple[str, int], int] = {}
        """Each round's fencing token, where one claimed it."""

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._lock:
            return self._runs.get(run_id)

    def create_run(self, run: RunRecord) -> None:
        run = rec.prepare_run(run)
        with self._lock:
            if run.run_id in self._runs:
                raise ConflictError(f"run {run.run_id!r} already exists")
            self._runs[run.run_id] = run

    def upsert_client(self, client: ClientRecord) -> None:
        stored = rec.prepare_client(client)
        with self._lock:
            self._require_run(client.run_id)
            self._clients[client.run_id, client.client_id] = stored

    def get_client(self, run_id: str, client_id: str) -> ClientRecord | None:
        with self._lock:
            return self._clients.get((run_id, client_id))

    def list_clients(self, run_id: str) -> Sequence[ClientRecord]:
        """The run's clients, by client id (code point order)."""
        with self._lock:
            found = [c for (run, _), c in self._clients.items() if run == run_id]
        return sorted(found, key=lambda c: c.client_id)

    def create_round(self, round_: RoundRecord) -> None:
        stored = rec.prepare_round(round_)
        key = (round_.run_id, round_.round_number)
        with self._lock:
            self._require_run(round_.run_id)
            if key in self._rounds:
                raise ConflictError(
                    f"round {round_.round_number} of run {round_.run_id!r} already exists"
                )
            self._rounds[key] = stored
            self._round_updates[key] = []

    def claim_round(self, run_id: str, round_number: int) -> int:
        key = (run_id, round_number)
        with self._lock:
            self._require_round(key)
            self._tokens[key] = self._tokens.get(key, 0) + 1
            return self._tokens[key]

    def save_round(
        self,
        round_: RoundRecord,
        *,
        fence: int | None = None,
        expect_updates: Collection[str] | None = None,
    ) -> None:
        """Replace a stored round; ``NotFoundError`` if it was never created."""
        stored = rec.prepare_round(round_)
        key = (round_.run_id, round_.round_number)
        with self._lock:
            self._require_round(key)
            if fence is not None and self._tokens.get(key) != fence:
                raise FencedError(round_lease_name(*key), fence)
            if expect_updates is not None:
                rec.check_update_set(round_, self._round_updates[key], expect_updates)
            self._rounds[key] = stored

    def _require_round(self, key: tuple[str, int]) -> None:
        if key not in self._rounds:
            raise NotFoundError(f"round {key[1]} of run {key[0]!r} does not exist")

    def get_round(self, run_id: str, round_number: int) -> RoundRecord | None:
        with self._lock:
            return self._rounds.get((run_id, round_number))

    def latest_round(self, run_id: str) -> RoundRecord | None:
        rounds = self.list_rounds(run_id)
        return rounds[-1] if rounds else None

    def list_rounds(self, run_id: str) -> Sequence[RoundRecord]:
        with self._lock:
            found = [r for (run, _), r in self._rounds.items() if run == run_id]
        return sorted(found, key=lambda r: r.round_number)

    def add_update(self, update: UpdateRecord, *, only_if_open: bool = False) -> None:
        """Store an update; ``NotFoundError`` if its round does not exist."""
        update = rec.prepare_update(update)
        round_key = (update.run_id, update.round_number)
        with self._lock:
            if (update.run_id, update.update_id) in self._updates:
                raise ConflictError(
                    f"update {update.update_id!r} of run {update.run_id!r} already exists"
                )
            if round_key not in self._rounds:
                raise NotFoundError(
                    f"round {update.round_number} of run {update.run_id!r} does not exist"
                )
            if only_if_open:
                rec.check_round_open(self._rounds[round_key])
            if any(
                self._updates[update.run_id, other].client_id == update.client_id
                for other in self._round_updates[round_key]
            ):
                raise rec.second_update_error(update)
            self._updates[update.run_id, update.update_id] = update
            self._round_updates[round_key].append(update.update_id)

    def get_update(self, run_id: str, update_id: str) -> UpdateRecord | None:
        with self._lock:
            return self._updates.get((run_id, update_id))

    def list_updates(self, run_id: str, round_number: int) -> Sequence[UpdateRecord]:
        with self._lock:
            ids = self._round_updates.get((run_id, round_number), [])
            return [self._updates[run_id, update_id] for update_id in ids]

    def add_rejection(self, rejection: RejectionRecord) -> None:
        """Store a rejection; ``NotFoundError`` if its run does not exist."""
        stored = rec.prepare_rejection(rejection)
        with self._lock:
            self._require_run(rejection.run_id)
            self._rejections.append(stored)

    def count_rejections(self, run_id: str, round_number: int | None = None) -> dict[str, int]:
        counts: dict[str, int] = {}
        for rejection in self._rejections_of(run_id, round_number):
            counts[rejection.reason] = counts.get(rejection.reason, 0) + 1
        return counts

    def list_rejections(self, run_id: str, round_number: int) -> Sequence[RejectionRecord]:
        return self._rejections_of(run_id, round_number)

    def _rejections_of(self, run_id: str, round_number: int | None) -> list[RejectionRecord]:
        with self._lock:
            return [
                r
                for r in self._rejections
                if r.run_id == run_id and round_number in (None, r.round_number)
            ]

    def save_privacy(self, spend: PrivacySpend) -> None:
        stored = rec.prepare_privacy(spend)
        with self._lock:
            if (spend.run_id, spend.client_id) not in self._clients:
                raise NotFoundError(
                    f"client {spend.client_id!r} is not registered in run {spend.run_id!r}"
                )
            self._privacy[spend.run_id, spend.client_id] = stored

    def list_privacy(self, run_id: str) -> Sequence[PrivacySpend]:
        with self._lock:
            found = [p for (run, _), p in self._privacy.items() if run == run_id]
        return sorted(found, key=lambda p: p.client_id)

    def save_central_privacy(self, state: CentralPrivacyState) -> None:
        stored = rec.prepare_central_privacy(state)
        with self._lock:
            self._require_run(state.run_id)
            self._central[state.run_id] = stored

    def get_central_privacy(self, run_id: str) -> CentralPrivacyState | None:
        with self._lock:
            stored = self._central.get(run_id)
        # a fresh copy of the JSON, as a SQL read returns
        return None if stored is None else rec.prepare_central_privacy(stored)

    def _require_run(self, run_id: str) -> None:
        if run_id not in self._runs:
            raise NotFoundError(f"run {run_id!r} does not exist")


if TYPE_CHECKING:

    def _implements_port(store: InMemoryRunStore) -> RunStore:
        return store  # mypy checks that the class satisfies the protocol
