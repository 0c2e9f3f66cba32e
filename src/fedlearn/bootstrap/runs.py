"""What a stopped run left behind: its stored rounds and model, and an operator's rollback."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedlearn.core.serialization import decode_weights
from fedlearn.core.types import RoundRecord, RoundStatus
from fedlearn.errors import NotFoundError
from fedlearn.persistence.engine import make_engine
from fedlearn.persistence.migrate import check_schema_current
from fedlearn.persistence.model_store import FileModelStore
from fedlearn.persistence.sql_store import SqlRunStore
from fedlearn.service.messages import RollbackOutcome
from fedlearn.service.recovery import ErrorRecoveryManager

__all__ = ["RunResult", "read_run", "rollback_stored_run"]


@dataclass(frozen=True, slots=True)
class RunResult:
    rounds: tuple[RoundRecord, ...]
    final_weights: dict[str, np.ndarray]
    model_name: str
    slowest_training_s: dict[int, float]
    """Per round, the longest local training time among its accepted updates."""


def read_run(database_url: str, model_dir: Path, run_id: str) -> RunResult:
    """The stored rounds of a run and its latest global model."""
    runs = SqlRunStore(make_engine(database_url))
    run = runs.get_run(run_id)
    if run is None:
        raise NotFoundError(f"no run {run_id!r} in {database_url}")
    rounds = tuple(runs.list_rounds(run_id))
    done = [
        r for r in rounds if r.status is RoundStatus.COMPLETED and r.global_model_path is not None
    ]
    if not done:
        raise NotFoundError(f"run {run_id!r} has no stored global model")
    payload = FileModelStore(model_dir).get(done[-1].global_model_path or "")
    weights = {k: np.array(v) for k, v in decode_weights(payload).tensors.items()}
    slowest = {
        r.round_number: max((u.train_seconds for u in updates), default=0.0)
        for r in rounds
        if (updates := runs.list_updates(run_id, r.round_number))
    }
    return RunResult(rounds, weights, run.model_name, slowest)


def rollback_stored_run(
    database_url: str, model_dir: Path, run_id: str, to_round: int, *, reason: str
) -> RollbackOutcome:
    """Roll back the run of a stopped coordinator: the open round (if any) fails, the
    completed rounds after ``to_round`` are marked rolled back; a restarted
    coordinator resumes from ``to_round``'s model."""
    engine = make_engine(database_url)
    check_schema_current(engine)
    runs = SqlRunStore(engine)
    if runs.get_run(run_id) is None:
        raise NotFoundError(f"no run {run_id!r} in {database_url}")
    models = FileModelStore(model_dir)
    target = runs.get_round(run_id, to_round)
    if target is None or target.global_model_path is None:
        raise NotFoundError(f"run {run_id!r} has no stored model for round {to_round}")
    specs = decode_weights(models.get(target.global_model_path)).specs
    manager = ErrorRecoveryManager(run_id, runs=runs, models=models, specs=specs)
    return manager.rollback_stopped_run(to_round, reason=reason, now=time.time()).outcome
