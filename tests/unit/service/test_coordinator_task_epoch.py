"""``task_epoch`` moves exactly when a waiting client may be told something new."""

from service_world import World, delta, submission


def test_an_update_that_does_not_close_the_round_leaves_the_task_epoch_alone():
    world = World(min_clients=3, num_rounds=2)
    world.register("a", "b", "c")
    before = world.coordinator.task_epoch()
    world.coordinator.submit_update(submission("a", 1, delta(1.0)))
    assert world.coordinator.task_epoch() == before


def test_opening_closing_and_finishing_rounds_move_the_task_epoch():
    world = World(min_clients=2, num_rounds=1)
    world.register("a")
    waiting = world.coordinator.task_epoch()
    world.register("b")  # the second client opens round 1
    training = world.coordinator.task_epoch()
    assert training != waiting
    for name in ("a", "b"):
        world.coordinator.submit_update(submission(name, 1, delta(1.0)))
    assert world.coordinator.task_epoch() != training  # the run is over
