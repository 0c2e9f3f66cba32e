"""The client's downloads with a download codec: it offers the model it holds, rebuilds
the next one from a delta, checks it, and falls back to the whole model."""

import hashlib
from dataclasses import dataclass, replace

import numpy as np
import pytest

from fedlearn.client.runtime import ClientOptions, ClientRuntime
from fedlearn.core.downstream import ServedModel, serve
from fedlearn.core.serialization import spec_of
from fedlearn.core.types import EvalResult, RoundConfig
from fedlearn.errors import ConflictError
from fedlearn.service.messages import GlobalModelBlob, Registration, Task, TaskKind, UpdateAck

SHAPES = {"w": (20, 10), "b": (10,)}
SPECS = spec_of({k: np.zeros(s, np.float32) for k, s in SHAPES.items()})
SIZE = 20 * 10 + 10


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _chain(rounds: int) -> list[ServedModel]:
    """The versions a coordinator with ``int8`` deltas serves for global models 0..rounds."""
    rng = np.random.default_rng(5)
    vector = rng.normal(size=SIZE)
    chain = [serve(vector, round_number=0, specs=SPECS, codec="int8", previous=None)]
    for r in range(1, rounds + 1):
        vector = vector + rng.normal(scale=0.02, size=SIZE)
        chain.append(serve(vector, round_number=r, specs=SPECS, codec="int8", previous=chain[-1]))
    return chain


@dataclass
class Outcome:
    loss: float = 0.25
    samples: int = 40
    seconds: float = 0.1
    privacy_budget_used: float = 0.0


class RecordingTrainer:
    """Remembers the model each round started from; training adds 0.5."""

    def __init__(self) -> None:
        self.started_from: list[dict[str, np.ndarray]] = []

    def set_weights(self, weights):
        self.started_from.append({k: np.array(v) for k, v in weights.items()})

    def get_weights(self):
        return {k: v + 0.5 for k, v in self.started_from[-1].items()}

    def train(self, config, *, round_number, checkpoints=None):
        return Outcome()

    def evaluate_holdout(self):
        return EvalResult(accuracy=0.9, loss=0.3, samples=5)


class ServingApi:
    """Serves ``chain[n - 1]`` for round ``n``: the delta to a client that offers its
    base, else the whole version; ``tamper`` spoils the first delta it sends."""

    def __init__(self, chain, rounds, *, tamper=None, always_delta=False) -> None:
        self.chain = chain
        self.tasks = [
            Task(TaskKind.TRAIN, round_number=n, config=RoundConfig(1, 8, 0.1)) for n in rounds
        ]
        self.tamper = tamper
        self.always_delta = always_delta
        self.downloads: list[tuple[int, str]] = []
        self.sent: list[GlobalModelBlob] = []
        self.submissions = []

    def register(self, client_id, capabilities):
        return Registration(client_id or "c1", "run", "toy")

    def poll_task(self, client_id, *, wait_s):
        return self.tasks.pop(0) if self.tasks else Task(TaskKind.FINISHED)

    def download_model(self, client_id, round_number, *, have_sha256=""):
        self.downloads.append((round_number, have_sha256))
        served = self.chain[round_number - 1]
        offered = have_sha256 and have_sha256 == served.base_sha256
        if served.delta is not None and (offered or self.always_delta):
            blob = GlobalModelBlob(
                served.round_number,
                served.delta,
                _sha(served.delta),
                base_sha256=served.base_sha256,
                model_sha256=served.sha256,
            )
            if self.tamper is not None:
                blob, self.tamper = self.tamper(blob), None
        else:
            blob = GlobalModelBlob(served.round_number, served.payload, served.sha256)
        self.sent.append(blob)
        return blob

    def submit_update(self, submission):
        self.submissions.append(submission)
        return UpdateAck(submission.round_number, False, 1, 1)


def _run(api: ServingApi) -> RecordingTrainer:
    trainer = RecordingTrainer()
    ClientRuntime(api, lambda name: trainer, ClientOptions(client_id="c1")).run()
    return trainer


def _flat(weights: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([weights[s.name].ravel() for s in SPECS])


def test_client_offers_the_model_it_holds_and_trains_from_the_rebuilt_version():
    chain = _chain(3)
    api = ServingApi(chain, rounds=[1, 2, 3, 4])

    trainer = _run(api)

    assert api.downloads == [
        (1, ""),
        (2, chain[0].sha256),
        (3, chain[1].sha256),
        (4, chain[2].sha256),
    ]
    assert [bool(b.base_sha256) for b in api.sent] == [False, True, True, True]
    for started, served in zip(trainer.started_from, chain, strict=True):
        assert _flat(started).dtype == np.float32
        assert _flat(started).tobytes() == served.vector.tobytes()
    assert len(api.submissions) == 4


def _flip_last_code(blob):
    data = bytearray(blob.payload)
    data[-1] ^= 0x01
    return replace(blob, payload=bytes(data), sha256=_sha(bytes(data)))


def _truncate(blob):
    return replace(blob, payload=blob.payload[:-7], sha256=_sha(blob.payload[:-7]))


@pytest.mark.parametrize(
    "tamper",
    [
        _flip_last_code,
        _truncate,
        lambda blob: replace(blob, model_sha256=_sha(b"another model")),
        lambda blob: replace(blob, base_sha256=_sha(b"another base")),
    ],
    ids=["corrupted code", "truncated", "wrong model sha", "wrong base sha"],
)
def test_client_downloads_the_whole_model_when_the_delta_does_not_rebuild_it(tamper):
    chain = _chain(2)
    api = ServingApi(chain, rounds=[1, 2, 3], tamper=tamper)

    trainer = _run(api)

    assert api.downloads == [
        (1, ""),
        (2, chain[0].sha256),
        (2, ""),  # the fallback: nothing offered
        (3, chain[1].sha256),
    ]
    assert [bool(b.base_sha256) for b in api.sent] == [False, True, False, True]
    assert [_flat(w).tobytes() for w in trainer.started_from] == [s.vector.tobytes() for s in chain]
    assert [s.round_number for s in api.submissions] == [1, 2, 3]


def test_a_delta_sent_although_no_model_was_offered_is_a_conflict():
    chain = _chain(2)
    api = ServingApi(chain, rounds=[2], always_delta=True)

    with pytest.raises(ConflictError, match="no model was offered"):
        _run(api)

    assert api.downloads == [(2, "")]
    assert api.submissions == []
