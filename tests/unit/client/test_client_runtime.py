import hashlib
from dataclasses import dataclass

import numpy as np

from fedlearn.client.runtime import ClientOptions, ClientRuntime
from fedlearn.core.serialization import decode_weights, encode_weights
from fedlearn.core.types import EvalResult, RoundConfig
from fedlearn.errors import NotFoundError, PrivacyBudgetExhaustedError, StaleRoundError
from fedlearn.service.messages import (
    GlobalModelBlob,
    Registration,
    Task,
    TaskKind,
    UpdateAck,
)

BASE = {"w": np.array([1.0, 2.0], np.float32)}


def _sha(payload):
    return hashlib.sha256(payload).hexdigest()


@dataclass
class Outcome:
    loss: float = 0.25
    samples: int = 40
    seconds: float = 0.1
    privacy_budget_used: float = 0.0


class FakeTrainer:
    def __init__(self) -> None:
        self.weights = None
        self.rounds = []

    def set_weights(self, weights):
        self.weights = {k: np.array(v) for k, v in weights.items()}

    def get_weights(self):
        return {k: v + 0.5 for k, v in self.weights.items()}

    def train(self, config, *, round_number, checkpoints=None):
        self.rounds.append((round_number, config))
        self.checkpoints = checkpoints
        return Outcome()

    def evaluate_holdout(self):
        return EvalResult(accuracy=0.9, loss=0.3, samples=5)


class FakeApi:
    def __init__(self, tasks, *, stale_downloads=(), forget_once=False):
        self.tasks = list(tasks)
        self.stale = set(stale_downloads)
        self.forget_once = forget_once
        self.registrations = 0
        self.capabilities = []
        self.submissions = []

    def register(self, client_id, capabilities):
        self.registrations += 1
        self.capabilities.append(capabilities)
        return Registration(client_id or "assigned", "run", "toy")

    def poll_task(self, client_id, *, wait_s):
        if self.forget_once:
            self.forget_once = False
            raise NotFoundError("unknown client")
        return self.tasks.pop(0)

    def download_model(self, client_id, round_number, have_sha256=""):
        if round_number in self.stale:
            raise StaleRoundError("closed")
        return GlobalModelBlob(round_number - 1, encode_weights(BASE), _sha(encode_weights(BASE)))

    def submit_update(self, submission):
        self.submissions.append(submission)
        return UpdateAck(submission.round_number, False, 1, 1)

    def status(self):
        raise AssertionError("not used")


def _train(n):
    return Task(TaskKind.TRAIN, round_number=n, config=RoundConfig(1, 8, 0.1))


def test_client_sends_the_delta_with_its_metrics_and_stops_when_finished():
    api = FakeApi([Task(TaskKind.WAIT), _train(1), _train(2), Task(TaskKind.FINISHED)])
    trainer = FakeTrainer()
    report = ClientRuntime(api, lambda name: trainer, ClientOptions(client_id="c1")).run()
    assert report.rounds_trained == 2 and report.last_round == 2
    sub = api.submissions[0]
    delta = decode_weights(sub.payload).tensors["w"]
    np.testing.assert_allclose(delta, [0.5, 0.5])
    assert (sub.num_samples, sub.training_loss, sub.eval_accuracy, sub.eval_samples) == (
        40,
        0.25,
        0.9,
        5,
    )
    assert sub.update_id != api.submissions[1].update_id
    assert [r for r, _ in trainer.rounds] == [1, 2]


def test_client_skips_a_round_that_closed_before_it_downloaded():
    api = FakeApi([_train(1), _train(2), Task(TaskKind.FINISHED)], stale_downloads={1})
    report = ClientRuntime(api, lambda name: FakeTrainer(), ClientOptions()).run()
    assert [s.round_number for s in api.submissions] == [2]
    assert report.rounds_trained == 1 and report.client_id == "assigned"


def test_client_registers_again_when_the_coordinator_forgot_it():
    api = FakeApi([Task(TaskKind.FINISHED)], forget_once=True)
    ClientRuntime(api, lambda name: FakeTrainer(), ClientOptions(client_id="c1")).run()
    assert api.registrations == 2


class BudgetedTrainer(FakeTrainer):
    """Trains ``rounds`` rounds, then refuses: its privacy budget is spent."""

    def __init__(self, rounds: int) -> None:
        super().__init__()
        self.left = rounds

    def train(self, config, *, round_number, checkpoints=None):
        if self.left == 0:
            raise PrivacyBudgetExhaustedError(spent=2.9, would_spend=3.4, budget=3.0)
        self.left -= 1
        return super().train(config, round_number=round_number, checkpoints=checkpoints)


def test_a_client_out_of_privacy_budget_tells_the_coordinator_and_stops():
    api = FakeApi([_train(1), _train(2), _train(3)])
    report = ClientRuntime(api, lambda name: BudgetedTrainer(1), ClientOptions("c1")).run()
    assert report.rounds_trained == 1 and report.last_round == 1
    assert [s.round_number for s in api.submissions] == [1]
    assert [c.budget_exhausted for c in api.capabilities] == [False, True]
    assert api.tasks == [_train(3)]  # it stopped polling


def test_evaluation_and_training_run_inside_the_compute_slot_and_the_upload_after_it():
    events = []

    class Slot:
        def __enter__(self):
            events.append("enter")

        def __exit__(self, *exc):
            events.append("exit")

    class RecordingTrainer(FakeTrainer):
        def evaluate_holdout(self):
            events.append("evaluate")
            return super().evaluate_holdout()

        def train(self, config, *, round_number, checkpoints=None):
            events.append("train")
            return super().train(config, round_number=round_number, checkpoints=checkpoints)

    class RecordingApi(FakeApi):
        def submit_update(self, submission):
            events.append("submit")
            return super().submit_update(submission)

    api = RecordingApi([_train(1), _train(2), Task(TaskKind.FINISHED)])
    options = ClientOptions(client_id="c1", compute_slot=Slot)
    ClientRuntime(api, lambda name: RecordingTrainer(), options).run()

    assert events == ["enter", "evaluate", "train", "exit", "submit"] * 2
