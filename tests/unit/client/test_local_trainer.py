from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedlearn.client.trainer import LocalTrainer, TrainResult, round_seed
from fedlearn.core.types import RoundConfig
from fedlearn.errors import ConfigError, DataError
from fedlearn.models.preprocess import dataset_to_tensors
from fedlearn.models.registry import build_model
from fedlearn.models.weights import model_to_weights

Data = tuple[np.ndarray, np.ndarray]


def _trainer(data: Data, holdout: Data | None = None, **kwargs: object) -> LocalTrainer:
    images, labels = data
    if holdout is None:
        return LocalTrainer("mlp", images, labels, **kwargs)  # type: ignore[arg-type]
    return LocalTrainer(
        "mlp",
        images,
        labels,
        holdout_images=holdout[0],
        holdout_labels=holdout[1],
        **kwargs,  # type: ignore[arg-type]
    )


def test_training_lowers_loss_and_reaches_high_holdout_accuracy(
    separable: Data, separable_holdout: Data
) -> None:
    trainer = _trainer(separable, separable_holdout)
    before = trainer.evaluate_holdout()
    assert before is not None
    first = trainer.train(
        RoundConfig(local_epochs=1, batch_size=20, learning_rate=0.05), round_number=1
    )
    later = trainer.train(
        RoundConfig(local_epochs=3, batch_size=20, learning_rate=0.05), round_number=2
    )
    after = trainer.evaluate_holdout()
    assert isinstance(first, TrainResult)
    assert later.loss < first.loss / 2
    assert first.samples == later.samples == 200
    assert later.seconds >= 0.0
    assert after is not None
    assert after.samples == 100
    assert after.accuracy >= 0.95
    assert after.loss < before.loss


def test_cnn_training_lowers_loss(separable: Data, separable_holdout: Data) -> None:
    images, labels = separable
    trainer = LocalTrainer(
        "cnn",
        images,
        labels,
        holdout_images=separable_holdout[0],
        holdout_labels=separable_holdout[1],
    )
    config = RoundConfig(local_epochs=1, batch_size=20, learning_rate=0.05)
    first = trainer.train(config, round_number=0)
    second = trainer.train(config, round_number=1)
    assert second.loss < first.loss
    result = trainer.evaluate_holdout()
    assert result is not None and result.accuracy >= 0.9


def test_train_is_reproducible_for_same_seed_and_round(separable: Data) -> None:
    start = model_to_weights(build_model("mlp", seed=9))
    config = RoundConfig(local_epochs=2, batch_size=16, learning_rate=0.1)
    results = []
    for _ in range(2):
        trainer = _trainer(separable, seed=4)
        trainer.set_weights(start)
        results.append((trainer.train(config, round_number=3), trainer.get_weights()))
    (first, first_weights), (second, second_weights) = results
    assert first.loss == second.loss
    for key in start:
        np.testing.assert_array_equal(first_weights[key], second_weights[key])


def test_train_shuffles_differently_in_another_round(separable: Data) -> None:
    start = model_to_weights(build_model("mlp", seed=9))
    config = RoundConfig(local_epochs=1, batch_size=16, learning_rate=0.1)
    weights = []
    for round_number in (1, 2):
        trainer = _trainer(separable, seed=4)
        trainer.set_weights(start)
        trainer.train(config, round_number=round_number)
        weights.append(trainer.get_weights())
    assert not np.array_equal(weights[0]["fc1.weight"], weights[1]["fc1.weight"])


def test_full_batch_epoch_is_one_plain_sgd_step(separable: Data) -> None:
    reference = build_model("mlp", seed=1)
    trainer = _trainer(separable)
    trainer.set_weights(model_to_weights(reference))
    result = trainer.train(
        RoundConfig(local_epochs=1, batch_size=500, learning_rate=0.3), round_number=0
    )

    inputs, targets = dataset_to_tensors(*separable)
    loss = F.cross_entropy(reference(inputs), targets)
    loss.backward()  # type: ignore[no-untyped-call]
    assert result.loss == pytest.approx(loss.item(), rel=1e-5)
    trained = trainer.get_weights()
    for name, parameter in reference.named_parameters():
        assert parameter.grad is not None
        expected = (parameter - 0.3 * parameter.grad).detach().numpy()
        np.testing.assert_allclose(trained[name], expected, rtol=1e-5, atol=1e-6)


