"""The runtime's fault tolerance: the outbox, checkpoint keys and out-of-memory retries."""

import hashlib
import logging

import pytest
import torch
from test_client_runtime import BASE, FakeApi, FakeTrainer, _train

from fedlearn.client.checkpoints import round_key
from fedlearn.client.outbox import OutboxEntry
from fedlearn.client.recovery import ClientState, Recovery
from fedlearn.client.runtime import ClientOptions, ClientRuntime
from fedlearn.core.serialization import encode_weights
from fedlearn.core.types import RoundConfig
from fedlearn.errors import TransportError, UpdateRejectedError
from fedlearn.service.messages import Task, TaskKind, UpdateAck, UpdateSubmission

BASE_DIGEST = hashlib.sha256(encode_weights(BASE)).hexdigest()
FINISHED = Task(TaskKind.FINISHED)


class RecordingApi(FakeApi):
    """Registers into run "run"; can fail submissions and remembers stored update ids."""

    def __init__(self, tasks, *, outbox=None, transport_failures=0, stored=(), **kwargs):
        super().__init__(tasks, **kwargs)
        self.outbox = outbox
        self.transport_failures = transport_failures
        self.stored = set(stored)
        self.pending_at_submit = []

    def submit_update(self, submission):
        if self.outbox is not None:
            self.pending_at_submit.append([e.submission.update_id for e in self.outbox.pending()])
        if self.transport_failures:
            self.transport_failures -= 1
            raise TransportError("coordinator unreachable for 60.0 s")
        self.submissions.append(submission)
        duplicate = submission.update_id in self.stored
        self.stored.add(submission.update_id)
        return UpdateAck(submission.round_number, duplicate, 1, 1)


def _runtime(api, state, trainer=None, *, min_batch_size=1):
    return ClientRuntime(
        api, lambda name: trainer or FakeTrainer(), ClientOptions(client_id="c1")
    ).with_recovery(Recovery(state=state, min_batch_size=min_batch_size))


def _pending(round_number=2, *, run_id="run", digest=BASE_DIGEST, update_id="old-update"):
    sub = UpdateSubmission(
        client_id="c1",
        round_number=round_number,
        update_id=update_id,
        payload=encode_weights(BASE),
        num_samples=40,
        training_loss=0.5,
    )
    return OutboxEntry(sub, run_id=run_id, base_digest=digest)


@pytest.fixture
def state(tmp_path):
    opened = ClientState.open(tmp_path / "state")
    yield opened
    if opened.lock is not None:
        opened.lock.close()


def test_update_is_in_the_outbox_while_it_is_sent_and_gone_after_the_ack(state):
    api = RecordingApi([_train(1), FINISHED], outbox=state.outbox)
    trainer = FakeTrainer()

    _runtime(api, state, trainer).run()

    assert api.pending_at_submit == [[api.submissions[0].update_id]]
    assert state.outbox.pending() == []
    assert trainer.checkpoints.key == round_key("run", "c1", 1, BASE_DIGEST)


def test_pending_update_is_resent_with_its_update_id_when_the_client_starts(state):
    state.outbox.put(_pending())
    api = RecordingApi([FINISHED])
    trainer = FakeTrainer()

    report = _runtime(api, state, trainer).run()

    assert [s.update_id for s in api.submissions] == ["old-update"]
    assert api.submissions[0] == _pending().submission
    assert state.outbox.pending() == []
    assert trainer.rounds == [] and report.rounds_trained == 0


def test_update_the_coordinator_already_stored_is_acked_once_and_deleted(state, caplog):
    state.outbox.put(_pending())
    api = RecordingApi([FINISHED], stored={"old-update"})

    with caplog.at_level(logging.INFO):
        _runtime(api, state).run()

    assert state.outbox.pending() == []
    assert "update old-update was already stored" in caplog.text


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        (_pending(round_number=1), "that round is no longer open"),
        (_pending(run_id="other-run"), "it belongs to client c1 of run other-run"),
        (_pending(digest="0" * 64), "it was trained from another global model"),
    ],
)
def test_pending_update_that_no_longer_fits_is_dropped_with_a_log_line(state, caplog, entry, why):
    state.outbox.put(entry)
    api = RecordingApi([FINISHED], stale_downloads={1})

    _runtime(api, state).run()

    assert api.submissions == []
    assert state.outbox.pending() == []
    assert (
        f"dropping the pending update old-update for round {entry.submission.round_number}: {why}"
        in caplog.text
    )


def test_update_is_kept_after_a_transport_failure_and_resent_before_the_next_poll(state):
    api = RecordingApi([_train(1), FINISHED], outbox=state.outbox, transport_failures=1)

    _runtime(api, state).run()

    assert len(api.pending_at_submit) == 2
    assert api.pending_at_submit[0] == api.pending_at_submit[1]  # the same update id twice
    assert [s.update_id for s in api.submissions] == api.pending_at_submit[0]
    assert state.outbox.pending() == []


def test_without_a_state_folder_a_transport_failure_still_stops_the_client():
    api = RecordingApi([_train(1), FINISHED], transport_failures=1)

    with pytest.raises(TransportError):
        _runtime(api, None).run()


def test_a_rejected_update_is_not_kept_for_resending(state):
    class RejectingApi(RecordingApi):
        def submit_update(self, submission):
            raise UpdateRejectedError("non_finite", "update has NaN")

    with pytest.raises(UpdateRejectedError):
        _runtime(RejectingApi([_train(1), FINISHED]), state).run()

    assert state.outbox.pending() == []


class OomTrainer(FakeTrainer):
    """Runs out of memory on batches above ``limit``."""

    def __init__(self, limit):
        super().__init__()
        self.limit = limit
        self.tried = []
        self.weight_resets = 0

    def set_weights(self, weights):
        super().set_weights(weights)
        self.weight_resets += 1

    def train(self, config, *, round_number, checkpoints=None):
        self.tried.append((round_number, config.batch_size))
        if config.batch_size > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return super().train(config, round_number=round_number, checkpoints=checkpoints)


def test_out_of_memory_retries_the_round_from_the_base_model_with_half_the_batch():
    trainer = OomTrainer(limit=4)
    task = Task(TaskKind.TRAIN, round_number=1, config=RoundConfig(1, 16, 0.1))
    api = RecordingApi([task, FINISHED])

    report = _runtime(api, None, trainer).run()

    assert trainer.tried == [(1, 16), (1, 8), (1, 4)]
    assert trainer.weight_resets == 3  # once for the round, again before each retry
    assert report.rounds_trained == 1 and len(api.submissions) == 1


def test_client_skips_a_round_that_does_not_fit_in_memory_and_serves_the_next(caplog):
    trainer = OomTrainer(limit=4)
    big = Task(TaskKind.TRAIN, round_number=1, config=RoundConfig(1, 32, 0.1))
    small = Task(TaskKind.TRAIN, round_number=2, config=RoundConfig(1, 4, 0.1))
    api = RecordingApi([big, small, FINISHED])

    report = _runtime(api, None, trainer, min_batch_size=8).run()

    assert [s.round_number for s in api.submissions] == [2]
    assert report.rounds_trained == 1 and report.last_round == 2
    assert "round 1 skipped: out of memory at batch size 8" in caplog.text
