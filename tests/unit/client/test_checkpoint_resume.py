import numpy as np
import pytest

from fedlearn.client.checkpoints import CheckpointStore, RoundCheckpoints, round_key
from fedlearn.client.trainer import LocalTrainer
from fedlearn.core.types import RoundConfig

CONFIG = RoundConfig(local_epochs=3, batch_size=32, learning_rate=0.05)


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs."""


class CountingCheckpoints(RoundCheckpoints):
    """Real checkpoints that count the saves and can die after the n-th one."""

    def __init__(self, store, key, *, die_after=None):
        super().__init__(store, key)
        self.saved_epochs = []
        self.die_after = die_after

    def save(self, state):
        super().save(state)
        self.saved_epochs.append(state.epochs_done)
        if self.die_after is not None and len(self.saved_epochs) >= self.die_after:
            raise Killed


def _fresh(separable):
    """A new trainer, as a restarted process builds it, holding the round's base model."""
    trainer = LocalTrainer("mlp", *separable, seed=4)
    base = LocalTrainer("mlp", *separable, seed=99).get_weights()
    trainer.set_weights(base)
    return trainer


def _key(round_number=2, digest="base-a"):
    return round_key("run", "c1", round_number, digest)


@pytest.fixture
def uninterrupted(separable):
    trainer = _fresh(separable)
    result = trainer.train(CONFIG, round_number=2)
    return result, trainer.get_weights()


def _assert_same_weights(got, expected):
    assert got.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_training_killed_after_an_epoch_resumes_and_matches_an_uninterrupted_run(
    tmp_path, separable, uninterrupted
):
    store = CheckpointStore(tmp_path)
    with pytest.raises(Killed):
        _fresh(separable).train(
            CONFIG, round_number=2, checkpoints=CountingCheckpoints(store, _key(), die_after=1)
        )

    restarted = _fresh(separable)
    checkpoints = CountingCheckpoints(CheckpointStore(tmp_path), _key())
    result = restarted.train(CONFIG, round_number=2, checkpoints=checkpoints)

    assert checkpoints.saved_epochs == [2]  # only epochs 2 and 3 ran; the last is not saved
    assert result.loss == uninterrupted[0].loss
    assert result.samples == uninterrupted[0].samples
    _assert_same_weights(restarted.get_weights(), uninterrupted[1])


def test_every_epoch_but_the_last_is_saved(tmp_path, separable):
    # the last state would only repeat the update the runtime puts in its outbox next
    checkpoints = CountingCheckpoints(CheckpointStore(tmp_path), _key())
    _fresh(separable).train(CONFIG, round_number=2, checkpoints=checkpoints)

    assert checkpoints.saved_epochs == [1, 2]


def test_one_epoch_rounds_write_no_checkpoint(tmp_path, separable):
    store = CheckpointStore(tmp_path)
    one_epoch = RoundConfig(local_epochs=1, batch_size=32, learning_rate=0.05)
    _fresh(separable).train(one_epoch, round_number=2, checkpoints=RoundCheckpoints(store, _key()))

    assert not store.path.exists()


def test_a_kill_in_the_last_epoch_retrains_only_that_epoch(tmp_path, separable, uninterrupted):
    store = CheckpointStore(tmp_path)
    with pytest.raises(Killed):
        _fresh(separable).train(
            CONFIG, round_number=2, checkpoints=CountingCheckpoints(store, _key(), die_after=2)
        )

    restarted = _fresh(separable)
    checkpoints = CountingCheckpoints(store, _key())
    result = restarted.train(CONFIG, round_number=2, checkpoints=checkpoints)

    assert checkpoints.saved_epochs == []  # epoch 3 ran, and is not saved
    assert result.loss == uninterrupted[0].loss
    _assert_same_weights(restarted.get_weights(), uninterrupted[1])


@pytest.mark.parametrize(
    ("key", "config"),
    [
        (_key(round_number=1), CONFIG),  # another round
        (_key(digest="base-b"), CONFIG),  # same round number, another base model
        (_key(), RoundConfig(local_epochs=3, batch_size=16, learning_rate=0.05)),
    ],
)
def test_a_checkpoint_of_another_round_or_setting_is_discarded(tmp_path, separable, key, config):
    store = CheckpointStore(tmp_path)
    with pytest.raises(Killed):
        _fresh(separable).train(
            config, round_number=2, checkpoints=CountingCheckpoints(store, key, die_after=1)
        )

    checkpoints = CountingCheckpoints(store, _key())
    assert checkpoints.load(_fresh(separable)._fingerprint(CONFIG, 2)) is None
    assert not store.path.exists()


def test_an_unreadable_checkpoint_means_starting_the_round_over(
    tmp_path, separable, uninterrupted, caplog
):
    store = CheckpointStore(tmp_path)
    store.path.write_bytes(b"not a checkpoint")

    trainer = _fresh(separable)
    checkpoints = CountingCheckpoints(store, _key())
    trainer.train(CONFIG, round_number=2, checkpoints=checkpoints)

    assert checkpoints.saved_epochs == [1, 2]
    assert "unreadable checkpoint" in caplog.text
    _assert_same_weights(trainer.get_weights(), uninterrupted[1])
