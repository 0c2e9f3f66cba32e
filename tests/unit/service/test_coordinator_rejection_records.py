"""Every refused update is stored with its reason code and counted in the status."""

import logging
import threading
from dataclasses import replace

import numpy as np
import pytest
from service_world import World, delta, submission

from fedlearn.core.serialization import encode_weights
from fedlearn.core.types import RejectionRecord
from fedlearn.errors import (
    ConflictError,
    FedLearnError,
    NotFoundError,
    StaleRoundError,
    StorageError,
    UpdateRejectedError,
)


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
        (
            lambda: submission("a", 1, delta(1.0), loss=float("inf")),
            UpdateRejectedError,
            "non_finite",
        ),
        (
            lambda: submission(
                "a", 1, {"w": np.zeros((2, 3), np.float64), "b": np.zeros(2, np.float32)}
            ),
            UpdateRejectedError,
            "wrong_dtype",
        ),
        (
            lambda: replace(
                submission("a", 1, delta(1.0)),
                payload=encode_weights({"x": np.zeros(3, np.float32)}),
            ),
            UpdateRejectedError,
            "wrong_tensors",
        ),
        (lambda: submission("a", 1, delta(1.0), samples=0), UpdateRejectedError, "bad_num_samples"),
        (
            lambda: replace(
                submission("a", 1, delta(1.0)), payload=encode_weights(delta(1.0))[:-4]
            ),
            UpdateRejectedError,
            "malformed_payload",
        ),
        (lambda: submission("zed", 1, delta(1.0)), NotFoundError, "unknown_client"),
        (lambda: submission("a", 7, delta(1.0)), StaleRoundError, "stale_round"),
        (lambda: submission("a", 0, delta(1.0)), StaleRoundError, "stale_round"),
        (
            lambda: submission("c", 1, delta(1.0), update_id="c-again"),
            ConflictError,
            "already_submitted",
        ),
        (
            lambda: submission("a", 1, delta(1.0), update_id="c-1"),
            ConflictError,
            "update_id_taken",
        ),
    ],
    ids=[
        "shape",
        "nan",
        "loss",
        "dtype",
        "tensors",
        "samples",
        "truncated",
        "unknown-client",
        "future-round",
        "past-round",
        "second-update",
        "taken-id",
    ],
)
def test_each_refused_update_is_stored_with_its_reason_and_counted(open_world, make, error, reason):
    sub = make()
    with pytest.raises(error) as info:
        open_world.coordinator.submit_update(sub)

    (stored,) = open_world.runs.list_rejections("r", sub.round_number)
    assert stored == RejectionRecord(
        run_id="r",
        round_number=sub.round_number,
        client_id=sub.client_id,
        update_id=sub.update_id,
        reason=reason,
        message=str(info.value),
        rejected_at=open_world.clock.t,
    )
    assert open_world.runs.count_rejections("r") == {reason: 1}
    assert open_world.coordinator.status().rejections == {reason: 1}


def test_unselected_client_is_recorded_as_not_selected():
    world = World(min_clients=2, clients_per_round=2, seed=1)
    world.register("a", "b", "c", "d")
    selected = set(world.runs.get_round("r", 1).selected_clients)
    outsider = next(c for c in "abcd" if c not in selected)
    with pytest.raises(ConflictError, match="not selected"):
        world.coordinator.submit_update(submission(outsider, 1, delta(1.0)))
    assert world.runs.count_rejections("r", 1) == {"not_selected": 1}
    assert [r.client_id for r in world.runs.list_rejections("r", 1)] == [outsider]


class _BlockingPut:
    """A model store ``put`` that waits until the test lets it finish."""

    def __init__(self, world: World) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self._put = world.models.put

    def __call__(self, key: str, data: bytes) -> str:
        self.entered.set()
        assert self.release.wait(5.0)
        return self._put(key, data)


def _upload_in_background(world: World, sub) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def upload() -> None:
        try:
            world.coordinator.submit_update(sub)
        except FedLearnError as exc:
            errors.append(exc)

    thread = threading.Thread(target=upload)
    thread.start()
    return thread, errors


def test_second_upload_while_the_first_is_in_flight_is_recorded_as_uploading(
    open_world, monkeypatch
):
    blocking = _BlockingPut(open_world)
    monkeypatch.setattr(open_world.models, "put", blocking)
    thread, errors = _upload_in_background(open_world, submission("a", 1, delta(1.0)))
    assert blocking.entered.wait(5.0)

    with pytest.raises(ConflictError, match="already uploading"):
        open_world.coordinator.submit_update(submission("a", 1, delta(2.0), update_id="a-twice"))
    blocking.release.set()
    thread.join(5.0)

    assert errors == []
    assert open_world.runs.count_rejections("r", 1) == {"uploading": 1}
    assert [u.update_id for u in open_world.runs.list_updates("r", 1)] == ["c-1", "a-1"]


