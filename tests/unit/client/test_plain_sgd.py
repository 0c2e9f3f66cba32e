"""PlainSgd makes the update torch.optim.SGD (no momentum) makes, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedlearn.client.sgd import PlainSgd
from fedlearn.client.trainer import LocalTrainer, round_seed
from fedlearn.core.types import RoundConfig
from fedlearn.errors import ConfigError
from fedlearn.models.preprocess import dataset_to_tensors
from fedlearn.models.registry import build_model

Data = tuple[np.ndarray, np.ndarray]


def _steps(optimizer_class, *, steps: int = 6, lr: float = 0.05) -> dict[str, torch.Tensor]:
    model = build_model("cnn", seed=3)
    optimizer = optimizer_class(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(11)
    for _ in range(steps):
        inputs = torch.randn(16, 1, 28, 28, generator=generator)
        targets = torch.randint(0, 10, (16,), generator=generator)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _torch_sgd(params, *, lr):
    return torch.optim.SGD(params, lr=lr, momentum=0.0)


def test_plain_sgd_gives_the_weights_torch_sgd_gives_bit_for_bit():
    ours, theirs = _steps(PlainSgd), _steps(_torch_sgd)

    assert list(ours) == list(theirs)
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name


def test_the_check_tells_a_different_learning_rate_apart():
    """The control: a nearby learning rate gives other bits, so equality means something."""
    ours, theirs = _steps(PlainSgd, lr=0.05), _steps(_torch_sgd, lr=0.0500001)

    assert not all(torch.equal(ours[name], theirs[name]) for name in ours)


def test_a_trainer_round_matches_the_same_round_with_torch_sgd(separable: Data):
    """LocalTrainer's epoch, replayed with torch.optim.SGD: the same weights and loss."""
    images, labels = separable
    config = RoundConfig(local_epochs=2, batch_size=32, learning_rate=0.05)
    trainer = LocalTrainer("cnn", images, labels, seed=5)
    result = trainer.train(config, round_number=2)

    model = build_model("cnn", seed=5, channels_last=True)  # as the trainer's
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.0)
    inputs, targets = dataset_to_tensors(images, labels)
    generator = torch.Generator().manual_seed(round_seed(5, 2))
    for _ in range(config.local_epochs):
        total = torch.zeros((), dtype=torch.float64)
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(labels), config.batch_size):
            index = order[start : start + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(
                model(inputs.index_select(0, index)), targets.index_select(0, index)
            )
            loss.backward()
            optimizer.step()
            total += loss.detach().double() * index.shape[0]

    assert result.loss == float(total) / len(labels)
    trained = trainer.get_weights()
    for name, tensor in model.state_dict().items():
        np.testing.assert_array_equal(trained[name], tensor.numpy(), err_msg=name)


def test_state_dict_is_the_one_torch_sgd_saves_and_loads_back():
    model = build_model("mlp", seed=0)
    theirs = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.0).state_dict()
    ours = PlainSgd(model.parameters(), lr=0.2)

    assert ours.state_dict() == theirs
    other = PlainSgd(model.parameters(), lr=0.7)
    other.load_state_dict(theirs)
    assert other.lr == 0.2


def test_load_state_dict_refuses_momentum_or_other_parameters():
    model = build_model("mlp", seed=0)
    with_momentum = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.zeros(2, 1, 28, 28)).sum().backward()
    with_momentum.step()
    ours = PlainSgd(model.parameters(), lr=0.1)

    with pytest.raises(ConfigError, match="momentum"):
        ours.load_state_dict(with_momentum.state_dict())
    with pytest.raises(ConfigError, match="parameters"):
        ours.load_state_dict(PlainSgd(list(model.parameters())[:2], lr=0.1).state_dict())
    with pytest.raises(ConfigError, match="plain SGD"):
        ours.load_state_dict({"state": {}})


def test_zero_grad_drops_or_zeroes_gradients_and_step_skips_parameters_without_one():
    first, second = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    optimizer = PlainSgd([first, second], lr=0.5)
    (first * 2).sum().backward()
    optimizer.step()

    assert torch.equal(first.detach(), torch.zeros(3))
    assert torch.equal(second.detach(), torch.ones(2))
    optimizer.zero_grad(set_to_none=False)
    assert first.grad is not None and torch.equal(first.grad, torch.zeros(3))
    optimizer.zero_grad()
    assert first.grad is None


@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan"), float("inf")])
def test_plain_sgd_rejects_an_unusable_learning_rate(lr):
    with pytest.raises(ConfigError, match="learning rate"):
        PlainSgd([torch.nn.Parameter(torch.ones(1))], lr=lr)
