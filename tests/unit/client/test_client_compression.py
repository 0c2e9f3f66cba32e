"""A client's update encoding: raw ``FLW1`` or a codec's ``FLC1`` with error feedback,
the residual kept in the state folder, and raw when the client lacks the run's codec."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from fedlearn.client.compression import BASIS_SUFFIX, RESIDUAL_FILE, UpdateEncoder
from fedlearn.client.recovery import ClientState, Recovery
from fedlearn.client.runtime import ClientOptions, ClientRuntime
from fedlearn.core.codecs import ErrorFeedbackState, available_codecs, decode_update, read_header
from fedlearn.core.serialization import decode_weights, encode_weights
from fedlearn.core.types import ClientCapabilities, EvalResult, RoundConfig
from fedlearn.service.messages import GlobalModelBlob, Registration, Task, TaskKind, UpdateAck

CODEC = "topk:0.1+int8"
SHAPES = {"w": (10, 20), "b": (20,)}
SIZE = 220


def _sha(payload):
    return hashlib.sha256(payload).hexdigest()


def _delta(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.normal(0.0, 1.0, shape).astype(np.float32) for name, shape in SHAPES.items()}


def _flat(tensors: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(tensors[name]).ravel() for name in SHAPES])


def _encoder(state_dir: Path | None) -> UpdateEncoder:
    return UpdateEncoder(state_dir=state_dir, rng=np.random.default_rng(0))


def _sent(payload: bytes) -> np.ndarray:
    return decode_update(payload, expected_size=SIZE)


def _residual(state_dir: Path) -> np.ndarray:
    blob = (state_dir / RESIDUAL_FILE).read_bytes()
    return ErrorFeedbackState.from_state_dict({"residual": blob}, expected_size=SIZE).residual


def _close(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal up to float32 rounding of the sums involved."""
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)


def test_raw_gives_an_flw1_payload_that_decode_weights_reads_back(tmp_path):
    delta = _delta(1)
    encoder = _encoder(tmp_path)

    payload = encoder.encode(delta, "raw")

    assert payload[:4] == b"FLW1"
    decoded = decode_weights(payload).tensors
    assert list(decoded) == list(delta)
    for name, tensor in delta.items():
        np.testing.assert_array_equal(decoded[name], tensor)
    assert not (tmp_path / RESIDUAL_FILE).exists()
    assert encoder.residual_norm == 0.0


def test_lossy_codec_sends_the_flat_vector_and_keeps_what_it_dropped(tmp_path):
    encoder = _encoder(tmp_path)
    d1, d2 = _delta(1), _delta(2)

    p1 = encoder.encode(d1, CODEC)
    r1 = _residual(tmp_path)
    p2 = encoder.encode(d2, CODEC)
    r2 = _residual(tmp_path)

    assert read_header(p1).spec.name == CODEC
    assert np.count_nonzero(_sent(p1)) <= 22
    assert np.linalg.norm(r1) > 0  # something was held back ...
    _close(_sent(p1) + r1, _flat(d1))  # ... and nothing was lost
    _close(_sent(p2) + r2, _flat(d2) + r1)
    _close(_sent(p1) + _sent(p2) + r2, _flat(d1) + _flat(d2))
    assert encoder.residual_norm == pytest.approx(float(np.linalg.norm(r2)), rel=1e-6)


def test_error_feedback_works_without_a_state_folder():
    encoder = _encoder(None)
    d1, d2 = _delta(1), _delta(2)

    p1 = encoder.encode(d1, CODEC)
    norm1 = encoder.residual_norm
    p2 = encoder.encode(d2, CODEC)

    assert norm1 == pytest.approx(float(np.linalg.norm(_flat(d1) - _sent(p1))), rel=1e-5)
    # what round 2 sent is the top of d2 plus round 1's residual, not of d2 alone
    r1 = _flat(d1) - _sent(p1)
    expected_r2 = _flat(d2) + r1 - _sent(p2)
    assert encoder.residual_norm == pytest.approx(float(np.linalg.norm(expected_r2)), rel=1e-5)
    assert encoder.residual_norm != pytest.approx(
        float(np.linalg.norm(_flat(d2) - _sent(p2))), rel=1e-3
    )


def test_residual_survives_a_new_encoder_on_the_same_state_folder(tmp_path):
    d1, d2 = _delta(1), _delta(2)
    _encoder(tmp_path).encode(d1, CODEC)
    r1 = _residual(tmp_path)

    restarted = _encoder(tmp_path)
    p2 = restarted.encode(d2, CODEC)

    _close(_sent(p2) + _residual(tmp_path), _flat(d2) + r1)
    assert np.linalg.norm(r1) > 0.1 * np.linalg.norm(_flat(d2))


@pytest.mark.parametrize(
    "stale",
    [
        pytest.param(ErrorFeedbackState.zeros(SIZE + 1).state_dict()["residual"], id="wrong-size"),
        pytest.param(b"not a residual at all", id="corrupt"),
    ],
)
def test_a_residual_that_does_not_fit_is_discarded_with_a_warning(tmp_path, caplog, stale):
    if stale.startswith(b"FLC1"):  # a residual of the right kind, for a bigger model
        stale = ErrorFeedbackState(np.full(SIZE + 1, 5.0, np.float32)).state_dict()["residual"]
    (tmp_path / RESIDUAL_FILE).write_bytes(stale)
    delta = _delta(3)

    with caplog.at_level(logging.WARNING, logger="fedlearn.client.compression"):
        payload = _encoder(tmp_path).encode(delta, CODEC)

    _close(_sent(payload) + _residual(tmp_path), _flat(delta))  # started afresh
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "error feedback afresh" in warnings[0].getMessage()
    assert str(tmp_path / RESIDUAL_FILE) in warnings[0].getMessage()


