from dataclasses import replace

import numpy as np
import pytest
from service_world import World, delta, submission

from fedlearn.core.serialization import encode_weights
from fedlearn.errors import (
    ConflictError,
    NotFoundError,
    StaleRoundError,
    UpdateRejectedError,
)


def _snapshot(world: World):
    # evaluations record accuracy in the background: let them land first
    assert world.coordinator.wait_for_evaluations(5.0)
    return (
        {k: v.copy() for k, v in world.coordinator.global_weights().items()},
        world.runs.list_rounds("r"),
        world.runs.list_updates("r", 1),
        dict(world.models._blobs) if hasattr(world.models, "_blobs") else None,
    )


def _assert_unchanged(world: World, before) -> None:
    weights, rounds, updates, blobs = before
    for k, v in world.coordinator.global_weights().items():
        np.testing.assert_array_equal(v, weights[k])
    assert world.runs.list_rounds("r") == rounds
    assert world.runs.list_updates("r", 1) == updates
    if blobs is not None:
        assert set(world.models._blobs) == set(blobs)


@pytest.fixture
def open_world() -> World:
    world = World(min_clients=3)
    world.register("a", "b", "c")
    world.coordinator.submit_update(submission("c", 1, delta(0.5)))
    return world


@pytest.mark.parametrize(
    ("make", "error", "reason"),
    [
        (
            lambda: submission("a", 1, delta(1.0, shape_w=(3, 2))),
            UpdateRejectedError,
            "wrong_shape",
        ),
        (lambda: submission("a", 1, delta(float("nan"))), UpdateRejectedError, "non_finite"),
        (lambda: submission("a", 1, delta(float("inf"))), UpdateRejectedError, "non_finite"),
        (
            lambda: submission(
                "a", 1, {"w": np.zeros((2, 3), np.float64), "b": np.zeros(2, np.float32)}
            ),
            UpdateRejectedError,
            "wrong_dtype",
        ),
        (lambda: submission("a", 1, delta(1.0), samples=0), UpdateRejectedError, "bad_num_samples"),
        (lambda: submission("zed", 1, delta(1.0)), NotFoundError, None),
        (lambda: submission("a", 7, delta(1.0)), StaleRoundError, None),
        (lambda: submission("a", 0, delta(1.0)), StaleRoundError, None),
        (lambda: submission("c", 1, delta(1.0), update_id="c-again"), ConflictError, None),
    ],
    ids=[
        "shape",
        "nan",
        "inf",
        "dtype",
        "samples",
        "unknown-client",
        "future-round",
        "stale-round",
        "second-update",
    ],
)
def test_submit_rejects_bad_update_and_changes_nothing(open_world, make, error, reason):
    before = _snapshot(open_world)
    with pytest.raises(error) as info:
        open_world.coordinator.submit_update(make())
    if reason is not None:
        assert info.value.reason == reason
    _assert_unchanged(open_world, before)


def test_submit_rejects_truncated_payload(open_world):
    sub = submission("a", 1, delta(1.0))
    bad = replace(sub, payload=sub.payload[:-4])
    before = _snapshot(open_world)
    with pytest.raises(UpdateRejectedError):
        open_world.coordinator.submit_update(bad)
    _assert_unchanged(open_world, before)


def test_unselected_client_is_refused():
    world = World(min_clients=2, clients_per_round=2, seed=1)
    world.register("a", "b", "c", "d")
    selected = set(world.runs.get_round("r", 1).selected_clients)
    outsider = next(c for c in "abcd" if c not in selected)
    with pytest.raises(ConflictError, match="not selected"):
        world.coordinator.submit_update(submission(outsider, 1, delta(1.0)))
    assert world.runs.list_updates("r", 1) == []


def test_the_same_update_id_is_acknowledged_once(open_world):
    again = open_world.coordinator.submit_update(submission("c", 1, delta(0.5)))
    assert again.duplicate
    assert len(open_world.runs.list_updates("r", 1)) == 1


def test_stale_update_after_round_closed_changes_nothing(open_world):
    open_world.coordinator.submit_update(submission("a", 1, delta(1.0)))
    open_world.coordinator.submit_update(submission("b", 1, delta(1.0)))
    before = _snapshot(open_world)
    with pytest.raises(StaleRoundError):
        open_world.coordinator.submit_update(submission("a", 1, delta(9.0), update_id="late"))
    _assert_unchanged(open_world, before)


def test_unknown_client_cannot_poll_or_download(world):
    with pytest.raises(NotFoundError):
        world.coordinator.poll_task("ghost")
    with pytest.raises(NotFoundError):
        world.coordinator.get_global_model("ghost")


def test_download_of_a_round_that_is_not_open_is_refused(open_world):
    assert open_world.coordinator.get_global_model("a", 1).round_number == 0
    with pytest.raises(StaleRoundError):
        open_world.coordinator.get_global_model("a", 2)


def test_payload_from_another_model_is_rejected(open_world):
    other = encode_weights({"fc.weight": np.zeros((4, 4), np.float32)})
    sub = submission("a", 1, delta(1.0))
    bad = replace(sub, payload=other)
    with pytest.raises(UpdateRejectedError) as info:
        open_world.coordinator.submit_update(bad)
    assert info.value.reason == "wrong_tensors"


def test_bad_ids_are_refused_before_anything_is_stored(open_world):
    from fedlearn.errors import ConfigError

    before = _snapshot(open_world)
    with pytest.raises(ConfigError):
        open_world.coordinator.submit_update(submission("a", 1, delta(1.0), update_id="x" * 101))
    with pytest.raises(ConfigError):
        open_world.coordinator.register_client(
            "y" * 101, open_world.runs.list_clients("r")[0].capabilities
        )
    _assert_unchanged(open_world, before)


def test_a_failed_row_write_leaves_no_orphan_blob(open_world, monkeypatch):
    from fedlearn.errors import StorageError

    def broken(update, **options):
        raise StorageError("disk full")

    monkeypatch.setattr(open_world.runs, "add_update", broken)
    before = _snapshot(open_world)
    with pytest.raises(StorageError):
        open_world.coordinator.submit_update(submission("a", 1, delta(1.0)))
    _assert_unchanged(open_world, before)
    assert open_world.coordinator.poll_task("a").round_number == 1
