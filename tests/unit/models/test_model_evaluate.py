from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedlearn.errors import ConfigError, DataError
from fedlearn.models.evaluate import TorchEvaluator, evaluate_model
from fedlearn.models.preprocess import dataset_to_tensors
from fedlearn.models.registry import build_model
from fedlearn.models.weights import model_to_weights

Data = tuple[np.ndarray, np.ndarray]


def _train_briefly(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray) -> None:
    inputs, targets = dataset_to_tensors(images, labels)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        order = torch.randperm(len(targets), generator=generator)
        for start in range(0, len(targets), 20):
            index = order[start : start + 20]
            optimizer.zero_grad()
            F.cross_entropy(model(inputs[index]), targets[index]).backward()  # type: ignore[no-untyped-call]
            optimizer.step()


def test_evaluate_on_briefly_trained_model_reports_high_accuracy(
    separable: Data, separable_holdout: Data
) -> None:
    model = build_model("mlp", seed=0)
    before = evaluate_model(model, *separable_holdout)
    _train_briefly(model, *separable)
    after = evaluate_model(model, *separable_holdout)
    assert after.samples == 100
    assert after.accuracy >= 0.95
    assert after.loss < before.loss / 4
    assert 0.0 <= before.accuracy <= 1.0


def test_evaluate_of_zero_model_gives_log10_loss_and_class0_share() -> None:
    model = build_model("mlp", seed=0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
    images = np.zeros((8, 28, 28), dtype=np.uint8)
    labels = np.array([0, 0, 0, 1, 2, 3, 4, 5])
    result = evaluate_model(model, images, labels, batch_size=3)
    assert result.loss == pytest.approx(math.log(10))
    assert result.accuracy == pytest.approx(3 / 8)  # ties resolve to class 0
    assert result.samples == 8


def test_evaluate_gives_same_result_for_arrays_tensors_and_batch_sizes(separable: Data) -> None:
    model = build_model("cnn", seed=3)
    from_arrays = evaluate_model(model, *separable)
    from_tensors = evaluate_model(model, *dataset_to_tensors(*separable), batch_size=7)
    assert from_tensors.accuracy == from_arrays.accuracy
    assert from_tensors.loss == pytest.approx(from_arrays.loss, rel=1e-5)


def test_evaluate_restores_training_mode(separable: Data) -> None:
    model = build_model("mlp", seed=0)
    model.train()
    evaluate_model(model, *separable)
    assert model.training
    model.eval()
    evaluate_model(model, *separable)
    assert not model.training


def test_evaluate_rejects_empty_set_and_mixed_inputs(separable: Data) -> None:
    model = build_model("mlp", seed=0)
    empty = (np.zeros((0, 28, 28), dtype=np.uint8), np.zeros(0, dtype=np.int64))
    with pytest.raises(DataError, match="empty"):
        evaluate_model(model, *empty)
    images, labels = separable
    with pytest.raises(DataError):
        evaluate_model(model, images, torch.from_numpy(labels))
    with pytest.raises(ConfigError):
        evaluate_model(model, images, labels, batch_size=0)


def test_torch_evaluator_matches_evaluate_model(separable: Data, separable_holdout: Data) -> None:
    model = build_model("mlp", seed=0)
    _train_briefly(model, *separable)
    evaluator = TorchEvaluator("mlp", *separable_holdout, batch_size=30)
    assert evaluator.samples == 100
    assert evaluator.evaluate(model_to_weights(model)) == evaluate_model(
        model, *separable_holdout, batch_size=30
    )
    untrained = evaluator.evaluate(model_to_weights(build_model("mlp", seed=0)))
    assert untrained.accuracy < 0.5


def test_torch_evaluator_scores_the_cnn_channels_last_as_it_would_contiguous(
    separable: Data, separable_holdout: Data
) -> None:
    model = build_model("cnn", seed=1)
    _train_briefly(model, *separable)
    evaluator = TorchEvaluator("cnn", *separable_holdout, batch_size=64)
    first = evaluator.evaluate(model_to_weights(model))
    expected = evaluate_model(model, *separable_holdout, batch_size=100)  # NCHW, one batch
    assert first.accuracy == expected.accuracy
    assert first.loss == pytest.approx(expected.loss, rel=1e-5)
    # the weights of a second call land in the same channels-last parameters
    other = build_model("cnn", seed=2)
    assert evaluator.evaluate(model_to_weights(other)).loss == pytest.approx(
        evaluate_model(other, *separable_holdout).loss, rel=1e-5
    )
    assert evaluator.evaluate(model_to_weights(model)) == first


def test_torch_evaluator_rejects_weights_of_another_model(separable_holdout: Data) -> None:
    evaluator = TorchEvaluator("cnn", *separable_holdout)
    with pytest.raises(ConfigError):
        evaluator.evaluate(model_to_weights(build_model("mlp", seed=0)))


def test_torch_evaluator_rejects_unknown_model_and_empty_set(separable_holdout: Data) -> None:
    with pytest.raises(ConfigError):
        TorchEvaluator("resnet", *separable_holdout)
    with pytest.raises(DataError):
        TorchEvaluator("mlp", np.zeros((0, 28, 28), dtype=np.uint8), np.zeros(0, dtype=np.int64))
