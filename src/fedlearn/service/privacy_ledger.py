"""The coordinator's privacy ledger: what each client spent, and who is out of budget.

Every update carries the epsilon its client has spent so far
(``privacy_budget_used``, computed by the client's accountant). The coordinator
checks that claim against the budget the client registered, keeps the latest
one per client in the run store (so a restart does not forget it), and stops
selecting a client that said it cannot train within its budget. A run that
requires DP refuses updates from clients without a budget or without a claim.
"""

from __future__ import annotations

import math
import threading
from dataclasses import replace

from fedlearn.core.types import ClientRecord, PrivacySpend
from fedlearn.errors import UpdateRejectedError
from fedlearn.service.messages import UpdateSubmission
from fedlearn.service.ports import RunStore

__all__ = ["PrivacyBook"]

_SLACK = 1e-9
"""Relative tolerance for comparing claims (floats that went through JSON and SQL)."""


class PrivacyBook:
    """The run's ledger lines, cached in memory and written through to the store."""

    def __init__(self, run_id: str, runs: RunStore, *, require_dp: bool) -> None:
        self._run_id = run_id
        self._runs = runs
        self.require_dp = require_dp
        self._lock = threading.Lock()
        self._lines = {p.client_id: p for p in runs.list_privacy(run_id)}

    def on_register(self, client: ClientRecord, *, now: float) -> None:
        """Record the client's budget, and whether it says it is exhausted."""
        caps = client.capabilities
        with self._lock:
            line = self._lines.get(client.client_id)
            if line is None and caps.privacy.epsilon <= 0 and not caps.budget_exhausted:
                return  # no DP, nothing to track
            line = line or PrivacySpend(self._run_id, client.client_id)
            line = replace(
                line,
                epsilon_budget=caps.privacy.epsilon,
                delta=caps.privacy.delta,
                exhausted=line.exhausted or caps.budget_exhausted,
                updated_at=now,
            )
            self._save(line)

    def check_claim(self, submission: UpdateSubmission, client: ClientRecord) -> None:
        """``UpdateRejectedError`` unless the update's privacy claim is acceptable."""
        claim = submission.privacy_budget_used
        budget = client.capabilities.privacy.epsilon
        if not math.isfinite(claim) or claim < 0:
            raise UpdateRejectedError("bad_privacy_claim", f"epsilon spent must be >= 0: {claim}")
        if self.require_dp and budget <= 0:
            raise UpdateRejectedError(
                "no_privacy_budget",
                f"this run requires DP and client {client.client_id} registered no budget",
            )
        if self.require_dp and claim <= 0:
            raise UpdateRejectedError(
                "no_privacy_claim", "this run requires DP and the update claims no epsilon spent"
            )
        if budget > 0 and claim > budget * (1 + _SLACK):
            raise UpdateRejectedError(
                "over_budget", f"the update claims epsilon {claim:.6g}, over the budget {budget:g}"
            )
        with self._lock:
            line = self._lines.get(client.client_id)
        if line is not None and claim < line.epsilon_spent * (1 - _SLACK):
            raise UpdateRejectedError(
                "privacy_claim_decreased",
                f"the update claims epsilon {claim:.6g}, less than the {line.epsilon_spent:.6g} "
                "already recorded",
            )

    def on_accept(self, submission: UpdateSubmission, client: ClientRecord, *, now: float) -> None:
        """Record the epsilon an accepted update says its client has spent."""
        claim = submission.privacy_budget_used
        if claim <= 0:
            return
        privacy = client.capabilities.privacy
        with self._lock:
            line = self._lines.get(client.client_id) or PrivacySpend(
                self._run_id, client.client_id, epsilon_budget=privacy.epsilon, delta=privacy.delta
            )
            spent = max(line.epsilon_spent, claim)
            self._save(replace(line, epsilon_spent=spent, updated_at=now))

    def exhausted(self) -> frozenset[str]:
        """Clients that must not be selected any more."""
        with self._lock:
            return frozenset(c for c, line in self._lines.items() if line.exhausted)

    def lines(self) -> tuple[PrivacySpend, ...]:
        with self._lock:
            return tuple(self._lines[c] for c in sorted(self._lines))

    def _save(self, line: PrivacySpend) -> None:
        self._runs.save_privacy(line)
        self._lines[line.client_id] = line
