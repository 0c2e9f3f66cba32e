import threading

import numpy as np
from service_world import World, delta, submission

from fedlearn.core.strategy import FedAvgM
from fedlearn.core.types import RoundStatus
from fedlearn.service.messages import TaskKind


def test_restart_resumes_the_open_round_with_its_stored_updates():
    world = World(min_clients=3)
    world.register("a", "b", "c")
    world.coordinator.submit_update(submission("a", 1, delta(1.0), samples=10))
    world.restart()
    assert world.coordinator.poll_task("a").kind is TaskKind.WAIT  # already reported
    assert world.coordinator.poll_task("b").round_number == 1
    world.coordinator.submit_update(submission("b", 1, delta(2.0), samples=10))
    world.coordinator.submit_update(submission("c", 1, delta(3.0), samples=20))
    np.testing.assert_allclose(world.coordinator.global_weights()["w"], (10 + 20 + 60) / 40)
    assert world.runs.get_round("r", 1).participating_clients == 3


def test_restart_after_completed_rounds_continues_from_the_last_one():
    world = World(min_clients=2, strategy=FedAvgM(momentum=0.5))
    world.register("a", "b")
    for c in ("a", "b"):
        world.coordinator.submit_update(submission(c, 1, delta(1.0)))
    before = world.coordinator.global_weights()["w"].copy()
    world.restart()
    np.testing.assert_array_equal(world.coordinator.global_weights()["w"], before)
    assert world.coordinator.status().completed_rounds == 1
    task = world.coordinator.poll_task("a")
    assert task.round_number == 2
    for c in ("a", "b"):
        world.coordinator.submit_update(submission(c, 2, delta(1.0)))
    # the momentum buffer survived the restart: v = 0.5 * 1 + 1
    np.testing.assert_allclose(world.coordinator.global_weights()["w"], before + 1.5)
    assert world.runs.get_round("r", 2).status is RoundStatus.COMPLETED


def test_update_blobs_are_dropped_after_the_round_unless_kept():
    for keep in (False, True):
        world = World(min_clients=2, keep_updates=keep)
        world.register("a", "b")
        for c in ("a", "b"):
            world.coordinator.submit_update(submission(c, 1, delta(1.0)))
        world.coordinator.wait_for_housekeeping(5.0)
        paths = [u.model_update_path for u in world.runs.list_updates("r", 1)]
        present = [p in world.models._blobs for p in paths]
        assert present == [keep, keep]


def test_the_next_round_opens_before_the_closed_rounds_blobs_are_deleted(monkeypatch):
    world = World(min_clients=2)
    world.register("a", "b")
    release = threading.Event()
    real_delete = world.models.delete

    def slow_delete(path):
        assert release.wait(5.0)
        real_delete(path)

    monkeypatch.setattr(world.models, "delete", slow_delete)
    for c in ("a", "b"):
        world.coordinator.submit_update(submission(c, 1, delta(1.0)))  # returns while held

    assert world.coordinator.poll_task("a").round_number == 2
    paths = [u.model_update_path for u in world.runs.list_updates("r", 1)]
    assert all(p in world.models._blobs for p in paths)
    release.set()
    world.coordinator.wait_for_housekeeping(5.0)
    assert not any(p in world.models._blobs for p in paths)
