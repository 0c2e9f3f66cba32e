"""Recording refused update submissions, so a run can say why updates were lost.

Recording is best effort: the refusal itself is what the client must hear, so
a store that fails here is logged and never replaces the original error.
"""

from __future__ import annotations

import logging

from fedlearn.core.types import RejectionRecord
from fedlearn.service.messages import UpdateSubmission
from fedlearn.service.ports import RunStore

__all__ = ["record_rejection"]

logger = logging.getLogger(__name__)


def record_rejection(
    runs: RunStore,
    submission: UpdateSubmission,
    *,
    run_id: str,
    reason: str,
    error: Exception,
    now: float,
) -> None:
    """Store why ``submission`` was refused; log (never raise) if that fails."""
    rejection = RejectionRecord(
        run_id=run_id,
        round_number=submission.round_number,
        client_id=submission.client_id,
        update_id=submission.update_id,
        reason=reason,
        message=str(error),
        rejected_at=now,
    )
    logger.info(
        "rejected update %s of client %s for round %d: %s (%s)",
        submission.update_id,
        submission.client_id,
        submission.round_number,
        reason,
        error,
    )
    try:
        runs.add_rejection(rejection)
    except Exception:
        logger.exception(
            "could not record the rejection of update %s (%s)", submission.update_id, reason
        )
