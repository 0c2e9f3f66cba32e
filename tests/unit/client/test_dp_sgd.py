"""Client DP-SGD: clipping, noise, the budget ledger and its persistence, the CLI flags.

Noise statistics use 199,210 draws (one MLP's parameters): the relative standard error
of the estimated standard deviation is about 0.16%, the tolerance 2%.
"""

from __future__ import annotations

import hashlib
import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from opacus import GradSampleModule

import fedlearn.bootstrap
from fedlearn.cli.main import main
from fedlearn.client.dp_sgd import SecureDPOptimizer
from fedlearn.client.privacy import DpOptions, PrivacyLedger, dp_sample_rate
from fedlearn.client.runtime import ClientOptions, ClientRuntime
from fedlearn.client.secure_random import secure_rng
from fedlearn.client.trainer import LocalTrainer
from fedlearn.core.serialization import encode_weights
from fedlearn.core.types import PrivacyConfig, RoundConfig
from fedlearn.errors import ConfigError, PrivacyBudgetExhaustedError
from fedlearn.models.preprocess import dataset_to_tensors
from fedlearn.models.registry import build_model
from fedlearn.models.weights import model_to_weights
from fedlearn.service.messages import GlobalModelBlob, Registration, Task, TaskKind, UpdateAck

STD_TOLERANCE = 0.02
CONFIG = RoundConfig(local_epochs=1, batch_size=50, learning_rate=0.1)


def _sha(payload):
    return hashlib.sha256(payload).hexdigest()


def _flat_grad(model):
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def _optimizer(model, *, noise_multiplier, max_grad_norm):
    return SecureDPOptimizer(
        torch.optim.SGD(model.parameters(), lr=0.1),
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        expected_batch_size=1,
        noise=secure_rng(),
    )


def test_each_per_example_gradient_is_clipped_to_the_norm_bound(separable):
    images, labels = dataset_to_tensors(*separable)
    model = build_model("mlp", seed=0)
    module = GradSampleModule(model, loss_reduction="sum")
    bound = 0.05
    optimizer = _optimizer(model, noise_multiplier=0.0, max_grad_norm=bound)
    raw_norms, clipped_norms = [], []
    for i in range(12):
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(module(images[i : i + 1]), labels[i : i + 1], reduction="sum")
        loss.backward()
        per_example = torch.cat([p.grad_sample.reshape(1, -1) for p in model.parameters()], 1)
        raw_norms.append(float(per_example.norm()))
        optimizer.pre_step()  # clip, (no) noise, divide by expected_batch_size=1
        clipped_norms.append(float(_flat_grad(model).double().norm()))

    assert min(raw_norms) > bound  # clipping had work to do
    assert max(clipped_norms) <= bound  # measured in float64
    assert min(clipped_norms) == pytest.approx(bound, rel=1e-4)


def test_gradients_within_the_bound_are_left_alone(separable):
    images, labels = dataset_to_tensors(*separable)
    model = build_model("mlp", seed=0)
    module = GradSampleModule(model, loss_reduction="sum")
    optimizer = _optimizer(model, noise_multiplier=0.0, max_grad_norm=1e6)
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(module(images[:1]), labels[:1], reduction="sum").backward()
    expected = torch.cat([p.grad_sample.reshape(-1) for p in model.parameters()])

    optimizer.pre_step()

    torch.testing.assert_close(_flat_grad(model), expected, rtol=1e-5, atol=1e-9)


def test_noise_of_an_empty_batch_step_has_std_noise_multiplier_times_clip(separable):
    images, labels = dataset_to_tensors(*separable)
    model = build_model("mlp", seed=0)
    module = GradSampleModule(model, loss_reduction="sum")
    optimizer = _optimizer(model, noise_multiplier=1.3, max_grad_norm=0.7)
    none = torch.zeros(0, dtype=torch.long)
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(module(images[none]), labels[none], reduction="sum")
    loss.backward()

    optimizer.pre_step()

    noise = _flat_grad(model).double()
    assert noise.numel() == 199_210
    assert float(noise.std()) == pytest.approx(1.3 * 0.7, rel=STD_TOLERANCE)
    assert abs(float(noise.mean())) < 10 * 0.91 / math.sqrt(noise.numel())


