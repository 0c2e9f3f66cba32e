"""Missed deadlines, failed aggregation, divergence and operator rollbacks."""

import math
import os
import sys
import threading

import numpy as np
import pytest
from service_world import World, delta, submission

from fedlearn.core.types import EvalResult, RoundStatus
from fedlearn.errors import ConflictError, NotFoundError, StorageError
from fedlearn.service.background import BACKGROUND_NICENESS
from fedlearn.service.messages import RunState, TaskKind


class ScriptedEvaluator:
    """Accuracy and loss per evaluated round, in call order (round 0 first)."""

    def __init__(self, *results: tuple[float, float]) -> None:
        self._results = list(results)

    def evaluate(self, weights):
        accuracy, loss = self._results.pop(0) if self._results else (0.9, 0.1)
        return EvalResult(accuracy=accuracy, loss=loss, samples=10)


def _vector(weights) -> np.ndarray:
    return np.concatenate([np.asarray(v).ravel() for v in weights.values()])


def _train_round(world: World, number: int, value: float) -> None:
    for client in ("a", "b"):
        world.coordinator.submit_update(submission(client, number, delta(value)))
    assert world.coordinator.wait_for_evaluations(5.0)


def _statuses(world: World) -> dict[int, RoundStatus]:
    return {r.round_number: r.status for r in world.runs.list_rounds("r")}


def test_clients_that_miss_the_deadline_are_recorded_and_the_round_closes_at_quorum():
    world = World(min_clients=2)
    world.register("a", "b")  # round 1 opens with a and b
    world.register("c")
    _train_round(world, 1, 0.5)
    assert world.runs.get_round("r", 2).selected_clients == ("a", "b", "c")
    world.coordinator.submit_update(submission("a", 2, delta(1.0)))
    world.coordinator.submit_update(submission("b", 2, delta(1.0)))
    world.clock.t += 61.0
    world.coordinator.tick()
    assert world.runs.get_round("r", 2).status is RoundStatus.COMPLETED
    assert world.runs.get_round("r", 2).participating_clients == 2
    (missed,) = world.runs.list_rejections("r", 2)
    assert (missed.client_id, missed.reason) == ("c", "deadline_missed")
    assert world.coordinator.status().rejections == {"deadline_missed": 1}


def test_a_failed_aggregation_publishes_nothing_and_the_next_round_starts_from_the_same_model(
    monkeypatch,
):
    world = World()
    world.register("a", "b")
    before = _vector(world.coordinator.global_weights())
    real_put = world.models.put

    def failing_put(key, payload):
        if key.endswith("global.flw"):
            raise StorageError("disk full")
        return real_put(key, payload)

    monkeypatch.setattr(world.models, "put", failing_put)
    world.coordinator.submit_update(submission("a", 1, delta(1.0)))
    world.coordinator.submit_update(submission("b", 1, delta(1.0)))

    failed = world.runs.get_round("r", 1)
    assert failed.status is RoundStatus.FAILED
    assert "aggregation failed: disk full" in failed.failure_reason
    assert failed.global_model_path is None
    np.testing.assert_array_equal(_vector(world.coordinator.global_weights()), before)
    next_round = world.runs.get_round("r", 2)
    assert next_round.status is RoundStatus.OPEN
    assert next_round.base_model_path == world.runs.get_round("r", 0).global_model_path


def test_a_non_finite_evaluation_loss_rolls_the_round_back():
    world = World(evaluator=ScriptedEvaluator((0.1, 2.3), (0.8, 0.5), (0.1, math.nan)))
    world.register("a", "b")
    _train_round(world, 1, 0.5)
    good = _vector(world.coordinator.global_weights())
    _train_round(world, 2, 100.0)

    assert _statuses(world) == {
        0: RoundStatus.COMPLETED,
        1: RoundStatus.COMPLETED,
        2: RoundStatus.ROLLED_BACK,
        3: RoundStatus.FAILED,  # opened on the diverged model, failed by the rollback
        4: RoundStatus.OPEN,
    }
    assert "round 2 diverged: evaluation loss nan" in world.runs.get_round("r", 2).failure_reason
    np.testing.assert_array_equal(_vector(world.coordinator.global_weights()), good)
    assert (
        world.runs.get_round("r", 4).base_model_path
        == world.runs.get_round("r", 1).global_model_path
    )
    assert world.coordinator.status().completed_rounds == 1


