"""Starting a coordinator on its stores: a new run, or the resumption of one.

A new run stores the initial model as round 0. An existing run continues from
its last completed round; a round that was open when the process died is
rebuilt from the update blobs it had acknowledged, which are durable by then.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fedlearn.core.aggregation import StreamingFedAvg
from fedlearn.core.central_dp import Aggregator
from fedlearn.core.types import (
    RoundRecord,
    RoundStatus,
    RunRecord,
    TensorSpec,
    Weights,
)
from fedlearn.service.messages import CoordinatorConfig
from fedlearn.service.model_state import GlobalModel, flatten
from fedlearn.service.open_round import OpenRound, take_in_stored
from fedlearn.service.ports import Evaluator, ModelStore, RunStore

__all__ = ["RunProgress", "StartState", "round_key", "run_progress", "start_run"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StartState:
    """Where a (re)started run stands."""

    global_model: GlobalModel
    open_round: OpenRound | None
    last_round: int
    completed_rounds: int


@dataclass(frozen=True, slots=True)
class RunProgress:
    """Where a run stands, read off its stored rounds."""

    latest: RoundRecord | None
    last_completed: RoundRecord | None
    completed_rounds: int
    """Completed rounds after round 0 (the initial model)."""
    failed_in_a_row: int
    """Failed rounds since the last one that did not fail."""


def run_progress(rounds: Sequence[RoundRecord]) -> RunProgress:
    """``rounds`` in round order, as ``RunStore.list_rounds`` gives them."""
    completed = [r for r in rounds if r.status is RoundStatus.COMPLETED]
    failed = 0
    for r in reversed(rounds):
        if r.status is not RoundStatus.FAILED:
            break
        failed += 1
    return RunProgress(
        latest=rounds[-1] if rounds else None,
        last_completed=completed[-1] if completed else None,
        completed_rounds=sum(1 for r in completed if r.round_number > 0),
        failed_in_a_row=failed,
    )


def round_key(run_id: str, round_number: int) -> str:
    """Model-store prefix of one round's blobs."""
    return f"{run_id}/rounds/{round_number:05d}"


def start_run(
    config: CoordinatorConfig,
    initial_weights: Weights,
    *,
    specs: tuple[TensorSpec, ...],
    runs: RunStore,
    models: ModelStore,
    evaluator: Evaluator | None,
    now: float,
    new_aggregator: Callable[[int], Aggregator] = StreamingFedAvg,
) -> StartState:
    """Create the run if it is new, else load its latest global model and open round
    (its stored updates folded again into ``new_aggregator(model size)``)."""
    if runs.get_run(config.run_id) is None:
        runs.create_run(RunRecord(config.run_id, config.model_name, now))
    rounds = runs.list_rounds(config.run_id)
    progress = run_progress(rounds)
    last_round = rounds[-1].round_number if rounds else 0
    done = progress.completed_rounds
    last = progress.last_completed
    if last is None:
        model = _store_initial_model(
            config, initial_weights, specs=specs, runs=runs, models=models,
            evaluator=evaluator, now=now,
        )  # fmt: skip
        return StartState(model, None, last_round, done)
    assert last.global_model_path is not None
    model = GlobalModel.load(
        last.round_number,
        last.global_model_path,
        specs=specs,
        store=models,
        server_state_path=last.server_state_path,
    )
    open_round = None
    if rounds[-1].status is RoundStatus.OPEN:
        aggregator = new_aggregator(model.vector.size)
        open_round = _resume(rounds[-1], model, runs=runs, models=models, aggregator=aggregator)
    logger.info("resumed run %s at round %d (%d completed)", config.run_id, last_round, done)
    return StartState(model, open_round, last_round, done)


def _store_initial_model(
    config: CoordinatorConfig,
    initial_weights: Weights,
    *,
    specs: tuple[TensorSpec, ...],
    runs: RunStore,
    models: ModelStore,
    evaluator: Evaluator | None,
    now: float,
) -> GlobalModel:
    model = GlobalModel.from_vector(
        0,
        flatten(initial_weights),
        specs=specs,
        store=models,
        key_prefix=round_key(config.run_id, 0),
    )
    result = evaluator.evaluate(model.weights()) if evaluator else None
    runs.create_round(
        RoundRecord(
            run_id=config.run_id,
            round_number=0,
            status=RoundStatus.COMPLETED,
            selected_clients=(),
            config=config.round_config,
            started_at=now,
            deadline_at=now,
            global_model_path=model.path,
            completed_at=now,
            accuracy=result.accuracy if result else None,
            loss=result.loss if result else None,
        )
    )
    return model


def _resume(
    record: RoundRecord,
    model: GlobalModel,
    *,
    runs: RunStore,
    models: ModelStore,
    aggregator: Aggregator,
) -> OpenRound:
    open_ = OpenRound(record, aggregator)
    take_in_stored(open_, runs=runs, models=models, specs=model.specs, fold=True)
    logger.info(
        "round %d reopened with %d stored updates", record.round_number, len(open_.received)
    )
    return open_
