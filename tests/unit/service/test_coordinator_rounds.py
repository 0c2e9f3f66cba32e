from dataclasses import replace

import numpy as np
import pytest
from service_world import INITIAL, World, delta, submission

from fedlearn.core.serialization import decode_weights
from fedlearn.core.strategy import FedAvgM
from fedlearn.core.types import RoundStatus
from fedlearn.service.messages import RunState, TaskKind


def _global(world: World) -> np.ndarray:
    return np.concatenate([v.ravel() for v in world.coordinator.global_weights().values()])


def test_round_opens_only_once_min_clients_registered(world):
    world.register("a")
    assert world.coordinator.poll_task("a").kind is TaskKind.WAIT
    world.register("b")
    task = world.coordinator.poll_task("a")
    assert task.kind is TaskKind.TRAIN and task.round_number == 1
    assert task.config == world.config.round_config
    assert task.deadline_at == world.clock.t + 60.0


def test_global_model_is_fedavg_of_accepted_deltas_weighted_by_samples(world):
    world.register("a", "b")
    world.coordinator.submit_update(submission("a", 1, delta(1.0), samples=30))
    ack = world.coordinator.submit_update(submission("b", 1, delta(-1.0), samples=10))
    assert ack.updates_received == 2 and ack.updates_expected == 2
    base = np.concatenate([v.ravel() for v in INITIAL.values()])
    np.testing.assert_allclose(_global(world), base + (30 * 1.0 - 10 * 1.0) / 40)
    assert world.coordinator.wait_for_evaluations(5.0)
    round1 = world.runs.get_round("r", 1)
    assert round1.status is RoundStatus.COMPLETED
    assert round1.participating_clients == 2
    assert round1.accuracy == pytest.approx(0.52)  # second evaluation (round 0 was first)
    assert round1.training_loss == pytest.approx(0.5)
    stored = decode_weights(world.models.get(round1.global_model_path)).flat()
    np.testing.assert_allclose(stored, _global(world))
    assert world.runs.get_round("r", 2).status is RoundStatus.OPEN


def test_run_finishes_after_num_rounds_and_clients_are_told(world):
    world.register("a", "b")
    for n in (1, 2, 3):
        for c in ("a", "b"):
            world.coordinator.submit_update(submission(c, n, delta(0.1)))
    assert world.coordinator.status().state is RunState.FINISHED
    assert world.coordinator.wait_for_evaluations(5.0)
    assert world.coordinator.finished
    assert all(r.accuracy is not None for r in world.runs.list_rounds("r"))
    assert world.coordinator.poll_task("a").kind is TaskKind.FINISHED
    assert not world.coordinator.all_clients_released
    world.coordinator.poll_task("b")
    assert world.coordinator.all_clients_released
    assert [r.round_number for r in world.coordinator.status().rounds] == [0, 1, 2, 3]


def test_deadline_closes_round_at_quorum_with_the_updates_received():
    world = World(min_clients=2)
    world.register("a", "b", "c")
    world.coordinator.submit_update(submission("a", 1, delta(1.0)))
    world.coordinator.submit_update(submission("b", 1, delta(3.0)))
    world.clock.t += 61
    world.coordinator.tick()
    assert world.runs.get_round("r", 1).status is RoundStatus.COMPLETED
    np.testing.assert_allclose(world.coordinator.global_weights()["w"], 2.0)


def test_deadline_below_quorum_fails_round_and_keeps_the_global_model():
    world = World(min_clients=2)
    world.register("a", "b")
    before = _global(world)
    world.coordinator.submit_update(submission("a", 1, delta(1.0)))
    world.clock.t += 61
    world.coordinator.tick()
    failed = world.runs.get_round("r", 1)
    assert failed.status is RoundStatus.FAILED and "deadline" in failed.failure_reason
    np.testing.assert_array_equal(_global(world), before)
    assert world.coordinator.poll_task("a").round_number == 2


def test_fedavgm_momentum_carries_across_rounds():
    world = World(strategy=FedAvgM(momentum=0.5))
    world.register("a", "b")
    for n in (1, 2):
        for c in ("a", "b"):
            world.coordinator.submit_update(submission(c, n, delta(1.0)))
    # round 1: v=1, w=0+1; round 2: v=0.5+1=1.5, w=1+1.5
    np.testing.assert_allclose(world.coordinator.global_weights()["w"], 2.5)


def test_client_sampling_selects_clients_per_round():
    world = World(min_clients=2, clients_per_round=2, seed=3)
    world.register("a", "b", "c", "d")
    selected = [c for c in "abcd" if world.coordinator.poll_task(c).kind is TaskKind.TRAIN]
    assert len(selected) == 2
    assert set(world.runs.get_round("r", 1).selected_clients) == set(selected)


def test_each_round_hands_out_the_decayed_learning_rate():
    world = World(lr_decay=0.5)
    world.register("a", "b")
    assert world.coordinator.poll_task("a").config.learning_rate == pytest.approx(0.1)
    for c in ("a", "b"):
        world.coordinator.submit_update(submission(c, 1, delta(0.1)))
    assert world.coordinator.poll_task("a").config.learning_rate == pytest.approx(0.05)
    assert world.runs.get_round("r", 2).config.learning_rate == pytest.approx(0.05)


def test_a_completed_round_records_where_its_time_went(world):
    world.register("a", "b")
    world.coordinator.get_global_model("a", 1)
    world.coordinator.record_download(1, 0.25)
    world.coordinator.record_download(7, 9.0)  # not the open round: ignored
    first = replace(submission("a", 1, delta(1.0)), upload_seconds=0.5)
    world.coordinator.submit_update(first)
    world.coordinator.submit_update(replace(submission("b", 1, delta(2.0)), upload_seconds=0.25))
    timings = world.runs.get_round("r", 1).timings
    assert timings.download == 0.25
    assert timings.upload == 0.75
    for phase in ("validate", "persist", "aggregate", "close"):
        assert getattr(timings, phase) > 0.0, phase
