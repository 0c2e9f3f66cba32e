"""Closing a round: aggregate, step the strategy, store, record.

A round either completes (a new global model is stored before the round row
says so) or, when closing raises, the caller fails it (the global model stays
as it was). If the process dies
half-way, the round row is still ``open`` and a restart redoes the close.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from fedlearn.core.metrics import convergence_metrics
from fedlearn.core.strategy import Strategy
from fedlearn.core.types import RoundStatus
from fedlearn.errors import ConflictError
from fedlearn.service.model_state import GlobalModel
from fedlearn.service.open_round import OpenRound
from fedlearn.service.ports import ModelStore, RunStore

__all__ = ["close_round", "drop_update_blobs", "fail_round"]

logger = logging.getLogger(__name__)


def close_round(
    open_: OpenRound,
    current: GlobalModel,
    *,
    strategy: Strategy,
    runs: RunStore,
    models: ModelStore,
    now: float,
    key_prefix: str,
    fence: int | None = None,
) -> GlobalModel:
    """Complete the round and return the new global model.

    Raises (``ConflictError`` for an aggregate that is empty or not finite, or
    whatever the stores raise) before the round row says ``completed``: the
    caller then fails the round, and the global model stays as it was.
    With ``fence`` (a round lease's token, in a cluster) the round row is written
    only while that token is the round's newest and only if the stored updates
    are exactly those in ``open_.received`` (``FencedError``, or ``ConflictError``
    with reason ``updates_changed``: fold the new ones and close again).
    """
    started = time.perf_counter()
    mean_delta = open_.aggregator.mean()
    step = strategy.step(current.vector, mean_delta, current.server_state)
    if not np.isfinite(step.weights).all():
        raise ConflictError("the new global model is not finite")
    new = GlobalModel.from_vector(
        open_.number,
        step.weights,
        specs=current.specs,
        store=models,
        key_prefix=key_prefix,
        server_state=step.state,
    )
    metrics = convergence_metrics(current.vector, new.vector, mean_delta)
    open_.timings = open_.timings.plus(close=time.perf_counter() - started)
    record = open_.closed(
        status=RoundStatus.COMPLETED,
        completed_at=now,
        global_model_path=new.path,
        server_state_path=new.server_state_path,
        update_norm=metrics.update_norm,
        model_delta_norm=metrics.model_delta_norm,
        convergence_score=metrics.convergence_score,
    )
    if fence is None:
        runs.save_round(record)
    else:
        expected = [u.update_id for u in open_.received.values()]
        runs.save_round(record, fence=fence, expect_updates=expected)
    logger.info(
        "round %d completed: %d updates, update norm %.4f",
        open_.number,
        record.participating_clients,
        metrics.update_norm,
    )
    return new


def fail_round(
    open_: OpenRound,
    reason: str,
    *,
    runs: RunStore,
    models: ModelStore,
    now: float,
    fence: int | None = None,
) -> None:
    """Mark the round failed; the global model and the accepted rows stay as they were.

    ``fence``: as for :func:`close_round`.
    """
    runs.save_round(
        open_.closed(status=RoundStatus.FAILED, completed_at=now, failure_reason=reason),
        fence=fence,
    )
    logger.warning("round %d failed: %s", open_.number, reason)


def drop_update_blobs(paths: list[str], models: ModelStore) -> None:
    """Delete a completed round's update blobs (its rows keep their metadata).

    The coordinator does this after the next round has opened, in the background: 50
    deletions of CNN-sized files took about 80 ms here, which the next round's clients
    would otherwise wait for. A crash before they are done leaves orphan blobs that no
    row needs, never a row without its blob.
    """
    for path in paths:
        models.delete(path)
