"""A round lets go of what it no longer needs, and still sends the same update."""

from __future__ import annotations

import platform

import numpy as np
import pytest

from fedlearn.client.memory import return_free_heap
from fedlearn.client.runtime import ClientOptions, ClientRuntime
from fedlearn.client.trainer import LocalTrainer
from fedlearn.core.downstream import unflatten
from fedlearn.core.serialization import decode_weights, encode_weights
from fedlearn.core.types import RoundConfig
from fedlearn.models.registry import build_model
from fedlearn.models.weights import model_to_weights
from fedlearn.service.messages import GlobalModelBlob, Registration, Task, TaskKind, UpdateAck

CONFIG = RoundConfig(local_epochs=2, batch_size=16, learning_rate=0.1)


class OneModelApi:
    """Serves one global model for rounds 1 and 2 and keeps the submissions."""

    def __init__(self, weights):
        self.payload = encode_weights(weights)
        self.tasks = [Task(TaskKind.TRAIN, round_number=n, config=CONFIG) for n in (1, 2)]
        self.tasks.append(Task(TaskKind.FINISHED))
        self.submissions = []

    def register(self, client_id, capabilities):
        return Registration(client_id or "c", "run", "mlp")

    def poll_task(self, client_id, *, wait_s):
        return self.tasks.pop(0)

    def download_model(self, client_id, round_number, have_sha256=""):
        return GlobalModelBlob(round_number - 1, self.payload, "x")

    def submit_update(self, submission):
        self.submissions.append(submission)
        return UpdateAck(submission.round_number, False, 1, 1)


def test_training_frees_its_gradients_once_the_round_is_trained(separable):
    trainer = LocalTrainer("cnn", *separable, seed=1)
    trainer.train(CONFIG, round_number=1)

    assert all(p.grad is None for p in trainer._model.parameters())


def test_a_round_sends_trained_minus_global_bit_for_bit(separable):
    """The runtime's update against the same round done by hand: equal bits, and the
    global model the client holds is left as downloaded (its SHA-256 identifies it)."""
    start = model_to_weights(build_model("mlp", seed=4))
    api = OneModelApi(start)
    runtime = ClientRuntime(
        api, lambda name: LocalTrainer(name, *separable, seed=2), ClientOptions(client_id="c")
    )
    runtime.run()

    for submission in api.submissions:
        reference = LocalTrainer("mlp", *separable, seed=2)
        reference.set_weights(start)
        reference.train(CONFIG, round_number=submission.round_number)
        trained = reference.get_weights()
        sent = decode_weights(submission.payload).tensors
        assert list(sent) == list(start)
        for name, base in start.items():
            expected = (trained[name] - base).astype(np.float32)
            assert sent[name].dtype == np.float32
            np.testing.assert_array_equal(sent[name], expected, err_msg=name)
    assert [s.round_number for s in api.submissions] == [1, 2]
    held = runtime._held
    assert held is not None
    assert encode_weights(unflatten(held.vector, held.specs)) == api.payload


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_return_free_heap_trims_the_glibc_heap():
    assert return_free_heap() is True
