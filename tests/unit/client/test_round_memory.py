"""A round lets go of what it no longer needs, and still sends the same update."""

from __future__ import annotations

import hashlib
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


def _sha(payload):
    return hashlib.sha256(payload).hexdigest()


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
        return GlobalModelBlob(round_number - 1, self.payload, _sha(self.payload))

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


_FAULTS = """
import resource, sys
import numpy as np
from fedlearn.client.memory import keep_freed_heap
if sys.argv[1] == "keep":
    assert keep_freed_heap()
def rounds():
    for _ in range(20):
        model = np.ones(1_700_000, np.float32)  # a CNN-sized buffer, made and freed
        update = (model * 2).tobytes()
        del model, update
rounds()  # the first round may fault its pages in either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_a_kept_heap_reuses_freed_model_sized_buffers():
    import subprocess
    import sys

    def faults(mode):
        out = subprocess.run(
            [sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True
        )
        return int(out.stdout)

    default, kept = faults("default"), faults("keep")
    assert default > 20 * 1_000  # each 6.8 MB buffer faulted in again, page by page
    assert kept < default / 20


def test_the_runtime_releases_the_heap_only_when_asked(separable, monkeypatch):
    calls = []
    monkeypatch.setattr("fedlearn.client.runtime.return_free_heap", lambda: calls.append(1))
    start = model_to_weights(build_model("mlp", seed=4))
    for release, expected in ((False, 0), (True, 4)):  # two rounds, twice each
        calls.clear()
        runtime = ClientRuntime(
            OneModelApi(start),
            lambda name: LocalTrainer(name, *separable, seed=2),
            ClientOptions(client_id="c", release_heap=release),
        )
        runtime.run()
        assert len(calls) == expected