def test_an_accuracy_drop_beyond_the_margin_rolls_back_and_a_small_one_does_not():
    evaluator = ScriptedEvaluator((0.1, 2.3), (0.80, 0.5), (0.75, 0.6), (0.40, 1.9))
    world = World(evaluator=evaluator, max_accuracy_drop=0.1, num_rounds=5)
    world.register("a", "b")
    _train_round(world, 1, 0.5)
    _train_round(world, 2, 0.5)  # 0.80 -> 0.75: within the margin
    assert world.runs.get_round("r", 2).status is RoundStatus.COMPLETED
    _train_round(world, 3, 0.5)  # 0.75 -> 0.40: diverged
    assert world.runs.get_round("r", 3).status is RoundStatus.ROLLED_BACK
    assert "0.3500 below round 2's 0.7500" in world.runs.get_round("r", 3).failure_reason


def test_an_operator_rollback_restores_the_round_and_survives_a_restart():
    world = World(num_rounds=5)
    world.register("a", "b")
    _train_round(world, 1, 0.5)
    round1 = _vector(world.coordinator.global_weights())
    _train_round(world, 2, 1.0)
    _train_round(world, 3, 1.0)
    world.coordinator.submit_update(submission("a", 4, delta(1.0)))  # round 4 half done

    outcome = world.coordinator.rollback(1, reason="bad data in rounds 2-3")

    assert outcome.rolled_back == (2, 3)
    assert _statuses(world)[2] is RoundStatus.ROLLED_BACK
    assert _statuses(world)[4] is RoundStatus.FAILED
    assert "by an operator: bad data" in world.runs.get_round("r", 3).failure_reason
    np.testing.assert_array_equal(_vector(world.coordinator.global_weights()), round1)
    assert world.coordinator.status().completed_rounds == 1
    assert world.coordinator.poll_task("a").round_number == 5

    world.restart()
    np.testing.assert_array_equal(_vector(world.coordinator.global_weights()), round1)
    assert world.coordinator.status().completed_rounds == 1


@pytest.mark.parametrize(
    ("target", "error"), [(7, NotFoundError), (2, ConflictError)], ids=["unknown", "open"]
)
def test_a_rollback_to_a_round_that_is_not_completed_changes_nothing(target, error):
    world = World()
    world.register("a", "b")
    _train_round(world, 1, 0.5)
    before = _vector(world.coordinator.global_weights())
    with pytest.raises(error):
        world.coordinator.rollback(target)
    assert _statuses(world) == {
        0: RoundStatus.COMPLETED,
        1: RoundStatus.COMPLETED,
        2: RoundStatus.OPEN,
    }
    np.testing.assert_array_equal(_vector(world.coordinator.global_weights()), before)


def test_a_run_that_keeps_diverging_fails_after_max_rollbacks():
    nan = (0.1, math.nan)
    world = World(evaluator=ScriptedEvaluator((0.1, 2.3), nan, nan, nan), max_rollbacks=2)
    world.register("a", "b")
    rounds = []
    for _ in range(3):
        number = world.coordinator.poll_task("a").round_number
        rounds.append(number)
        _train_round(world, number, 1.0)
    assert rounds == [1, 3, 5]  # each rollback fails the round opened on the bad model
    assert world.coordinator.status().state is RunState.FAILED
    assert world.coordinator.poll_task("a").kind is TaskKind.FINISHED


class BlockingEvaluator:
    """Scores round 0 at once and later rounds only once released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def evaluate(self, weights):
        self.calls += 1
        if self.calls > 1:
            assert self.release.wait(5.0)
        return EvalResult(accuracy=0.9, loss=0.1, samples=10)


def test_clients_are_not_released_while_the_last_round_is_still_evaluated():
    evaluator = BlockingEvaluator()
    world = World(evaluator=evaluator, num_rounds=1)
    world.register("a", "b")
    _train_round_without_waiting(world, 1)
    assert world.coordinator.poll_task("a").kind is TaskKind.WAIT
    evaluator.release.set()
    assert world.coordinator.wait_for_evaluations(5.0)
    assert world.coordinator.poll_task("a").kind is TaskKind.FINISHED


def _train_round_without_waiting(world: World, number: int) -> None:
    for client in ("a", "b"):
        world.coordinator.submit_update(submission(client, number, delta(0.5)))


class PriorityRecordingEvaluator:
    """Records the niceness of the thread each evaluation runs on."""

    def __init__(self) -> None:
        self.niceness: list[int] = []

    def evaluate(self, weights):
        self.niceness.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return EvalResult(accuracy=0.9, loss=0.1, samples=10)


@pytest.mark.skipif(sys.platform != "linux", reason="niceness is per thread on Linux only")
def test_evaluations_run_at_the_lowest_cpu_priority_and_leave_the_callers_priority_alone():
    evaluator = PriorityRecordingEvaluator()
    world = World(evaluator=evaluator)
    world.register("a", "b")
    _train_round(world, 1, 0.5)
    _train_round(world, 2, 0.5)
    _start, *rounds = evaluator.niceness  # the initial model is scored at start-up, in line
    assert rounds == [BACKGROUND_NICENESS, BACKGROUND_NICENESS]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < BACKGROUND_NICENESS