def test_round_closed_during_the_upload_is_recorded_as_stale_round(open_world, monkeypatch):
    blocking = _BlockingPut(open_world)
    monkeypatch.setattr(open_world.models, "put", blocking)
    thread, errors = _upload_in_background(open_world, submission("a", 1, delta(1.0)))
    assert blocking.entered.wait(5.0)

    open_world.clock.t += 61.0
    open_world.coordinator.tick()  # 1 of 3 updates: the round fails
    blocking.release.set()
    thread.join(5.0)

    assert [type(e) for e in errors] == [StaleRoundError]
    *missed, stored = open_world.runs.list_rejections("r", 1)
    assert {(m.reason, m.client_id) for m in missed} == {
        ("deadline_missed", "a"),
        ("deadline_missed", "b"),
    }
    assert (stored.reason, stored.update_id) == ("stale_round", "a-1")
    assert "closed during the upload" in stored.message


def test_a_re_sent_update_is_acknowledged_and_not_counted_as_rejected(open_world):
    ack = open_world.coordinator.submit_update(submission("c", 1, delta(0.5)))
    assert ack.duplicate
    assert open_world.runs.count_rejections("r") == {}
    assert open_world.coordinator.status().rejections == {}


def test_status_counts_rejections_of_every_round_of_the_run(open_world):
    with pytest.raises(UpdateRejectedError):
        open_world.coordinator.submit_update(submission("a", 1, delta(float("nan"))))
    open_world.coordinator.submit_update(submission("a", 1, delta(1.0)))
    open_world.coordinator.submit_update(submission("b", 1, delta(1.0)))
    with pytest.raises(StaleRoundError):
        open_world.coordinator.submit_update(submission("a", 1, delta(1.0), update_id="late"))
    with pytest.raises(UpdateRejectedError):
        open_world.coordinator.submit_update(submission("a", 2, delta(float("inf"))))

    assert open_world.runs.count_rejections("r", 1) == {"non_finite": 1, "stale_round": 1}
    assert open_world.runs.count_rejections("r", 2) == {"non_finite": 1}
    assert open_world.coordinator.status().rejections == {"non_finite": 2, "stale_round": 1}


# -- norm outliers ---------------------------------------------------------------------


def _five_clients(**config) -> World:
    world = World(min_clients=5, **config)
    world.register("a", "b", "c", "d", "e")
    return world


def test_norm_outlier_is_rejected_once_three_updates_were_accepted():
    world = _five_clients(max_norm_ratio=10.0)
    for client, value in (("a", 1.0), ("b", 2.0), ("c", 1.5)):
        world.coordinator.submit_update(submission(client, 1, delta(value)))
    updates_before = world.runs.list_updates("r", 1)

    with pytest.raises(UpdateRejectedError) as info:
        world.coordinator.submit_update(submission("d", 1, delta(100.0)))

    assert info.value.reason == "norm_outlier"
    assert world.runs.list_updates("r", 1) == updates_before
    assert world.runs.count_rejections("r", 1) == {"norm_outlier": 1}
    assert not any("/updates/d-1" in key for key in world.models._blobs)
    # the refused client may still send a sensible update
    world.coordinator.submit_update(submission("d", 1, delta(1.0), update_id="d-retry"))
    assert len(world.runs.list_updates("r", 1)) == 4


def test_large_norm_is_accepted_before_three_updates_were_accepted():
    world = _five_clients(max_norm_ratio=10.0)
    for client in ("a", "b"):
        world.coordinator.submit_update(submission(client, 1, delta(1.0)))
    world.coordinator.submit_update(submission("c", 1, delta(100.0)))
    assert len(world.runs.list_updates("r", 1)) == 3
    assert world.runs.count_rejections("r") == {}


def test_large_norm_is_accepted_when_no_ratio_is_configured():
    world = _five_clients()
    for client in ("a", "b", "c"):
        world.coordinator.submit_update(submission(client, 1, delta(1.0)))
    world.coordinator.submit_update(submission("d", 1, delta(1000.0)))
    assert len(world.runs.list_updates("r", 1)) == 4
    assert world.runs.count_rejections("r") == {}


# -- a store that cannot record ------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: submission("a", 1, delta(float("nan"))), UpdateRejectedError),
        (lambda: submission("zed", 1, delta(1.0)), NotFoundError),
        (lambda: submission("a", 9, delta(1.0)), StaleRoundError),
        (lambda: submission("c", 1, delta(1.0), update_id="c-again"), ConflictError),
    ],
    ids=["invalid", "unknown-client", "stale", "second-update"],
)
def test_a_failing_add_rejection_does_not_mask_the_original_error(
    open_world, monkeypatch, caplog, make, error
):
    def broken(rejection):
        raise StorageError("disk full")

    monkeypatch.setattr(open_world.runs, "add_rejection", broken)
    with (
        caplog.at_level(logging.ERROR, logger="fedlearn.service.rejections"),
        pytest.raises(error) as info,
    ):
        open_world.coordinator.submit_update(make())
    assert not isinstance(info.value, StorageError)
    assert "could not record the rejection" in caplog.text
    assert "disk full" in caplog.text
    # the coordinator carries on
    open_world.coordinator.submit_update(submission("a", 1, delta(1.0)))
    assert len(open_world.runs.list_updates("r", 1)) == 2
