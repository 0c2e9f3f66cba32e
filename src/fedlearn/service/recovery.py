"""Recovering from what goes wrong in a run, without losing what was accepted.

``ErrorRecoveryManager`` holds the policies and the store changes; the
coordinator calls it under its lock and applies the outcome to its in-memory
state (which round is open, which model is global):

- a client that misses the round deadline is recorded (``deadline_missed``);
- a round whose aggregation fails is marked failed: no global model is
  published, the stored rows stay as they were, the next round starts from the
  same model;
- a global model whose evaluation diverges (a non-finite loss, or an accuracy
  more than ``max_accuracy_drop`` below the last good round's) is rolled back;
- an operator can roll back to any completed round (``fedlearn rollback``).

A rollback never deletes: the rounds after the target keep their rows and
blobs and are marked ``rolled_back`` with the reason, so the history shows
them; a restart resumes from the last round still ``completed``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

from fedlearn.core.types import (
    EvalResult,
    RejectionRecord,
    RoundRecord,
    RoundStatus,
    TensorSpec,
)
from fedlearn.errors import ConflictError, NotFoundError
from fedlearn.service.closing import fail_round
from fedlearn.service.messages import RollbackOutcome
from fedlearn.service.model_state import GlobalModel
from fedlearn.service.open_round import OpenRound
from fedlearn.service.ports import ModelStore, RunStore

__all__ = ["ErrorRecoveryManager", "Rollback"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rollback:
    """The outcome of a rollback: the model restored and the rounds undone."""

    restored: GlobalModel
    rolled_back: tuple[int, ...]
    reason: str

    @property
    def outcome(self) -> RollbackOutcome:
        return RollbackOutcome(self.restored.round_number, self.rolled_back, self.reason)


class ErrorRecoveryManager:
    """Failure policies of one run, applied to its stores."""

    def __init__(
        self,
        run_id: str,
        *,
        runs: RunStore,
        models: ModelStore,
        specs: tuple[TensorSpec, ...],
        max_accuracy_drop: float | None = None,
    ) -> None:
        self._run_id = run_id
        self._runs = runs
        self._models = models
        self._specs = specs
        self._max_drop = max_accuracy_drop

    # -- clients and rounds ------------------------------------------------------

    def handle_client_timeout(self, open_: OpenRound, *, now: float) -> tuple[str, ...]:
        """Record every selected client that had not reported when the deadline
        passed (reason ``deadline_missed``); their ids, in selection order."""
        missing = tuple(
            c
            for c in open_.record.selected_clients
            if c not in open_.received and c not in open_.declined
        )
        for client_id in missing:
            message = f"missed the deadline of round {open_.number}; dropped from the round"
            try:
                self._runs.add_rejection(
                    RejectionRecord(
                        run_id=self._run_id,
                        round_number=open_.number,
                        client_id=client_id,
                        update_id="",
                        reason="deadline_missed",
                        message=message,
                        rejected_at=now,
                    )
                )
            except Exception:  # the record is for people; the round must go on
                logger.exception("could not record that %s missed the deadline", client_id)
        if missing:
            logger.warning(
                "round %d: %d clients missed the deadline: %s",
                open_.number,
                len(missing),
                ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""),
            )
        return missing

    def handle_aggregation_failure(
        self, open_: OpenRound, error: BaseException, *, now: float
    ) -> None:
        """Fail the round: the global model stays as it was and nothing is published."""
        fail_round(
            open_, f"aggregation failed: {error}", runs=self._runs, models=self._models, now=now
        )

    # -- divergence and rollbacks -------------------------------------------------

    def divergence(self, round_number: int, result: EvalResult) -> str | None:
        """Why the evaluated model of ``round_number`` diverged, or ``None``."""
        if not math.isfinite(result.loss) or not math.isfinite(result.accuracy):
            return f"round {round_number} diverged: evaluation loss {result.loss}"
        if self._max_drop is None:
            return None
        baseline = self._last_good(before=round_number, scored=True)
        if baseline is None or baseline.accuracy is None:
            return None
        drop = baseline.accuracy - result.accuracy
        if drop > self._max_drop:
            return (
                f"round {round_number} diverged: accuracy {result.accuracy:.4f} is "
                f"{drop:.4f} below round {baseline.round_number}'s {baseline.accuracy:.4f} "
                f"(allowed drop {self._max_drop:g})"
            )
        return None

    def handle_model_divergence(self, round_number: int, reason: str) -> Rollback:
        """Roll back to the last completed round before ``round_number``."""
        good = self._last_good(before=round_number, scored=False)
        if good is None:  # round 0 is always completed; only a broken store gets here
            raise ConflictError(f"no completed round before round {round_number}")
        return self.trigger_emergency_rollback(good.round_number, reason=reason)

    def trigger_emergency_rollback(self, target_round: int, *, reason: str) -> Rollback:
        """Make completed round ``target_round``'s model the global model again.

        Every completed round after it is marked ``rolled_back`` with ``reason``;
        ``NotFoundError`` if the target does not exist, ``ConflictError`` if it
        is not a completed round.
        """
        rounds = self._runs.list_rounds(self._run_id)
        target = next((r for r in rounds if r.round_number == target_round), None)
        if target is None:
            raise NotFoundError(f"round {target_round} does not exist in run {self._run_id}")
        if target.status is not RoundStatus.COMPLETED or target.global_model_path is None:
            raise ConflictError(
                f"round {target_round} is {target.status.value}, not completed: "
                "only a completed round's model can be restored"
            )
        restored = GlobalModel.load(
            target.round_number,
            target.global_model_path,
            specs=self._specs,
            store=self._models,
            server_state_path=target.server_state_path,
        )
        undone = [
            r for r in rounds if r.round_number > target_round and r.status is RoundStatus.COMPLETED
        ]
        for record in undone:
            self._runs.save_round(
                replace(record, status=RoundStatus.ROLLED_BACK, failure_reason=reason)
            )
        logger.warning(
            "rolled back to round %d (%s); rounds undone: %s",
            target_round,
            reason,
            ", ".join(str(r.round_number) for r in undone) or "none",
        )
        return Rollback(restored, tuple(r.round_number for r in undone), reason)

    def rollback_stopped_run(self, target_round: int, *, reason: str, now: float) -> Rollback:
        """``trigger_emergency_rollback`` for a run no coordinator is serving: its
        open round, trained on a model being undone, is failed in the store too."""
        outcome = self.trigger_emergency_rollback(target_round, reason=reason)
        for record in self._runs.list_rounds(self._run_id):
            if record.status is RoundStatus.OPEN:
                self._runs.save_round(
                    replace(
                        record, status=RoundStatus.FAILED, completed_at=now, failure_reason=reason
                    )
                )
        return outcome

    def _last_good(self, *, before: int, scored: bool) -> RoundRecord | None:
        """The latest completed round numbered below ``before`` (with an accuracy
        if ``scored``)."""
        candidates = [
            r
            for r in self._runs.list_rounds(self._run_id)
            if r.round_number < before
            and r.status is RoundStatus.COMPLETED
            and (r.accuracy is not None or not scored)
        ]
        return candidates[-1] if candidates else None