def test_secure_source_draws_unpredictable_standard_normals():
    source = secure_rng()

    first, second = source.standard_normal(200_001), source.standard_normal(200_001)
    uniforms = source.random(200_000)

    assert first.shape == (200_001,)
    assert first.std() == pytest.approx(1.0, rel=STD_TOLERANCE)
    assert abs(first.mean()) < 10 / math.sqrt(first.size)
    assert not np.array_equal(first, second)
    assert uniforms.min() >= 0.0 and uniforms.max() < 1.0
    assert uniforms.mean() == pytest.approx(0.5, abs=0.01)


# -- the budget -----------------------------------------------------------------------


def _ledger(tmp_path=None, **config):
    values = {"epsilon": 2.0, "delta": 1e-5, "max_grad_norm": 1.0} | config
    path = tmp_path / "privacy.json" if tmp_path is not None else None
    return PrivacyLedger(DpOptions(PrivacyConfig(**values), planned_rounds=2, ledger_path=path))


def test_a_client_at_its_budget_refuses_to_train_and_changes_nothing(separable):
    ledger = _ledger()
    trainer = LocalTrainer("mlp", *separable, privacy=ledger)
    trainer.train(CONFIG, round_number=1)
    trainer.train(CONFIG, round_number=2)  # the two planned rounds fit the budget
    spent, history = ledger.epsilon(), list(ledger.accountant.history)
    before = trainer.get_weights()

    with pytest.raises(PrivacyBudgetExhaustedError) as refused:
        trainer.train(CONFIG, round_number=3)

    assert 0 < spent <= 2.0 < refused.value.would_spend
    assert refused.value.spent == pytest.approx(spent) and refused.value.budget == 2.0
    assert ledger.accountant.history == history  # nothing charged
    for name, weights in trainer.get_weights().items():
        np.testing.assert_array_equal(weights, before[name])


def test_derived_noise_multiplier_spends_the_budget_over_the_planned_rounds(separable):
    ledger = _ledger()
    rate, steps = dp_sample_rate(200, CONFIG.batch_size)
    ledger.before_round(sample_rate=rate, steps=steps)
    ledger.charge(sample_rate=rate, steps=2 * steps)

    assert (rate, steps) == (0.25, 4)
    assert ledger.noise_multiplier > 0
    assert 1.9 < ledger.epsilon() <= 2.0  # opacus's default tolerance is 0.01


def test_ledger_survives_a_restart_with_its_derived_noise_multiplier(tmp_path):
    ledger = _ledger(tmp_path)
    ledger.before_round(sample_rate=0.1, steps=30)
    ledger.charge(sample_rate=0.1, steps=30)

    restarted = _ledger(tmp_path)

    assert (
        restarted.accountant.history
        == ledger.accountant.history
        == [(ledger.noise_multiplier, 0.1, 30)]
    )
    assert restarted.noise_multiplier == ledger.noise_multiplier
    assert restarted.epsilon() == pytest.approx(ledger.epsilon())
    assert restarted.epsilon() > 0


def test_an_unreadable_ledger_is_an_error_not_a_fresh_budget(tmp_path):
    (tmp_path / "privacy.json").write_text("{not json")

    with pytest.raises(ConfigError, match="unreadable privacy ledger"):
        _ledger(tmp_path)


@pytest.mark.parametrize(
    ("config", "rounds", "message"),
    [
        ({"epsilon": 0.0, "noise_multiplier": 0.0}, 2, "epsilon budget or a noise"),
        ({"epsilon": 3.0}, 0, "planned number of rounds"),
        ({"epsilon": 3.0, "delta": 0.0}, 2, "delta"),
    ],
)
def test_dp_options_refuse_settings_that_cannot_work(config, rounds, message):
    values = {"delta": 1e-5, "max_grad_norm": 1.0} | config
    with pytest.raises(ConfigError, match=message):
        DpOptions(PrivacyConfig(**values), planned_rounds=rounds)


