import logging

import pytest
import torch

from fedlearn.client.memory import is_out_of_memory, train_with_smaller_batches
from fedlearn.client.trainer import LocalTrainer
from fedlearn.core.types import RoundConfig


class OomAbove:
    """A training step that runs out of memory on batches larger than ``limit``."""

    def __init__(self, limit, *, error=RuntimeError):
        self.limit = limit
        self.error = error
        self.tried = []

    def __call__(self, batch_size):
        self.tried.append(batch_size)
        if batch_size > self.limit:
            raise self.error(f"CUDA out of memory. Tried to allocate {batch_size} MiB")
        return f"trained at {batch_size}"


def test_out_of_memory_halves_the_batch_until_training_fits(caplog):
    step = OomAbove(20)

    with caplog.at_level(logging.WARNING):
        result = train_with_smaller_batches(step, batch_size=128, min_batch_size=1, round_number=4)

    assert result == "trained at 16"
    assert step.tried == [128, 64, 32, 16]
    assert "round 4: out of memory at batch size 128, retrying with 64" in caplog.text


def test_cuda_out_of_memory_error_is_recognised():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("boom"))
    assert is_out_of_memory(RuntimeError("[enforce fail] DefaultCPUAllocator: out of memory"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(MemoryError())


def test_cuda_out_of_memory_errors_are_retried_too():
    step = OomAbove(8, error=torch.cuda.OutOfMemoryError)

    assert train_with_smaller_batches(step, batch_size=32, min_batch_size=1, round_number=1) == (
        "trained at 8"
    )


def test_round_is_given_up_below_the_batch_size_floor(caplog):
    step = OomAbove(3)

    result = train_with_smaller_batches(step, batch_size=32, min_batch_size=8, round_number=6)

    assert result is None
    assert step.tried == [32, 16, 8]
    assert "round 6 skipped: out of memory at batch size 8, the smallest allowed is 8" in (
        caplog.text
    )


def test_other_errors_are_not_retried():
    def broken(batch_size):
        raise RuntimeError("shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes"):
        train_with_smaller_batches(broken, batch_size=32, min_batch_size=1, round_number=1)


def test_local_trainer_retried_at_a_smaller_batch_matches_a_run_at_that_batch(separable):
    """With a model that fails on big batches, the retry trains exactly as a plain run
    with the halved batch size would: the failed attempt leaves no trace."""
    config = RoundConfig(local_epochs=1, batch_size=64, learning_rate=0.05)
    reference = LocalTrainer("mlp", *separable, seed=3)
    base = reference.get_weights()
    reference.train(RoundConfig(1, 16, 0.05), round_number=1)

    trainer = LocalTrainer("mlp", *separable, seed=3)
    forward = trainer._model.forward

    calls = []

    def limited(x):  # a few steps succeed before the memory runs out
        calls.append(x.shape[0])
        if x.shape[0] > 16 and len(calls) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return forward(x)

    trainer._model.forward = limited

    def attempt(batch_size):
        trainer.set_weights(base)
        return trainer.train(RoundConfig(1, batch_size, 0.05), round_number=1)

    result = train_with_smaller_batches(
        attempt, batch_size=config.batch_size, min_batch_size=1, round_number=1
    )

    assert result is not None
    assert calls[:3] == [64, 64, 64]
    for name, value in reference.get_weights().items():
        torch.testing.assert_close(
            torch.from_numpy(trainer.get_weights()[name]), torch.from_numpy(value)
        )