def test_train_leaves_global_rng_untouched(separable: Data) -> None:
    trainer = _trainer(separable)
    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    trainer.train(RoundConfig(local_epochs=1, batch_size=50, learning_rate=0.05), round_number=0)
    assert torch.equal(torch.rand(4), expected)


def test_weights_round_trip_through_trainer(separable: Data) -> None:
    trainer = _trainer(separable)
    weights = model_to_weights(build_model("mlp", seed=11))
    trainer.set_weights(weights)
    got = trainer.get_weights()
    assert list(got) == list(weights)
    for key in weights:
        np.testing.assert_array_equal(got[key], weights[key])


def test_set_weights_rejects_weights_of_another_model(separable: Data) -> None:
    with pytest.raises(ConfigError):
        _trainer(separable).set_weights(model_to_weights(build_model("cnn", seed=0)))


def test_evaluate_holdout_is_none_without_or_with_empty_holdout(separable: Data) -> None:
    assert _trainer(separable).evaluate_holdout() is None
    empty = (np.zeros((0, 28, 28), dtype=np.uint8), np.zeros(0, dtype=np.int64))
    assert _trainer(separable, empty).evaluate_holdout() is None


def test_trainer_rejects_half_a_holdout_and_empty_training_set(separable: Data) -> None:
    images, labels = separable
    with pytest.raises(ConfigError, match="holdout"):
        LocalTrainer("mlp", images, labels, holdout_images=images)
    with pytest.raises(DataError, match="empty"):
        LocalTrainer("mlp", images[:0], labels[:0])
    with pytest.raises(DataError):
        LocalTrainer("mlp", images, labels[:10])
    with pytest.raises(ConfigError):
        LocalTrainer("resnet", images, labels)
    with pytest.raises(ConfigError):
        LocalTrainer("mlp", images, labels, seed=-1)


@pytest.mark.parametrize(
    "config",
    [
        RoundConfig(local_epochs=0),
        RoundConfig(batch_size=0),
        RoundConfig(learning_rate=0.0),
        RoundConfig(learning_rate=float("nan")),
    ],
)
def test_train_rejects_unusable_config(separable: Data, config: RoundConfig) -> None:
    with pytest.raises(ConfigError):
        _trainer(separable).train(config, round_number=0)


def test_round_seed_depends_on_seed_and_round() -> None:
    seeds = {round_seed(s, r) for s in range(3) for r in range(3)}
    assert len(seeds) == 9
    assert all(0 <= s < 2**63 for s in seeds)
    assert round_seed(1, 2) == round_seed(1, 2)
    with pytest.raises(ConfigError):
        round_seed(0, -1)


def test_the_cnn_trains_channels_last_with_the_same_sgd_step_and_plain_weights(
    separable: Data,
) -> None:
    images, labels = separable[0][:64], separable[1][:64]
    reference = build_model("cnn", seed=1)  # contiguous (NCHW), as the weights travel
    trainer = LocalTrainer("cnn", images, labels)
    trainer.set_weights(model_to_weights(reference))
    assert trainer.get_weights()["conv2.weight"].flags.c_contiguous
    trainer.train(RoundConfig(local_epochs=1, batch_size=64, learning_rate=0.1), round_number=0)

    inputs, targets = dataset_to_tensors(images, labels)
    F.cross_entropy(reference(inputs), targets).backward()  # type: ignore[no-untyped-call]
    trained = trainer.get_weights()
    for name, parameter in reference.named_parameters():
        assert parameter.grad is not None
        expected = (parameter - 0.1 * parameter.grad).detach().numpy()
        assert trained[name].flags.c_contiguous
        np.testing.assert_allclose(trained[name], expected, rtol=1e-4, atol=1e-5)