# -- the runtime picks the codec -------------------------------------------------------

BASE = {name: np.zeros(shape, np.float32) for name, shape in SHAPES.items()}


@dataclass
class Outcome:
    loss: float = 0.25
    samples: int = 40
    seconds: float = 0.1
    privacy_budget_used: float = 0.0


class DeltaTrainer:
    """Moves the weights by ``_delta(round)`` each round."""

    def __init__(self) -> None:
        self.weights: dict[str, np.ndarray] = {}
        self.round = 0

    def set_weights(self, weights):
        self.weights = {k: np.array(v) for k, v in weights.items()}

    def get_weights(self):
        step = _delta(self.round)
        return {k: v + step[k] for k, v in self.weights.items()}

    def train(self, config, *, round_number, checkpoints=None):
        self.round = round_number
        return Outcome()

    def evaluate_holdout(self):
        return EvalResult(accuracy=0.9, loss=0.3, samples=5)


class FakeApi:
    """Hands out the given tasks, then FINISHED; serves the zero model; keeps updates."""

    def __init__(self, tasks):
        self.tasks = list(tasks)
        self.submissions = []

    def register(self, client_id, capabilities):
        return Registration(client_id or "assigned", "run", "toy")

    def poll_task(self, client_id, *, wait_s):
        return self.tasks.pop(0) if self.tasks else Task(TaskKind.FINISHED)

    def download_model(self, client_id, round_number, have_sha256=""):
        return GlobalModelBlob(round_number - 1, encode_weights(BASE), _sha(encode_weights(BASE)))

    def submit_update(self, submission):
        self.submissions.append(submission)
        return UpdateAck(submission.round_number, False, 1, 1)


def _train(round_number: int, codec: str) -> Task:
    config = RoundConfig(local_epochs=1, batch_size=8, learning_rate=0.1, codec=codec)
    return Task(TaskKind.TRAIN, round_number=round_number, config=config)


def _run(codecs: tuple[str, ...], tasks, recovery: Recovery | None = None) -> FakeApi:
    api = FakeApi(tasks)
    options = ClientOptions("c1", ClientCapabilities(available_samples=40, codecs=codecs))
    ClientRuntime(api, lambda name: DeltaTrainer(), options, recovery=recovery).run()
    return api


@pytest.mark.parametrize(
    "codecs",
    [(), ("int8",), ("topk", "float16")],
    ids=["none", "int8-only", "no-int8"],
)
def test_client_sends_raw_when_its_capabilities_lack_a_stage_of_the_codec(codecs, caplog):
    with caplog.at_level(logging.WARNING, logger="fedlearn.client.runtime"):
        api = _run(codecs, [_train(1, CODEC)])

    (sub,) = api.submissions
    assert sub.payload[:4] == b"FLW1"
    decoded = decode_weights(sub.payload).tensors
    for name, tensor in _delta(1).items():
        np.testing.assert_allclose(decoded[name], tensor, rtol=1e-6)
    assert "sending raw" in caplog.text


def test_client_that_knows_the_codec_sends_it_with_error_feedback(tmp_path):
    state = ClientState.open(tmp_path / "state")
    tasks = [_train(1, CODEC), _train(2, CODEC)]

    api = _run(available_codecs(), tasks, Recovery(state=state))

    assert [read_header(s.payload).spec.name for s in api.submissions] == [CODEC, CODEC]
    sent = sum(_sent(s.payload) for s in api.submissions)
    residual = _residual(tmp_path / "state" / "runs" / "run")  # kept per run
    _close(sent + residual, _flat(_delta(1)) + _flat(_delta(2)))
    assert not (tmp_path / "state" / RESIDUAL_FILE).exists()


def test_client_sends_raw_in_a_raw_run_whatever_it_knows():
    api = _run(available_codecs(), [_train(1, "raw")])

    (sub,) = api.submissions
    assert sub.payload[:4] == b"FLW1"


def test_a_new_run_does_not_inherit_another_runs_residual(tmp_path):
    encoder = _encoder(tmp_path)
    encoder.use_run("first")
    encoder.encode(_delta(1), CODEC)
    assert encoder.residual_norm > 0

    later = _encoder(tmp_path)
    later.use_run("second")
    delta = _delta(2)
    payload = later.encode(delta, CODEC)

    _close(_sent(payload) + _residual(tmp_path / "runs" / "second"), _flat(delta))


def test_lowrank_keeps_its_basis_beside_the_residual_and_a_restart_resumes_from_it(tmp_path):
    codec = "lowrank:2"
    kept, restarted = tmp_path / "kept", tmp_path / "restarted"
    kept.mkdir()
    restarted.mkdir()
    one = _encoder(kept)
    one.encode(_delta(1), codec)
    second_kept = one.encode(_delta(2), codec)

    _encoder(restarted).encode(_delta(1), codec)
    assert (restarted / (RESIDUAL_FILE + BASIS_SUFFIX)).exists()
    # a new process: another rng, which a random start would draw from
    fresh = UpdateEncoder(state_dir=restarted, rng=np.random.default_rng(7))
    second_resumed = fresh.encode(_delta(2), codec)

    np.testing.assert_array_equal(_sent(second_resumed), _sent(second_kept))


def test_a_codec_without_basis_removes_a_stale_basis_file(tmp_path):
    encoder = _encoder(tmp_path)
    encoder.encode(_delta(1), "lowrank:2")
    encoder.encode(_delta(2), CODEC)
    assert not (tmp_path / (RESIDUAL_FILE + BASIS_SUFFIX)).exists()
