"""A client's life: register, wait for rounds, train, send the delta, repeat.

The runtime talks to the coordinator only through the ``CoordinatorApi`` port
and to PyTorch only through the ``Trainer`` protocol, so tests can drive it
with fakes. Only weights deltas and metrics leave the process; the images stay
inside the trainer.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fedlearn.core.serialization import decode_weights, encode_weights
from fedlearn.core.types import ClientCapabilities, EvalResult, RoundConfig, Weights
from fedlearn.errors import ConflictError, NotFoundError, StaleRoundError
from fedlearn.service.messages import Task, TaskKind, UpdateSubmission
from fedlearn.service.ports import CoordinatorApi

__all__ = ["ClientOptions", "ClientReport", "ClientRuntime", "Trainer", "TrainOutcome"]

logger = logging.getLogger(__name__)


class TrainOutcome(Protocol):
    @property
    def loss(self) -> float: ...
    @property
    def samples(self) -> int: ...
    @property
    def seconds(self) -> float: ...


class Trainer(Protocol):
    """Local training as the runtime needs it (``LocalTrainer`` implements it)."""

    def set_weights(self, weights: Weights) -> None: ...
    def get_weights(self) -> dict[str, np.ndarray]: ...
    def train(self, config: RoundConfig, *, round_number: int) -> TrainOutcome: ...
    def evaluate_holdout(self) -> EvalResult | None: ...


@dataclass(frozen=True, slots=True)
class ClientOptions:
    client_id: str | None = None
    capabilities: ClientCapabilities = field(default_factory=ClientCapabilities)
    poll_wait_s: float = 5.0


@dataclass(frozen=True, slots=True)
class ClientReport:
    client_id: str
    rounds_trained: int
    last_round: int


class ClientRuntime:
    """Runs one client until the coordinator says the run is finished."""

    def __init__(
        self,
        api: CoordinatorApi,
        trainer_factory: Callable[[str], Trainer],
        options: ClientOptions,
        *,
        on_round: Callable[[int, TrainOutcome], None] | None = None,
    ) -> None:
        self._api = api
        self._trainer_factory = trainer_factory
        self._trainer: Trainer | None = None
        self._options = options
        self._on_round = on_round

    def _register(self) -> str:
        registration = self._api.register(self._options.client_id, self._options.capabilities)
        logger.info(
            "registered as %s in run %s (model %s)",
            registration.client_id,
            registration.run_id,
            registration.model_name,
        )
        if self._trainer is None:
            self._trainer = self._trainer_factory(registration.model_name)
        return registration.client_id

    def run(self) -> ClientReport:
        client_id = self._register()
        trained = 0
        last = 0
        while True:
            try:
                task = self._api.poll_task(client_id, wait_s=self._options.poll_wait_s)
            except NotFoundError:
                logger.warning("the coordinator does not know %s; registering again", client_id)
                client_id = self._register()
                continue
            if task.kind is TaskKind.FINISHED:
                logger.info("run finished after %d rounds of training here", trained)
                return ClientReport(client_id, trained, last)
            if task.kind is TaskKind.TRAIN and self._train_round(client_id, task):
                trained += 1
                last = task.round_number

    def _train_round(self, client_id: str, task: Task) -> bool:
        assert task.config is not None and self._trainer is not None
        try:
            blob = self._api.download_model(client_id, task.round_number)
        except StaleRoundError:
            return False
        trainer = self._trainer
        base = {k: np.array(v) for k, v in decode_weights(blob.payload).tensors.items()}
        trainer.set_weights(base)
        evaluation = trainer.evaluate_holdout()
        outcome = trainer.train(task.config, round_number=task.round_number)
        trained = trainer.get_weights()
        delta = {name: (trained[name] - base[name]).astype(np.float32) for name in base}
        submission = UpdateSubmission(
            client_id=client_id,
            round_number=task.round_number,
            update_id=uuid.uuid4().hex,
            payload=encode_weights(delta),
            num_samples=outcome.samples,
            training_loss=outcome.loss,
            eval_accuracy=evaluation.accuracy if evaluation else None,
            eval_loss=evaluation.loss if evaluation else None,
            eval_samples=evaluation.samples if evaluation else 0,
            train_seconds=outcome.seconds,
        )
        try:
            ack = self._api.submit_update(submission)
        except (StaleRoundError, ConflictError) as exc:
            logger.warning("round %d update not taken: %s", task.round_number, exc)
            return False
        logger.info(
            "round %d: loss %.4f on %d samples in %.2f s (%d/%d updates in)",
            task.round_number,
            outcome.loss,
            outcome.samples,
            outcome.seconds,
            ack.updates_received,
            ack.updates_expected,
        )
        if self._on_round is not None:
            self._on_round(task.round_number, outcome)
        return True
