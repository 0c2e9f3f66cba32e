"""A client's life: register, wait for rounds, train, send the delta, repeat.

The runtime talks to the coordinator only through the ``CoordinatorApi`` port
and to PyTorch only through the ``Trainer`` protocol, so tests can drive it
with fakes. Only weights deltas and metrics leave the process; the images stay
inside the trainer.

With a state folder (:class:`~fedlearn.client.recovery.Recovery`), each update is
written to the outbox before it is sent and deleted once acknowledged; pending updates
are re-sent with their update id at start-up and after a transport failure. Training
is checkpointed after each epoch but the last (the outbox holds that one) and resumed
after a crash in the same round. An
out-of-memory error halves the batch size and retries the round. Where many clients
share one machine, ``ClientOptions.compute_slot`` bounds how many of them train at once.

Each update carries the epsilon the client has spent (``privacy_budget_used``, 0 without
DP). A trainer that would exceed its privacy budget raises
:class:`~fedlearn.errors.PrivacyBudgetExhaustedError`: the client then tells the coordinator
(it registers again saying its budget is exhausted, so it is no longer selected) and
:meth:`ClientRuntime.run` returns.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import numpy.typing as npt

from fedlearn.client.checkpoints import RoundCheckpoints, round_key
from fedlearn.client.compression import UpdateEncoder
from fedlearn.client.memory import return_free_heap, train_with_smaller_batches
from fedlearn.client.outbox import Outbox, OutboxEntry
from fedlearn.client.recovery import Recovery
from fedlearn.core.downstream import apply_delta, unflatten
from fedlearn.core.serialization import decode_weights, encode_weights
from fedlearn.core.types import ClientCapabilities, EvalResult, RoundConfig, TensorSpec, Weights
from fedlearn.errors import (
    ConflictError,
    NotFoundError,
    PrivacyBudgetExhaustedError,
    StaleRoundError,
    TransportError,
    UpdateRejectedError,
)
from fedlearn.service.messages import GlobalModelBlob, Task, TaskKind, UpdateSubmission
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
    @property
    def privacy_budget_used(self) -> float: ...


class Trainer(Protocol):
    """Local training as the runtime needs it (``LocalTrainer`` implements it)."""

    def set_weights(self, weights: Weights) -> None: ...
    def get_weights(self) -> dict[str, np.ndarray]: ...
    def train(
        self,
        config: RoundConfig,
        *,
        round_number: int,
        checkpoints: RoundCheckpoints | None = None,
    ) -> TrainOutcome: ...
    def evaluate_holdout(self) -> EvalResult | None: ...


@dataclass(frozen=True, slots=True)
class ClientOptions:
    client_id: str | None = None
    capabilities: ClientCapabilities = field(default_factory=ClientCapabilities)
    poll_wait_s: float = 5.0
    compute_slot: Callable[[], AbstractContextManager[object]] = nullcontext
    """Held around each round's evaluation and training: e.g. one of the machine's
    :class:`~fedlearn.client.slots.TrainingSlots`; by default nothing to wait for."""
    release_heap: bool = False
    """Hand free heap pages back to the system after training and after each round
    (smaller idle memory; each round then faults its buffers in again)."""


@dataclass(frozen=True, slots=True)
class ClientReport:
    client_id: str
    rounds_trained: int
    last_round: int


@dataclass(frozen=True, slots=True)
class _HeldModel:
    """The last global model this client downloaded, as the coordinator identifies it."""

    sha256: str
    vector: npt.NDArray[np.float32]
    specs: tuple[TensorSpec, ...]


class ClientRuntime:
    """Runs one client until the coordinator says the run is finished."""

    def __init__(
        self,
        api: CoordinatorApi,
        trainer_factory: Callable[[str], Trainer],
        options: ClientOptions,
        *,
        on_round: Callable[[int, TrainOutcome], None] | None = None,
        recovery: Recovery | None = None,
    ) -> None:
        self._api = api
        self._trainer_factory = trainer_factory
        self._trainer: Trainer | None = None
        self._options = options
        self._on_round = on_round
        self._recovery = recovery or Recovery()
        self._outbox: Outbox | None = self._recovery.state.outbox if self._recovery.state else None
        self._run_id = ""
        self._flush_needed = self._outbox is not None
        self._held: _HeldModel | None = None
        state = self._recovery.state
        self._encoder = UpdateEncoder(
            state_dir=state.directory if state is not None else None, rng=np.random.default_rng()
        )

    def with_recovery(self, recovery: Recovery) -> ClientRuntime:
        """The same client with other fault-tolerance settings (call before :meth:`run`)."""
        return ClientRuntime(
            self._api,
            self._trainer_factory,
            self._options,
            on_round=self._on_round,
            recovery=recovery,
        )

    def _register(self) -> str:
        registration = self._api.register(self._options.client_id, self._options.capabilities)
        logger.info(
            "registered as %s in run %s (model %s)",
            registration.client_id,
            registration.run_id,
            registration.model_name,
        )
        self._run_id = registration.run_id
        self._encoder.use_run(registration.run_id)
        if self._trainer is None:
            self._trainer = self._trainer_factory(registration.model_name)
        return registration.client_id

    def run(self) -> ClientReport:
        client_id = self._register()
        trained = 0
        last = 0
        while True:
            try:
                if self._flush_needed:
                    self._flush_outbox(client_id)
                task = self._api.poll_task(client_id, wait_s=self._options.poll_wait_s)
            except NotFoundError:
                logger.warning("the coordinator does not know %s; registering again", client_id)
                client_id = self._register()
                continue
            if task.kind is TaskKind.FINISHED:
                logger.info("run finished after %d rounds of training here", trained)
                return ClientReport(client_id, trained, last)
            if task.kind is not TaskKind.TRAIN:
                continue
            try:
                if self._train_round(client_id, task):
                    trained += 1
                    last = task.round_number
            except PrivacyBudgetExhaustedError as exc:
                self._leave_out_of_budget(client_id, exc)
                return ClientReport(client_id, trained, last)

    def _leave_out_of_budget(self, client_id: str, error: PrivacyBudgetExhaustedError) -> None:
        """Tell the coordinator to stop selecting this client, which then stops."""
        caps = replace(self._options.capabilities, budget_exhausted=True)
        self._api.register(client_id, caps)
        logger.warning("%s; the coordinator will no longer select this client", error)

    # -- the outbox -----------------------------------------------------------------

    def _flush_outbox(self, client_id: str) -> None:
        """Re-send the pending updates that still fit the open round; drop the rest."""
        assert self._outbox is not None
        for entry in self._outbox.pending():
            sub = entry.submission
            reason = self._why_not_resend(entry, client_id)
            if reason:
                logger.warning(
                    "dropping the pending update %s for round %d: %s",
                    sub.update_id,
                    sub.round_number,
                    reason,
                )
                self._outbox.remove(entry)
                continue
            logger.info(
                "re-sending the pending update %s for round %d", sub.update_id, sub.round_number
            )
            self._deliver(entry)
        self._flush_needed = False

    def _why_not_resend(self, entry: OutboxEntry, client_id: str) -> str:
        sub = entry.submission
        if entry.run_id != self._run_id or sub.client_id != client_id:
            return f"it belongs to client {sub.client_id} of run {entry.run_id}"
        try:
            blob = self._api.download_model(client_id, sub.round_number)
        except StaleRoundError:
            return "that round is no longer open"
        if blob.sha256 != entry.base_digest:
            return "it was trained from another global model"
        return ""

    def _deliver(self, entry: OutboxEntry) -> bool:
        """Send ``entry``; True once the coordinator stored it (now or before)."""
        sub = entry.submission
        try:
            ack = self._api.submit_update(sub)
        except (StaleRoundError, ConflictError) as exc:
            logger.warning("round %d update not taken: %s", sub.round_number, exc)
            self._forget(entry)
            return False
        except UpdateRejectedError:
            self._forget(entry)
            raise
        except TransportError as exc:
            if self._outbox is None:
                raise
            logger.warning(
                "round %d update kept in the outbox, to be re-sent: %s", sub.round_number, exc
            )
            self._flush_needed = True
            return False
        self._forget(entry)
        logger.info(
            "round %d: update %s%s (%d/%d updates in)",
            sub.round_number,
            sub.update_id,
            " was already stored" if ack.duplicate else " accepted",
            ack.updates_received,
            ack.updates_expected,
        )
        return True

    def _forget(self, entry: OutboxEntry) -> None:
        if self._outbox is not None:
            self._outbox.remove(entry)

    # -- one round ------------------------------------------------------------------

    def _train_round(self, client_id: str, task: Task) -> bool:
        assert task.config is not None and self._trainer is not None
        try:
            base, digest = self._download(client_id, task.round_number)
        except StaleRoundError:
            return False
        trainer = self._trainer
        checkpoints = self._checkpoints(client_id, task.round_number, digest)
        with self._options.compute_slot():
            trainer.set_weights(base)
            evaluation = trainer.evaluate_holdout()
            outcome = self._train(base, task, checkpoints)
            self._release_heap()  # the training's activations and gradients
            if outcome is None:
                return False
            delta = _delta(trainer.get_weights(), base)
        submission = UpdateSubmission(
            client_id=client_id,
            round_number=task.round_number,
            update_id=uuid.uuid4().hex,
            payload=self._encode(delta, task.config.codec),
            num_samples=outcome.samples,
            training_loss=outcome.loss,
            eval_accuracy=evaluation.accuracy if evaluation else None,
            eval_loss=evaluation.loss if evaluation else None,
            eval_samples=evaluation.samples if evaluation else 0,
            train_seconds=outcome.seconds,
            privacy_budget_used=outcome.privacy_budget_used,
        )
        entry = OutboxEntry(submission, run_id=self._run_id, base_digest=digest)
        if self._outbox is not None:
            self._outbox.put(entry)
        if checkpoints is not None:
            checkpoints.clear()
        logger.info(
            "round %d: loss %.4f on %d samples in %.2f s",
            task.round_number,
            outcome.loss,
            outcome.samples,
            outcome.seconds,
        )
        delivered = self._deliver(entry)
        del entry, submission, delta
        self._release_heap()  # the update and its payload, before the wait for the next round
        if not delivered:
            return False
        if self._on_round is not None:
            self._on_round(task.round_number, outcome)
        return True

    def _release_heap(self) -> None:
        if self._options.release_heap:
            return_free_heap()

    def _download(self, client_id: str, round_number: int) -> tuple[dict[str, np.ndarray], str]:
        """The round's model as named tensors, and its identity (SHA-256 of its FLW1 form).

        The identity is the one the coordinator announced: the gRPC transport has
        checked the streamed payload against it, so it is not hashed again here.

        The model held from the last round is offered to the coordinator, which may
        answer with a compressed delta from it (a download codec); the rebuilt model
        must then hash to the identity the coordinator announced; if it does not,
        the model is downloaded again in full.
        """
        held = self._held
        blob = self._api.download_model(
            client_id, round_number, have_sha256=held.sha256 if held else ""
        )
        if blob.base_sha256:
            if held is None:
                raise ConflictError("the coordinator sent a delta although no model was offered")
            rebuilt = self._rebuild(held, blob)
            if rebuilt is None:
                logger.warning("could not rebuild the model from its delta: downloading it whole")
                self._held = None
                return self._download(client_id, round_number)
            vector, digest, specs = rebuilt, blob.model_sha256, held.specs
        else:
            decoded = decode_weights(blob.payload)
            specs = decoded.specs
            vector = np.ascontiguousarray(decoded.flat("float32"), dtype=np.float32)
            digest = blob.sha256  # the transport checked the payload against it
        self._held = _HeldModel(digest, vector, specs)
        # Views of the held vector, not copies: nothing writes to them (the trainer copies
        # them into its model), and a changed held model would fail its SHA-256 check.
        return unflatten(vector, specs), digest

    @staticmethod
    def _rebuild(held: _HeldModel, blob: GlobalModelBlob) -> npt.NDArray[np.float32] | None:
        """``held`` plus the delta in ``blob``; ``None`` unless that is the announced model."""
        if blob.base_sha256 != held.sha256:
            return None
        try:
            vector = apply_delta(held.vector, blob.payload)
        except UpdateRejectedError:
            return None
        if _digest(encode_weights(unflatten(vector, held.specs))) != blob.model_sha256:
            return None
        return vector

    def _encode(self, delta: dict[str, np.ndarray], codec: str) -> bytes:
        """The update in the run's codec, or uncompressed if this client does not know it."""
        stages = {part.split(":")[0] for part in codec.split("+")} if codec else set()
        if not stages <= {"raw", *self._options.capabilities.codecs}:
            logger.warning("codec %r is not among this client's codecs: sending raw", codec)
            codec = "raw"
        return self._encoder.encode(delta, codec)

    def _checkpoints(
        self, client_id: str, round_number: int, digest: str
    ) -> RoundCheckpoints | None:
        state = self._recovery.state
        if state is None:
            return None
        return state.checkpoints.for_round(round_key(self._run_id, client_id, round_number, digest))

    def _train(
        self, base: Weights, task: Task, checkpoints: RoundCheckpoints | None
    ) -> TrainOutcome | None:
        """The round's training, retried with smaller batches after out-of-memory errors."""
        assert task.config is not None and self._trainer is not None
        trainer, config = self._trainer, task.config

        def attempt(batch_size: int) -> TrainOutcome:
            if batch_size != config.batch_size:
                trainer.set_weights(base)
            return trainer.train(
                replace(config, batch_size=batch_size),
                round_number=task.round_number,
                checkpoints=checkpoints,
            )

        return train_with_smaller_batches(
            attempt,
            batch_size=config.batch_size,
            min_batch_size=self._recovery.min_batch_size,
            round_number=task.round_number,
        )


def _delta(trained: dict[str, np.ndarray], base: Weights) -> dict[str, npt.NDArray[np.float32]]:
    """``trained - base`` per tensor as float32, freeing each trained tensor once used."""
    delta = {}
    for name in base:
        diff = np.subtract(trained.pop(name), base[name])
        delta[name] = diff if diff.dtype == np.float32 else diff.astype(np.float32)
    return delta


def _digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()
