"""The coordinator's use cases: register, hand out rounds, accept updates, close rounds.

One :class:`Coordinator` serves one run. All state that matters lives in the
``RunStore`` and ``ModelStore``; in memory it keeps only the current global
model (encoded once for every download) and the open round's running sum, so
memory stays O(model size) however many clients report. A coordinator started
on an existing database resumes the run: completed rounds stay completed and
the open round is rebuilt from its stored updates.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import numpy as np

from fedlearn.core.aggregation import Axpy, StreamingFedAvg
from fedlearn.core.central_dp import Aggregator, NoiseSource
from fedlearn.core.codecs import parse_codec
from fedlearn.core.sampling import round_rng, sample_clients, sample_size
from fedlearn.core.schedule import round_config_for
from fedlearn.core.types import (
    ClientCapabilities,
    ClientRecord,
    ClusterEvent,
    ClusterEventKind,
    RoundRecord,
    RoundStatus,
    UpdateRecord,
    Weights,
)
from fedlearn.core.update_payload import DecodedUpdate, check_codec, decode_update_payload
from fedlearn.core.validation import (
    check_norm_outlier,
    validate_capabilities,
    validate_identifier,
    validate_metrics,
)
from fedlearn.errors import (
    ConfigError,
    ConflictError,
    FencedError,
    NotFoundError,
    StaleRoundError,
    UpdateRejectedError,
)
from fedlearn.service.background import background_thread
from fedlearn.service.central_privacy import CentralPrivacy
from fedlearn.service.closing import close_round, drop_update_blobs, fail_round
from fedlearn.service.cluster import ClusterPorts, Leadership
from fedlearn.service.messages import (
    CoordinatorConfig,
    GlobalModelBlob,
    RollbackOutcome,
    RoundSummary,
    RunState,
    Task,
    TaskKind,
    TrainingStatus,
    UpdateAck,
    UpdateSubmission,
)
from fedlearn.service.model_state import GlobalModel, specs_of
from fedlearn.service.open_round import OpenRound, take_in_stored
from fedlearn.service.ports import Clock, Evaluator, ModelStore, RunStore
from fedlearn.service.privacy_ledger import PrivacyBook
from fedlearn.service.recovery import ErrorRecoveryManager, Rollback
from fedlearn.service.rejections import record_rejection
from fedlearn.service.serving import ModelServing
from fedlearn.service.signals import CountingCondition
from fedlearn.service.startup import round_key, run_progress, start_run

__all__ = ["Coordinator"]

logger = logging.getLogger(__name__)


class Coordinator:
    """Use cases of one federated run, safe to call from many threads."""

    def __init__(
        self,
        config: CoordinatorConfig,
        initial_weights: Weights,
        *,
        runs: RunStore,
        models: ModelStore,
        clock: Clock,
        evaluator: Evaluator | None = None,
        noise: NoiseSource | None = None,
        cluster: ClusterPorts | None = None,
        failpoint: Callable[[str], None] | None = None,
        axpy: Axpy | None = None,
    ) -> None:
        """``noise``: the source of central DP's noise and client selection, needed
        when ``config.central_dp`` is set (a cryptographically secure one in
        production: whoever can predict it can subtract the noise).

        ``cluster``: run as one replica of a coordinator cluster (see
        ``fedlearn.service.cluster``); the stores must then be shared ones.

        ``failpoint``: called with a point's name (``"before_close"``: a round's
        leader is about to write the round's result) so that fault-injection
        tests can stop the process exactly there.

        ``axpy``: a fused ``y += a * x`` for the FedAvg fold (BLAS, handed in by the
        wiring; see ``fedlearn.core.aggregation.Axpy``); numpy's when absent.
        """
        codec = parse_codec(config.round_config.codec).name  # the name headers carry
        config = replace(config, round_config=replace(config.round_config, codec=codec))
        self.config = config
        self._runs = runs
        self._models = models
        self._clock = clock
        self._evaluator = evaluator
        self._axpy = axpy
        validate_identifier("run id", config.run_id)
        self._specs = specs_of(initial_weights)
        self._cond = CountingCondition()
        self._open: OpenRound | None = None
        self._failed_in_a_row = 0
        self._rollbacks = 0
        self._last_round = 0
        self._completed = 0
        self._released: set[str] = set()
        self._evaluations = background_thread("evaluate")
        self._housekeeping = background_thread("housekeeping")
        self._pending_evaluations = 0
        if cluster is not None and config.central_dp is not None:
            raise ConfigError("central DP is not supported on a coordinator cluster yet")
        self._central = self._central_privacy(noise)
        self._cluster = cluster
        self._lead = Leadership(cluster, config.run_id, clock) if cluster else None
        self._synced_at = 0.0
        self._failpoint = failpoint
        self.fenced_writes = 0
        """Writes the database refused because another replica took the round over."""
        with self._starting():
            state = start_run(
                config,
                initial_weights,
                specs=self._specs,
                runs=runs,
                models=models,
                evaluator=evaluator,
                now=clock.now(),
                new_aggregator=self._new_aggregator,
            )
        self._recovery = ErrorRecoveryManager(
            config.run_id,
            runs=runs,
            models=models,
            specs=self._specs,
            max_accuracy_drop=config.max_accuracy_drop,
        )
        self._privacy = PrivacyBook(config.run_id, runs, require_dp=config.require_dp)
        self._global = state.global_model
        self._serving = ModelServing(config.download_codec, store=models, key_of=self._key)
        self._open = state.open_round
        self._last_round = state.last_round
        self._completed = state.completed_rounds
        self._subscription = cluster.events.subscribe(self._on_event) if cluster else None
        self._catch_up()

    # -- start-up ---------------------------------------------------------------

    def _central_privacy(self, noise: NoiseSource | None) -> CentralPrivacy | None:
        dp = self.config.central_dp
        if dp is None:
            stored = self._runs.get_central_privacy(self.config.run_id)
            if stored is not None:  # later models would be released without noise
                raise ConfigError(
                    f"run {self.config.run_id} was started with central DP (user-level epsilon "
                    f"{stored.epsilon_spent:.4g} spent): restart it with central DP on"
                )
            return None
        if noise is None:
            raise ConfigError("central DP needs a noise source (pass noise=...)")
        return CentralPrivacy(self.config.run_id, dp, self._runs, noise=noise)

    def _new_aggregator(self, size: int) -> Aggregator:
        if self._central is not None:
            return self._central.aggregator(size, axpy=self._axpy)
        return StreamingFedAvg(size, axpy=self._axpy)

    @contextmanager
    def _starting(self) -> Iterator[None]:
        """Alone, start the run: replicas starting together take turns (a lease)."""
        if self._cluster is None:
            yield
            return
        ports = self._cluster
        name = f"{self.config.run_id}/start"
        deadline = time.monotonic() + 60.0
        while (lease := ports.leases.acquire(name, ports.replica_id, 60.0)) is None:
            if time.monotonic() > deadline:
                raise ConflictError(f"another replica has been starting run {name} for 60 s")
            time.sleep(0.05)
        try:
            yield
        finally:
            ports.leases.release(lease)

    def close(self) -> None:
        """Stop listening to the cluster, give up this replica's round lease and finish
        deleting the update blobs of closed rounds."""
        if self._subscription is not None:
            self._subscription.close()
        with self._cond:
            if self._lead is not None:
                self._lead.release()
        self._housekeeping.shutdown(wait=True)

    def _catch_up(self) -> None:
        """Finish what a crash interrupted: close a complete round, open the next,
        and score completed rounds whose evaluation was lost."""
        if self._cluster is not None:  # the round's leader does, from its tick
            with self._cond:
                self._open = None  # a follower's view: rebuilt without folding
                self._sync(force=True)
            return
        with self._cond:
            if self._open is not None and self._open.complete:
                self._close_open_round()
            self._maybe_open_round()
            if self._evaluator is None:
                return
            for record in self._runs.list_rounds(self.config.run_id):
                unscored = record.status is RoundStatus.COMPLETED and record.accuracy is None
                if unscored and record.global_model_path and record.round_number > 0:
                    model = GlobalModel.load(
                        record.round_number,
                        record.global_model_path,
                        specs=self._specs,
                        store=self._models,
                        server_state_path=None,
                    )
                    self._schedule_evaluation(model)

    def _key(self, round_number: int) -> str:
        return round_key(self.config.run_id, round_number)

    # -- registration and tasks ---------------------------------------------------

    def register_client(
        self, client_id: str | None, capabilities: ClientCapabilities
    ) -> ClientRecord:
        """Register (or re-register) a client; a round may open as a result."""
        now = self._clock.now()
        cid = client_id or uuid.uuid4().hex
        validate_identifier("client id", cid)
        validate_capabilities(capabilities)
        with self._cond:
            previous = self._runs.get_client(self.config.run_id, cid)
            record = ClientRecord(
                cid,
                self.config.run_id,
                capabilities,
                registered_at=previous.registered_at if previous else now,
                last_seen_at=now,
            )
            self._runs.upsert_client(record)
            logger.info("client %s registered (%d samples)", cid, capabilities.available_samples)
            self._privacy.on_register(record, now=now)
            if capabilities.budget_exhausted:
                self._decline(cid)
            if self._cluster is not None:
                self._cluster.heard_from(cid)
            self._publish(ClusterEventKind.CLIENT)
            self._maybe_open_round()
            self._cond.notify_all()
        return record

    def _decline(self, client_id: str) -> None:
        """An out-of-budget client leaves the open round; it will not be selected again."""
        logger.warning("client %s is out of privacy budget: no longer selected", client_id)
        open_ = self._open
        if open_ is not None and open_.expects(client_id):
            open_.declined.add(client_id)
            # (on a cluster only the leader's own view counts declines: a client that
            # declines through another replica is waited for until the deadline)
            leads = self._cluster is None or self._leads(open_)
            if open_.complete and open_.received and leads:
                self._close_open_round()

    def wait_for_change(self, seen: int, *, timeout_s: float) -> int:
        """Block until something clients wait for may have changed since ``seen``.

        Returns the new change count (pass it back next time); unchanged after
        ``timeout_s``. Start with ``seen=-1`` to get the current count at once.
        """
        return self._cond.wait_past(seen, timeout_s)

    def task_epoch(self) -> tuple[object, ...]:
        """A value that changes whenever ``poll_task`` may answer a waiting client differently.

        Most broadcasts (an accepted update, a download) change nothing for clients
        that wait for a task; a server that wakes its waiting polls only when this
        value moves saves a thousand needless polls per accepted update.
        """
        with self._cond:
            open_ = self._open
            opened = None if open_ is None else (open_.number, open_.record.started_at)
            return (opened, self._run_state(), self._pending_evaluations == 0)

    def poll_task(self, client_id: str, *, wait_s: float = 0.0) -> Task:
        """The client's next task, waiting up to ``wait_s`` seconds for one."""
        self._require_client(client_id)
        if self._cluster is not None:
            self._cluster.heard_from(client_id)
        deadline = self._clock.now() + wait_s
        with self._cond:
            while True:
                task = self._task_for(client_id)
                remaining = deadline - self._clock.now()
                if task.kind is not TaskKind.WAIT or remaining <= 0:
                    return task
                self._cond.wait(remaining)

    def _task_for(self, client_id: str) -> Task:
        state = self._run_state()
        # a last round that is still being evaluated may yet be rolled back
        settled = state is RunState.FAILED or self._pending_evaluations == 0
        if state in (RunState.FINISHED, RunState.FAILED) and settled:
            self._released.add(client_id)
            return Task(TaskKind.FINISHED)
        open_ = self._open
        if open_ is not None and open_.expects(client_id) and self._cluster is not None:
            self._refresh_received(open_)  # it may have reported through another replica
        if open_ is not None and open_.expects(client_id):
            return Task(
                TaskKind.TRAIN,
                round_number=open_.number,
                config=open_.record.config,
                deadline_at=open_.record.deadline_at,
            )
        return Task(TaskKind.WAIT)

    def get_global_model(
        self, client_id: str, round_number: int = 0, *, have_sha256: str = ""
    ) -> GlobalModelBlob:
        """The global model a round starts from (``0``: the latest one).

        With a download codec, a client that holds the version served before
        (``have_sha256``) gets the compressed difference instead of the model.
        """
        self._require_client(client_id)
        with self._cond:
            open_ = self._open
            if round_number and (open_ is None or open_.number != round_number) and self._cluster:
                self._sync()  # this replica may not have heard of the round yet
                open_ = self._open
            if round_number and (open_ is None or open_.number != round_number):
                raise StaleRoundError(
                    f"round {round_number} is not open"
                    + (f" (round {open_.number} is)" if open_ else "")
                )
            blob = self._serving.blob(self._global, have_sha256=have_sha256)
            if open_ is not None:
                open_.bytes_down += len(blob.payload)
                if self._cluster is not None:
                    self._cluster.counters.add(
                        self.config.run_id, open_.number, "bytes_down", len(blob.payload)
                    )
        return blob

    def record_download(self, round_number: int, seconds: float) -> None:
        """Count ``seconds`` of model streaming against the round, if it is still open."""
        with self._cond:
            open_ = self._open
            if open_ is not None and open_.number == round_number:
                open_.timings = open_.timings.plus(download=seconds)

    # -- updates ----------------------------------------------------------------

    def submit_update(self, submission: UpdateSubmission) -> UpdateAck:
        """Validate, persist and fold one update; close the round when all reported.

        A refused update (unknown client, stale round, unexpected client, failed
        validation or norm check) is recorded with its reason code before the
        error is raised; a re-sent update id is acknowledged, not refused.
        """
        validate_identifier("update id", submission.update_id)
        try:
            client = self._client(submission.client_id)
        except NotFoundError as exc:
            self._reject(submission, "unknown_client", exc)
            raise
        if self._cluster is not None:  # a long local training is no silence
            self._cluster.heard_from(submission.client_id)
        admitted = self._admit(submission)
        if isinstance(admitted, UpdateAck):
            return admitted
        try:
            return self._accept(admitted, submission, client)
        finally:
            with self._cond:
                admitted.in_flight.discard(submission.client_id)

    def _admit(self, sub: UpdateSubmission) -> OpenRound | UpdateAck:
        """The open round this update may join (now marked in flight), or the ack
        of an update already stored."""
        with self._cond:
            stored = self._runs.get_update(self.config.run_id, sub.update_id)
            open_ = self._open
            if self._cluster is not None and (open_ is None or open_.number != sub.round_number):
                self._sync()  # this replica may not have heard of the round yet
            refusal = self._refusal(sub, stored)
            if refusal is None:
                if stored is not None:
                    return self._duplicate_ack(stored)
                assert self._open is not None
                self._open.in_flight.add(sub.client_id)
                return self._open
        reason, error = refusal
        raise self._reject(sub, reason, error)

    def _refusal(
        self, sub: UpdateSubmission, stored: UpdateRecord | None
    ) -> tuple[str, ConflictError] | None:
        """Why the update may not join the open round, if it may not."""
        if stored is not None:
            if stored.client_id == sub.client_id:
                return None
            message = f"update id {sub.update_id} belongs to another client"
            return "update_id_taken", ConflictError(message, reason="update_id_taken")
        open_ = self._open
        if open_ is None or open_.number != sub.round_number:
            current = f"round {open_.number} is open" if open_ else "no round is open"
            message = f"round {sub.round_number} is not open ({current})"
            return "stale_round", StaleRoundError(message)
        if open_.expects(sub.client_id):
            return None
        reason, message = self._why_unexpected(open_, sub.client_id)
        return reason, ConflictError(message, reason=reason)

    def _reject(self, sub: UpdateSubmission, reason: str, error: Exception) -> Exception:
        """Record that ``sub`` was refused; return ``error`` for the caller to raise."""
        record_rejection(
            self._runs,
            sub,
            run_id=self.config.run_id,
            reason=reason,
            error=error,
            now=self._clock.now(),
        )
        return error

    def _validate(
        self, open_: OpenRound, sub: UpdateSubmission, client: ClientRecord
    ) -> DecodedUpdate:
        """The decoded update if it passes every check; records and raises otherwise."""
        try:
            validate_metrics(num_samples=sub.num_samples, training_loss=sub.training_loss)
            self._privacy.check_claim(sub, client)
            decoded = decode_update_payload(sub.payload, self._specs)
            check_codec(decoded.codec, allowed=open_.record.config.codec)
            checked = decoded.update
            with self._cond:
                accepted = open_.accepted_norms
            check_norm_outlier(checked.norm, accepted, max_ratio=self.config.max_norm_ratio)
        except UpdateRejectedError as exc:
            self._reject(sub, exc.reason, exc)
            raise
        return decoded

    def _accept(self, open_: OpenRound, sub: UpdateSubmission, client: ClientRecord) -> UpdateAck:
        started = time.perf_counter()
        decoded = self._validate(open_, sub, client)
        checked = decoded.update
        validated = time.perf_counter()
        # in a cluster two replicas may store the same update at once: one blob each
        suffix = f".{uuid.uuid4().hex[:8]}" if self._cluster is not None else ""
        path = self._models.put(
            f"{self._key(sub.round_number)}/updates/{sub.update_id}{suffix}.flw", sub.payload
        )
        blob_seconds = time.perf_counter() - validated
        record = UpdateRecord(
            run_id=self.config.run_id,
            update_id=sub.update_id,
            client_id=sub.client_id,
            round_number=sub.round_number,
            model_update_path=path,
            num_samples=sub.num_samples,
            training_loss=sub.training_loss,
            submitted_at=self._clock.now(),
            eval_accuracy=sub.eval_accuracy,
            eval_loss=sub.eval_loss,
            eval_samples=sub.eval_samples,
            privacy_budget_used=sub.privacy_budget_used,
            wire_bytes=sub.wire_bytes or len(sub.payload),
            compression_ratio=decoded.compression_ratio,
            codec=decoded.codec,
            update_norm=checked.norm,
            train_seconds=sub.train_seconds,
        )
        with self._cond:
            locked = time.perf_counter()
            still_open = self._open
            if still_open is None or still_open.number != open_.number:
                self._models.delete(path)
                error = StaleRoundError(f"round {sub.round_number} closed during the upload")
                raise self._reject(sub, "stale_round", error)
            open_ = still_open  # the same round; in a cluster, perhaps a fresher view of it
            stored = self._store_update(record, sub)
            if isinstance(stored, UpdateAck):
                return stored
            self._privacy.on_accept(sub, client, now=record.submitted_at)
            persisted = time.perf_counter()
            if self._cluster is None or self._leads(open_):
                open_.aggregator.add(checked.vector, float(sub.num_samples))
            open_.timings = open_.timings.plus(
                upload=sub.upload_seconds,
                validate=validated - started,
                persist=blob_seconds + persisted - locked,
                aggregate=time.perf_counter() - persisted,
            )
            open_.received[sub.client_id] = record
            open_.bytes_up += record.wire_bytes
            open_.raw_bytes_up += checked.vector.nbytes
            ack = UpdateAck(
                sub.round_number,
                duplicate=False,
                updates_received=self._count_accepted(open_),
                updates_expected=len(open_.record.selected_clients),
            )
            self._publish(ClusterEventKind.UPDATE, open_.number, update_id=sub.update_id)
            if open_.complete and (self._cluster is None or self._leads(open_)):
                self._close_open_round()
            self._cond.notify_all()
        return ack

    def _store_update(self, record: UpdateRecord, sub: UpdateSubmission) -> UpdateAck | None:
        """Add the update's row (its blob is stored); the ack of the same update if
        another replica stored it first. Refusals are recorded and raised."""
        try:
            self._runs.add_update(record, only_if_open=self._cluster is not None)
        except StaleRoundError as exc:  # closed by the round's leader meanwhile
            self._models.delete(record.model_update_path or "")
            raise self._reject(sub, "stale_round", exc) from None
        except ConflictError as exc:
            if self._cluster is not None:  # else the path is the stored update's own
                self._models.delete(record.model_update_path or "")
            stored = self._runs.get_update(self.config.run_id, sub.update_id)
            if stored is not None and stored.client_id == sub.client_id:
                return self._duplicate_ack(stored)  # a retry raced its first attempt
            raise self._reject(sub, exc.reason or "conflict", exc) from None
        except Exception:
            self._models.delete(record.model_update_path or "")
            raise
        if self._cluster is not None:
            self._cluster.counters.add(self.config.run_id, record.round_number, "accepted")
        return None

    def _count_accepted(self, open_: OpenRound) -> int:
        if self._cluster is None:
            return len(open_.received)
        counted = self._cluster.counters.read(self.config.run_id, open_.number).get("accepted", 0)
        return max(counted, len(open_.received))

    def _duplicate_ack(self, stored: UpdateRecord) -> UpdateAck:
        expected = len(self._open.record.selected_clients) if self._open else 0
        received = len(self._open.received) if self._open else 0
        return UpdateAck(stored.round_number, True, received, expected)

    @staticmethod
    def _why_unexpected(open_: OpenRound, client_id: str) -> tuple[str, str]:
        """Reason code and message for a client the open round does not expect."""
        number = open_.number
        if client_id not in open_.record.selected_clients:
            return "not_selected", f"client {client_id} was not selected for round {number}"
        if client_id in open_.in_flight:
            return (
                "uploading",
                f"client {client_id} is already uploading an update for round {number}",
            )
        return (
            "already_submitted",
            f"client {client_id} already submitted an update for round {number}",
        )

    def _require_client(self, client_id: str) -> None:
        self._client(client_id)

    def _client(self, client_id: str) -> ClientRecord:
        record = self._runs.get_client(self.config.run_id, client_id)
        if record is None:
            raise NotFoundError(f"unknown client {client_id!r}: register first")
        return record

    # -- round lifecycle ----------------------------------------------------------

    def tick(self) -> None:
        """Close or fail the open round once its deadline has passed (in a cluster,
        also renew or take over round leases and reread the run)."""
        with self._cond:
            if self._cluster is not None:
                self._cluster_tick()
            open_ = self._open
            if open_ is None or self._clock.now() < open_.record.deadline_at:
                return
            if self._cluster is not None and not self._leads(open_):
                return
            self._recovery.handle_client_timeout(open_, now=self._clock.now())
            if len(open_.received) >= self.config.min_clients:
                self._close_open_round()
            else:
                self._fail_open_round(
                    f"deadline passed with {len(open_.received)} of "
                    f"{self.config.min_clients} required updates"
                )
            self._cond.notify_all()

    def _close_open_round(self) -> None:
        open_ = self._open
        assert open_ is not None
        self._open = None
        try:
            if self._central is not None:  # before any noise is drawn: see central_privacy
                self._central.charge(open_.number, now=self._clock.now())
            outcome = self._close(open_)
        except FencedError as exc:
            self._step_down(open_, exc)
            return
        except Exception as exc:  # nothing was published: fail the round, keep the model
            logger.warning("round %d could not be aggregated: %s", open_.number, exc)
            self._recovery.handle_aggregation_failure(open_, exc, now=self._clock.now())
            self._failed_in_a_row += 1
            self._maybe_open_round()
            return
        self._global = outcome
        self._completed += 1
        self._failed_in_a_row = 0
        self._round_ended()
        self._maybe_open_round()
        if not self.config.keep_updates:
            self._drop_blobs_later(open_)
        if self._evaluator is not None:
            self._schedule_evaluation(outcome)

    def _close(self, open_: OpenRound) -> GlobalModel:
        """``close_round``; in a cluster, fenced by the round's lease, after folding
        every stored update, and again if more were stored meanwhile."""
        if self._cluster is None or self._lead is None:
            return self._close_round(open_, self._key(open_.number), fence=None)
        token = self._lead.token
        if self._failpoint is not None:
            self._failpoint("before_close")
        counted = self._cluster.counters.read(self.config.run_id, open_.number)
        open_.bytes_down = max(open_.bytes_down, counted.get("bytes_down", 0))
        for attempt in range(5):
            self._refresh_received(open_, leading=True)
            # a replica that lost the round may still write a model: never over ours
            prefix = f"{self._key(open_.number)}/lease-{token}-{attempt}"
            try:
                return self._close_round(open_, prefix, fence=token)
            except ConflictError as exc:
                if exc.reason != "updates_changed":
                    raise
                logger.info("round %d: updates arrived while closing; folding them", open_.number)
        raise ConflictError(f"round {open_.number} kept changing while it was being closed")

    def _close_round(self, open_: OpenRound, key_prefix: str, *, fence: int | None) -> GlobalModel:
        return close_round(
            open_,
            self._global,
            strategy=self.config.strategy,
            runs=self._runs,
            models=self._models,
            now=self._clock.now(),
            key_prefix=key_prefix,
            fence=fence,
        )

    def _round_ended(self) -> None:
        """In a cluster: give up the ended round's lease and tell the other replicas."""
        if self._lead is not None:
            self._lead.release()
        self._publish(ClusterEventKind.ROUND, self._last_round)

    def _drop_blobs_later(self, closed: OpenRound) -> None:
        """Delete the closed round's update blobs off the critical path (the next round
        is open), on the housekeeping thread (see :func:`drop_update_blobs`)."""
        paths = [u.model_update_path for u in closed.received.values() if u.model_update_path]

        def drop() -> None:
            try:
                drop_update_blobs(paths, self._models)
            except Exception:
                logger.exception("could not delete the update blobs of round %d", closed.number)

        if paths:
            self._housekeeping.submit(drop)

    def wait_for_housekeeping(self, timeout_s: float | None = None) -> None:
        """Wait until the update blobs of closed rounds are deleted (for tests): the
        housekeeping thread runs its work in order, so a no-op submitted now ends last."""
        self._housekeeping.submit(lambda: None).result(timeout_s)

    def _schedule_evaluation(self, model: GlobalModel) -> None:
        self._pending_evaluations += 1
        self._evaluations.submit(self._evaluate_round, model)

    def _evaluate_round(self, model: GlobalModel) -> None:
        """Score a new global model off the critical path, then record the result.

        The next round is already open while this runs, on a thread at the lowest CPU
        priority (:mod:`fedlearn.service.background`); a run only counts as finished
        once every evaluation has been recorded.
        """
        assert self._evaluator is not None
        try:
            result = self._evaluator.evaluate(model.weights())
            logger.info("round %d: test accuracy %.4f", model.round_number, result.accuracy)
            with self._cond:
                stored = self._runs.get_round(self.config.run_id, model.round_number)
                if stored is None:
                    return
                self._runs.save_round(replace(stored, accuracy=result.accuracy, loss=result.loss))
                reason = self._recovery.divergence(model.round_number, result)
                if reason is not None and stored.status is RoundStatus.COMPLETED:
                    self._after_divergence(model.round_number, reason)
        except Exception:
            logger.exception("evaluation of round %d failed", model.round_number)
        finally:
            with self._cond:
                self._pending_evaluations -= 1
                self._cond.notify_all()

    # -- rollbacks ------------------------------------------------------------------

    def rollback(self, to_round: int, *, reason: str = "") -> RollbackOutcome:
        """An operator's emergency rollback to completed round ``to_round``.

        The open round, if any, fails (its accepted updates were trained on a
        model that is no longer global) and the next round starts from the
        restored model.
        """
        why = f"rolled back to round {to_round} by an operator" + (f": {reason}" if reason else "")
        with self._cond:
            outcome = self._recovery.trigger_emergency_rollback(to_round, reason=why)
            self._apply_rollback(outcome)
            return outcome.outcome

    def _after_divergence(self, round_number: int, reason: str) -> None:
        self._rollbacks += 1
        outcome = self._recovery.handle_model_divergence(round_number, reason)
        self._apply_rollback(outcome)

    def _apply_rollback(self, outcome: Rollback) -> None:
        self._global = outcome.restored  # before the next round opens on it
        if self._open is not None:
            self._fail_open_round(outcome.reason, count_failure=False)
        self._completed = run_progress(self._runs.list_rounds(self.config.run_id)).completed_rounds
        self._failed_in_a_row = 0
        self._maybe_open_round()
        self._cond.notify_all()

    def _fail_open_round(self, reason: str, *, count_failure: bool = True) -> None:
        open_ = self._open
        assert open_ is not None
        self._open = None
        fence = self._lead.token if self._lead is not None and self._leads(open_) else None
        try:
            fail_round(
                open_,
                reason,
                runs=self._runs,
                models=self._models,
                now=self._clock.now(),
                fence=fence,
            )
        except FencedError as exc:
            self._step_down(open_, exc)
            return
        self._failed_in_a_row += int(count_failure)
        self._round_ended()
        self._maybe_open_round()

    def _maybe_open_round(self) -> None:
        if self._open is not None or self._run_state() is not RunState.WAITING_FOR_CLIENTS:
            return
        cfg = self.config
        out_of_budget = self._privacy.exhausted()
        clients = [
            c.client_id
            for c in self._runs.list_clients(cfg.run_id)
            if c.client_id not in out_of_budget
        ]
        if self._cluster is not None and self._cluster.liveness is not None:
            alive = self._cluster.liveness.alive()
            clients = [c for c in clients if c in alive]
        if len(clients) < cfg.min_clients:
            return
        number = self._last_round + 1
        k = sample_size(
            len(clients),
            min_clients=cfg.min_clients,
            clients_per_round=cfg.clients_per_round,
            fraction=cfg.fraction,
        )
        now = self._clock.now()
        if self._central is None:
            selected = sample_clients(clients, k, rng=round_rng(cfg.seed, number))
        elif self._central.admit(number, selected=k, eligible=len(clients), now=now):
            selected = self._central.select(clients, k)
        else:  # the round would pass the central DP target: the run is over
            self._cond.notify_all()
            return
        record = RoundRecord(
            run_id=cfg.run_id,
            round_number=number,
            status=RoundStatus.OPEN,
            selected_clients=selected,
            config=round_config_for(cfg.round_config, number, lr_decay=cfg.lr_decay),
            started_at=now,
            deadline_at=now + cfg.round_timeout_s,
            base_model_path=self._global.path,
        )
        if self._lead is None:
            self._runs.create_round(record)
        elif not self._open_as_leader(record):
            return
        self._last_round = number
        self._open = OpenRound(record, self._new_aggregator(self._global.vector.size))
        logger.info("round %d opened with %d clients", number, k)
        self._publish(ClusterEventKind.ROUND, number)
        self._cond.notify_all()

    def _open_as_leader(self, record: RoundRecord) -> bool:
        """Store the new round under its lease; ``False`` if another replica opens it."""
        assert self._lead is not None
        if self._lead.acquire(record.round_number) is None:
            return False
        try:
            self._runs.create_round(record)
        except ConflictError:  # opened by a replica whose lease has since expired
            self._lead.release()
            self._sync(force=True)
            return False
        self._lead.fence = self._runs.claim_round(record.run_id, record.round_number)
        return True

    # -- cluster ------------------------------------------------------------------

    def _leads(self, open_: OpenRound) -> bool:
        return self._lead is not None and self._lead.leads(open_.number)

    def _publish(
        self, kind: ClusterEventKind, round_number: int = 0, *, update_id: str = ""
    ) -> None:
        if self._cluster is not None:
            self._cluster.tell(kind, self.config.run_id, round_number, update_id=update_id)

    def _on_event(self, event: ClusterEvent) -> None:
        """Another replica changed something: catch up now rather than at the next resync."""
        assert self._cluster is not None
        if event.replica == self._cluster.replica_id or event.run_id != self.config.run_id:
            return
        with self._cond:
            open_ = self._open
            if event.kind is ClusterEventKind.UPDATE and open_ is not None:
                if open_.number == event.round_number:
                    self._refresh_received(open_)
                    if self._leads(open_) and open_.complete:
                        self._close_open_round()
            else:
                self._sync()
                if event.kind is ClusterEventKind.CLIENT:
                    self._maybe_open_round()
            self._cond.notify_all()

    def _cluster_tick(self) -> None:
        """Keep or take round leases, and reread the run now and then."""
        assert self._cluster is not None and self._lead is not None
        now = self._clock.now()
        if self._lead.lease is not None and not self._lead.keep():
            self._sync(force=True)
        elif now - self._synced_at >= self._cluster.resync_s:
            self._sync()
        open_ = self._open
        if open_ is None:
            self._maybe_open_round()
        elif not self._leads(open_) and not self._lead.held_elsewhere(open_.number):
            self._take_over(open_)
        open_ = self._open
        if open_ is not None and self._leads(open_) and open_.complete and open_.received:
            self._close_open_round()
        self._cond.notify_all()

    def _take_over(self, view: OpenRound) -> None:
        """Lead an open round whose leader is gone: claim it with a newer token and
        fold every update stored for it so far."""
        assert self._lead is not None
        lease = self._lead.acquire(view.number)
        if lease is None:
            return
        fence = self._runs.claim_round(self.config.run_id, view.number)
        record = self._runs.get_round(self.config.run_id, view.number)
        if record is None or record.status is not RoundStatus.OPEN:
            self._lead.release()
            self._sync(force=True)
            return
        self._lead.fence = fence
        fresh = OpenRound(record, self._new_aggregator(self._global.vector.size))
        fresh.in_flight = view.in_flight
        self._open = fresh
        self._refresh_received(fresh)
        logger.warning(
            "replica %s leads round %d now (fencing token %d); %d stored updates folded",
            lease.holder,
            view.number,
            fence,
            len(fresh.received),
        )

    def _step_down(self, open_: OpenRound, error: FencedError) -> None:
        """Another replica took this round over: forget it and follow the database."""
        assert self._lead is not None
        self.fenced_writes += 1
        logger.error(
            "round %d: the database refused this replica's write (%s); "
            "another replica leads the round now",
            open_.number,
            error,
        )
        self._lead.drop()
        self._sync(force=True)

    def _refresh_received(self, open_: OpenRound, *, leading: bool | None = None) -> None:
        """Take in the round's updates that other replicas stored: the leader folds
        them into the running sum, a follower only notes who reported."""
        fold = self._leads(open_) if leading is None else leading
        take_in_stored(open_, runs=self._runs, models=self._models, specs=self._specs, fold=fold)

    def _sync(self, *, force: bool = False) -> None:
        """Bring this replica's view of the run up to the database (in a cluster)."""
        self._synced_at = self._clock.now()
        latest = self._runs.latest_round(self.config.run_id)
        if latest is None:
            return
        open_ = self._open
        same_open = open_ is not None and open_.number == latest.round_number
        if same_open and latest.status is RoundStatus.OPEN and not force:
            assert open_ is not None
            self._refresh_received(open_)
            return
        unchanged = open_ is None and latest.round_number == self._last_round
        if unchanged and latest.status is not RoundStatus.OPEN and not force:
            return
        progress = run_progress(self._runs.list_rounds(self.config.run_id))
        last = progress.last_completed
        assert last is not None  # round 0 is stored before any replica serves
        if last.global_model_path is not None and last.global_model_path != self._global.path:
            self._global = GlobalModel.load(
                last.round_number,
                last.global_model_path,
                specs=self._specs,
                store=self._models,
                server_state_path=last.server_state_path,
            )
        self._completed = progress.completed_rounds
        self._last_round = latest.round_number
        self._failed_in_a_row = progress.failed_in_a_row
        if self._lead is not None and not self._lead.leads(latest.round_number):
            self._lead.release()
        if latest.status is RoundStatus.OPEN:
            if not (same_open and self._lead is not None and self._lead.leads(latest.round_number)):
                self._open = OpenRound(latest, self._new_aggregator(self._global.vector.size))
                self._refresh_received(self._open, leading=False)
        else:
            self._open = None

    # -- status -----------------------------------------------------------------

    def _run_state(self) -> RunState:
        if self._completed >= self.config.num_rounds:
            return RunState.FINISHED
        if self._central is not None and self._central.exhausted:
            return RunState.FINISHED
        if self._failed_in_a_row > self.config.max_failed_rounds:
            return RunState.FAILED
        if self._rollbacks > self.config.max_rollbacks:
            return RunState.FAILED
        return RunState.TRAINING if self._open else RunState.WAITING_FOR_CLIENTS

    @property
    def finished(self) -> bool:
        """The run is over and every round's evaluation is recorded."""
        with self._cond:
            over = self._run_state() in (RunState.FINISHED, RunState.FAILED)
            return over and self._pending_evaluations == 0

    def wait_for_evaluations(self, timeout_s: float | None = None) -> bool:
        """Block until every scheduled evaluation is recorded (for tests and shutdown)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending_evaluations == 0, timeout_s)

    @property
    def all_clients_released(self) -> bool:
        """True once every registered client has been told that the run is over."""
        with self._cond:
            known = {c.client_id for c in self._runs.list_clients(self.config.run_id)}
            return known <= self._released

    def global_weights(self) -> dict[str, np.ndarray]:
        with self._cond:
            return self._global.weights()

    def status(self) -> TrainingStatus:
        cfg = self.config
        with self._cond:
            open_ = self._open
            return TrainingStatus(
                run_id=cfg.run_id,
                model_name=cfg.model_name,
                state=self._run_state(),
                num_rounds=cfg.num_rounds,
                completed_rounds=self._completed,
                current_round=open_.number if open_ else self._last_round,
                updates_received=self._count_accepted(open_) if open_ else 0,
                updates_expected=len(open_.record.selected_clients) if open_ else 0,
                clients=tuple(self._runs.list_clients(cfg.run_id)),
                rounds=tuple(RoundSummary.of(r) for r in self._runs.list_rounds(cfg.run_id)),
                rejections=dict(self._runs.count_rejections(cfg.run_id)),
                privacy=self._privacy.lines(),
                central_privacy=self._central.status() if self._central else None,
            )