# -- a short real run -----------------------------------------------------------------


class MlpApi:
    """A coordinator that serves the MLP's initial weights for a few rounds."""

    def __init__(self, rounds):
        self.tasks = [Task(TaskKind.TRAIN, round_number=n, config=CONFIG) for n in rounds]
        self.tasks.append(Task(TaskKind.FINISHED, round_number=0))
        self.payload = encode_weights(model_to_weights(build_model("mlp", seed=3)))
        self.submissions = []

    def register(self, client_id, capabilities):
        self.capabilities = capabilities
        return Registration(client_id or "c", "run", "mlp")

    def poll_task(self, client_id, *, wait_s):
        return self.tasks.pop(0)

    def download_model(self, client_id, round_number, have_sha256=""):
        return GlobalModelBlob(round_number - 1, self.payload, _sha(self.payload))

    def submit_update(self, submission):
        self.submissions.append(submission)
        return UpdateAck(submission.round_number, False, 1, 1)


def test_privacy_budget_used_grows_round_over_round_in_real_training(separable, tmp_path):
    ledger = _ledger(tmp_path, epsilon=0.0, noise_multiplier=1.0)
    api = MlpApi(rounds=[1, 2, 3])
    runtime = ClientRuntime(
        api, lambda name: LocalTrainer(name, *separable, privacy=ledger), ClientOptions()
    )

    report = runtime.run()

    spent = [s.privacy_budget_used for s in api.submissions]
    assert report.rounds_trained == 3
    assert 0 < spent[0] < spent[1] < spent[2] == pytest.approx(ledger.epsilon())
    assert all(math.isfinite(s.training_loss) for s in api.submissions)
    assert _ledger(tmp_path, epsilon=0.0, noise_multiplier=1.0).epsilon() == pytest.approx(spent[2])


# -- the CLI flags --------------------------------------------------------------------


class Captured:
    def with_recovery(self, recovery):
        return self

    def run(self):
        raise SystemExit(0)


def _client_settings(monkeypatch, capsys, *args):
    seen = []

    def build(settings):
        seen.append(settings)
        return Captured()

    monkeypatch.setattr(fedlearn.bootstrap, "build_client", build)
    monkeypatch.setattr(sys, "argv", ["fedlearn", "client", "--log-level", "warning", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    return exited.value.code, (seen[0] if seen else None), capsys.readouterr().err


def test_dp_flags_become_the_clients_privacy_config(monkeypatch, capsys, tmp_path):
    args = ["--client-id", "c1", "--cache-dir", str(tmp_path)]
    args += ["--dp-epsilon", "3", "--dp-rounds", "20", "--dp-max-grad-norm", "0.5"]

    code, settings, _ = _client_settings(monkeypatch, capsys, *args)

    assert code == 0
    assert settings.dp.config == PrivacyConfig(
        epsilon=3.0, delta=1e-5, max_grad_norm=0.5, noise_multiplier=0.0
    )
    assert settings.dp.planned_rounds == 20
    assert settings.dp.ledger_path == tmp_path / "client-state" / "c1" / "privacy.json"


def test_no_dp_flags_mean_no_dp(monkeypatch, capsys, tmp_path):
    _, settings, _ = _client_settings(monkeypatch, capsys, "--cache-dir", str(tmp_path))

    assert settings.dp is None


def test_a_dp_budget_without_a_state_folder_is_refused(monkeypatch, capsys, tmp_path):
    args = ["--cache-dir", str(tmp_path), "--dp-epsilon", "3", "--dp-rounds", "5"]

    code, settings, err = _client_settings(monkeypatch, capsys, *args)

    assert code != 0 and settings is None
    assert "needs a state folder" in err
