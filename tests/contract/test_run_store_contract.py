"""The ``RunStore`` contract, run against every backend (memory, SQLite, PostgreSQL).

Documented choices every backend shares: a client, round or rejection of an
unknown run, an update of an unknown round and ``save_round`` of a round never
created raise ``NotFoundError``; a rejection may name a round that does not
exist, and its message is truncated to 500 characters; ``list_clients`` is ordered by client id; ids longer
than 100 characters raise ``StorageError``.
"""

from __future__ import annotations

import math
import threading
from dataclasses import replace

import pytest

from fedlearn.core.types import (
    CentralPrivacyState,
    ClientCapabilities,
    ClientRecord,
    ComputePowerLevel,
    PrivacyConfig,
    PrivacySpend,
    RejectionRecord,
    RoundConfig,
    RoundRecord,
    RoundStatus,
    RoundTimings,
    RunRecord,
    UpdateRecord,
)
from fedlearn.errors import (
    ConflictError,
    FencedError,
    NotFoundError,
    StaleRoundError,
    StorageError,
)
from fedlearn.service.ports import RunStore

T0 = 1_732_886_400.123456789  # a float with more digits than a TIMESTAMP keeps


def make_run(run_id: str = "run-a") -> RunRecord:
    return RunRecord(run_id=run_id, model_name="cnn-mnist", created_at=T0)


def make_client(client_id: str = "c1", run_id: str = "run-a", **caps: object) -> ClientRecord:
    return ClientRecord(
        client_id=client_id,
        run_id=run_id,
        capabilities=ClientCapabilities(**caps),  # type: ignore[arg-type]
        registered_at=T0 + 1.5,
        last_seen_at=T0 + 2.25,
    )


def make_round(number: int = 1, run_id: str = "run-a", **fields: object) -> RoundRecord:
    base = RoundRecord(
        run_id=run_id,
        round_number=number,
        status=RoundStatus.OPEN,
        selected_clients=("c2", "c1"),
        config=RoundConfig(local_epochs=2, batch_size=64, learning_rate=0.01),
        started_at=T0 + number,
        deadline_at=T0 + number + 60.000001,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def make_update(update_id: str = "u1", number: int = 1, **fields: object) -> UpdateRecord:
    base = UpdateRecord(
        run_id="run-a",
        update_id=update_id,
        client_id="c1",
        round_number=number,
        model_update_path=f"run-a/rounds/{number:04d}/updates/{update_id}.flw",
        num_samples=600,
        training_loss=0.6931471805599453,
        submitted_at=T0 + 30.000007,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def make_rejection(
    reason: str = "wrong_shape", number: int = 1, **fields: object
) -> RejectionRecord:
    base = RejectionRecord(
        run_id="run-a",
        round_number=number,
        client_id="c1",
        update_id="u1",
        reason=reason,
        message=f"refused: {reason}",
        rejected_at=T0 + 40.000003,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


@pytest.fixture
def store(run_store: RunStore) -> RunStore:
    """A store holding run ``run-a`` and nothing else."""
    run_store.create_run(make_run())
    return run_store


# -- runs -------------------------------------------------------------------------


def test_get_run_returns_the_created_run(store: RunStore) -> None:
    assert store.get_run("run-a") == make_run()


def test_create_run_twice_raises_conflict_and_keeps_the_first(store: RunStore) -> None:
    with pytest.raises(ConflictError):
        store.create_run(replace(make_run(), model_name="other"))
    assert store.get_run("run-a") == make_run()


def test_unknown_keys_read_as_none_or_empty(store: RunStore) -> None:
    store.create_round(make_round(1))
    assert store.get_run("nope") is None
    assert store.get_client("run-a", "nope") is None
    assert store.get_client("nope", "c1") is None
    assert store.get_round("run-a", 2) is None
    assert store.get_round("nope", 1) is None
    assert store.latest_round("nope") is None
    assert store.get_update("run-a", "nope") is None
    assert list(store.list_clients("nope")) == []
    assert list(store.list_rounds("nope")) == []
    assert list(store.list_updates("run-a", 2)) == []
    assert list(store.list_updates("nope", 1)) == []


# -- clients ------------------------------------------------------------------------


def test_upsert_client_stores_every_capability(store: RunStore) -> None:
    client = make_client(
        compute_power=ComputePowerLevel.HIGH,
        network_bandwidth_mbps=250,
        available_samples=6000,
        supported_models=("cnn-mnist", "mlp"),
        privacy=PrivacyConfig(epsilon=3.5, delta=1e-5, max_grad_norm=1.25, noise_multiplier=0.9),
        budget_exhausted=True,
        codecs=("topk", "int8", "sign"),
    )
    store.upsert_client(client)
    assert store.get_client("run-a", "c1") == client


def test_save_privacy_inserts_then_replaces_a_clients_ledger_line(store: RunStore) -> None:
    store.upsert_client(make_client("c2"))
    store.upsert_client(make_client("c1"))
    first = PrivacySpend("run-a", "c2", 0.5, 3.0, 1e-5, False, T0 + 3)
    store.save_privacy(first)
    store.save_privacy(PrivacySpend("run-a", "c1", 0.25, 8.0, 1e-6, False, T0 + 4))
    later = replace(first, epsilon_spent=2.9999999999, exhausted=True, updated_at=T0 + 9)
    store.save_privacy(later)
    assert [p.client_id for p in store.list_privacy("run-a")] == ["c1", "c2"]
    assert store.list_privacy("run-a")[1] == later
    assert store.list_privacy("run-b") == []


def test_save_privacy_of_an_unregistered_client_raises_not_found(store: RunStore) -> None:
    with pytest.raises(NotFoundError):
        store.save_privacy(PrivacySpend("run-a", "nobody", 0.5, 3.0, 1e-5))
    assert store.list_privacy("run-a") == []


@pytest.mark.parametrize("bad", [math.nan, math.inf, -0.5])
def test_save_privacy_refuses_a_spend_that_is_not_a_finite_non_negative_number(
    store: RunStore, bad: float
) -> None:
    store.upsert_client(make_client("c1"))
    with pytest.raises(StorageError):
        store.save_privacy(PrivacySpend("run-a", "c1", bad, 3.0, 1e-5))


def test_central_privacy_is_none_until_saved_then_inserted_and_replaced(store: RunStore) -> None:
    assert store.get_central_privacy("run-a") is None
    history = [[0.7071067811865476, 1.0, 1], [0.7071067811865476, 1 / 3, 12]]
    first = CentralPrivacyState(
        "run-a",
        accountant={"mechanism": "rdp", "history": history[:1]},
        last_round=1,
        pending_round=1,
        pending_sample_rate=1.0,
        epsilon_spent=4.123456789012345,
        delta=1e-5,
        updated_at=T0 + 1,
    )
    store.save_central_privacy(first)
    assert store.get_central_privacy("run-a") == first
    later = replace(
        first,
        accountant={"mechanism": "rdp", "history": history},
        last_round=13,
        pending_round=14,
        pending_sample_rate=1 / 3,
        epsilon_spent=7.000000000000001,
        updated_at=T0 + 2,
    )
    store.save_central_privacy(later)
    assert store.get_central_privacy("run-a") == later  # floats exact, lists as lists
    assert store.get_central_privacy("run-b") is None


def test_central_privacy_of_an_unknown_run_raises_not_found(store: RunStore) -> None:
    with pytest.raises(NotFoundError):
        store.save_central_privacy(CentralPrivacyState("no-such-run", delta=1e-5))


@pytest.mark.parametrize(
    "bad",
    [
        {"epsilon_spent": math.nan},
        {"pending_sample_rate": -0.5},
        {"accountant": {"history": [[math.inf, 1.0, 1]]}},
        {"accountant": {"history": object()}},
    ],
)
def test_central_privacy_that_cannot_be_stored_exactly_raises_storage_error(
    store: RunStore, bad: dict[str, object]
) -> None:
    with pytest.raises(StorageError):
        store.save_central_privacy(replace(CentralPrivacyState("run-a"), **bad))  # type: ignore[arg-type]
    assert store.get_central_privacy("run-a") is None


def test_upsert_client_twice_replaces_capabilities_and_timestamps(store: RunStore) -> None:
    store.upsert_client(make_client(compute_power=ComputePowerLevel.LOW, available_samples=10))
    newer = replace(
        make_client(compute_power=ComputePowerLevel.HIGH, supported_models=("mlp",)),
        registered_at=T0 + 100,
        last_seen_at=T0 + 200,
    )
    store.upsert_client(newer)
    assert store.get_client("run-a", "c1") == newer
    assert list(store.list_clients("run-a")) == [newer]


def test_list_clients_returns_the_runs_clients_by_id(store: RunStore) -> None:
    store.create_run(make_run("run-b"))
    for client_id in ("c3", "c1", "c2"):
        store.upsert_client(make_client(client_id))
    store.upsert_client(make_client("c0", run_id="run-b"))
    assert [c.client_id for c in store.list_clients("run-a")] == ["c1", "c2", "c3"]
    assert [c.client_id for c in store.list_clients("run-b")] == ["c0"]


def test_list_clients_sorts_ids_by_code_point_whatever_the_database_locale(
    store: RunStore,
) -> None:
    ids = ["b", "B", "a_1", "a-2", "a10", "a9", "Z", "é"]
    for client_id in ids:
        store.upsert_client(make_client(client_id))
    assert [c.client_id for c in store.list_clients("run-a")] == sorted(ids)


def test_upsert_client_of_unknown_run_raises_not_found(store: RunStore) -> None:
    with pytest.raises(NotFoundError):
        store.upsert_client(make_client(run_id="nope"))


def test_ids_longer_than_100_characters_raise_storage_error(store: RunStore) -> None:
    with pytest.raises(StorageError):
        store.upsert_client(make_client("c" * 101))
    store.upsert_client(make_client("c" * 100))
    assert store.get_client("run-a", "c" * 100) is not None


# -- rounds -------------------------------------------------------------------------


def test_create_round_then_get_round_returns_it_with_none_metrics(store: RunStore) -> None:
    round_ = make_round(1)
    store.create_round(round_)
    got = store.get_round("run-a", 1)
    assert got == round_
    assert got is not None
    assert got.selected_clients == ("c2", "c1")
    assert isinstance(got.selected_clients, tuple)
    assert got.accuracy is None
    assert got.completed_at is None


def test_create_round_with_a_taken_number_raises_conflict_and_keeps_the_first(
    store: RunStore,
) -> None:
    store.create_round(make_round(1))
    with pytest.raises(ConflictError):
        store.create_round(make_round(1, selected_clients=("c9",)))
    assert store.get_round("run-a", 1) == make_round(1)


def test_round_numbers_are_scoped_per_run(store: RunStore) -> None:
    store.create_run(make_run("run-b"))
    store.create_round(make_round(1))
    store.create_round(make_round(1, run_id="run-b"))
    assert store.get_round("run-b", 1) == make_round(1, run_id="run-b")


def test_create_round_of_unknown_run_raises_not_found(store: RunStore) -> None:
    with pytest.raises(NotFoundError):
        store.create_round(make_round(1, run_id="nope"))


def test_save_round_round_trips_every_field(store: RunStore) -> None:
    store.create_round(make_round(3))
    completed = make_round(
        3,
        status=RoundStatus.COMPLETED,
        base_model_path="run-a/rounds/0002/global.flw",
        global_model_path="run-a/rounds/0003/global.flw",
        server_state_path="run-a/rounds/0003/server_state.flw",
        participating_clients=2,
        completed_at=T0 + 45.123457,
        accuracy=0.9871,
        loss=0.04123456789,
        client_eval_accuracy=0.9712345,
        client_eval_loss=0.0912345,
        training_loss=123.456789012,
        update_norm=1.5e-3,
        model_delta_norm=2.75e-4,
        convergence_score=0.000123456,
        bytes_up=7 * 2**40,
        bytes_down=3 * 2**33,
        failure_reason=None,
        timings=RoundTimings(
            download=1.25, upload=2.5e-3, validate=0.1, persist=3.0, aggregate=0.015625, close=7.0
        ),
    )
    store.save_round(completed)
    assert store.get_round("run-a", 3) == completed


def test_save_round_can_clear_metrics_and_record_a_failure(store: RunStore) -> None:
    store.create_round(make_round(1, accuracy=0.5, global_model_path="g.flw"))
    failed = make_round(1, status=RoundStatus.FAILED, failure_reason="too few updates: 1 < 2")
    store.save_round(failed)
    assert store.get_round("run-a", 1) == failed


def test_a_completed_round_can_be_marked_rolled_back(store: RunStore) -> None:
    store.create_round(make_round(2))
    completed = make_round(2, status=RoundStatus.COMPLETED, global_model_path="g.flw")
    store.save_round(completed)
    undone = replace(
        completed, status=RoundStatus.ROLLED_BACK, failure_reason="rolled back to round 1"
    )
    store.save_round(undone)
    assert store.get_round("run-a", 2) == undone


def test_save_round_of_a_round_never_created_raises_not_found(store: RunStore) -> None:
    with pytest.raises(NotFoundError):
        store.save_round(make_round(7))
    assert store.get_round("run-a", 7) is None


def test_latest_round_is_the_highest_number_whatever_its_status(store: RunStore) -> None:
    store.create_run(make_run("run-b"))
    store.create_round(make_round(2, status=RoundStatus.FAILED))
    store.create_round(make_round(10, status=RoundStatus.OPEN))
    store.create_round(make_round(9, status=RoundStatus.COMPLETED))
    store.create_round(make_round(11, run_id="run-b"))
    assert store.latest_round("run-a") == make_round(10, status=RoundStatus.OPEN)


def test_list_rounds_orders_by_round_number(store: RunStore) -> None:
    store.create_run(make_run("run-b"))
    for number in (3, 1, 10, 2):
        store.create_round(make_round(number))
    store.create_round(make_round(4, run_id="run-b"))
    assert [r.round_number for r in store.list_rounds("run-a")] == [1, 2, 3, 10]
    assert store.list_rounds("run-a")[0] == make_round(1)


def test_nan_metrics_read_back_as_none_and_infinities_as_they_are(store: RunStore) -> None:
    nan, inf = float("nan"), float("inf")
    store.create_round(make_round(1))
    store.save_round(make_round(1, accuracy=nan, loss=inf, convergence_score=-inf))
    assert store.get_round("run-a", 1) == make_round(
        1, accuracy=None, loss=inf, convergence_score=-inf
    )


def test_nan_where_a_number_is_required_raises_storage_error(store: RunStore) -> None:
    nan = float("nan")
    with pytest.raises(StorageError):
        store.create_round(make_round(1, deadline_at=nan))
    with pytest.raises(StorageError):
        store.create_round(make_round(1, config=RoundConfig(learning_rate=nan)))
    store.create_round(make_round(1))
    with pytest.raises(StorageError):
        store.add_update(make_update(training_loss=nan))
    with pytest.raises(StorageError):
        store.upsert_client(make_client(privacy=PrivacyConfig(epsilon=nan)))
    assert store.get_update("run-a", "u1") is None
    assert store.get_client("run-a", "c1") is None


# -- updates --------------------------------------------------------------------------


def test_add_update_round_trips_every_field(store: RunStore) -> None:
    store.create_round(make_round(1))
    update = make_update(
        eval_accuracy=0.953125,
        eval_loss=0.1234567891,
        eval_samples=128,
        privacy_budget_used=0.3141,
        compression_ratio=4.0,
        wire_bytes=5 * 2**32,
        update_norm=3.21,
        train_seconds=12.345678,
    )
    store.add_update(update)
    assert store.get_update("run-a", "u1") == update


def test_add_update_with_defaults_and_no_blob_round_trips(store: RunStore) -> None:
    store.create_round(make_round(1))
    update = make_update(model_update_path=None)
    store.add_update(update)
    assert store.get_update("run-a", "u1") == update


def test_codecs_compression_ratios_and_raw_bytes_round_trip(store: RunStore) -> None:
    codec = "topk:0.01+int8:block=256,round=stochastic"
    config = RoundConfig(local_epochs=2, batch_size=64, learning_rate=0.01, codec=codec)
    store.create_round(make_round(1, config=config))
    assert store.get_round("run-a", 1) == make_round(1, config=config)
    compressed = make_update("u1", codec=codec, compression_ratio=187.53125, wire_bytes=2_169)
    raw = make_update("u2", client_id="c2", codec="raw", compression_ratio=0.99875)
    store.add_update(compressed)
    store.add_update(raw)
    completed = make_round(
        1,
        config=config,
        status=RoundStatus.COMPLETED,
        bytes_up=2_169 + 3 * 2**31,
        raw_bytes_up=6 * 2**31,
    )
    store.save_round(completed)

    assert store.get_update("run-a", "u1") == compressed
    assert store.list_updates("run-a", 1) == [compressed, raw]
    assert store.get_round("run-a", 1) == completed
    assert store.list_rounds("run-a") == [completed]


def test_add_update_with_a_taken_id_raises_conflict_and_keeps_the_first(store: RunStore) -> None:
    store.create_round(make_round(1))
    store.create_round(make_round(2))
    store.add_update(make_update("u1"))
    with pytest.raises(ConflictError):
        store.add_update(make_update("u1", number=2, client_id="c2", num_samples=1))
    assert store.get_update("run-a", "u1") == make_update("u1")
    assert list(store.list_updates("run-a", 2)) == []


def test_update_ids_are_scoped_per_run(store: RunStore) -> None:
    store.create_run(make_run("run-b"))
    store.create_round(make_round(1))
    store.create_round(make_round(1, run_id="run-b"))
    store.add_update(make_update("u1"))
    store.add_update(make_update("u1", run_id="run-b"))
    assert store.get_update("run-b", "u1") == make_update("u1", run_id="run-b")


def test_list_updates_returns_a_rounds_updates_in_insertion_order(store: RunStore) -> None:
    store.create_round(make_round(1))
    store.create_round(make_round(2))
    for update_id in ("zz", "aa", "mm"):
        store.add_update(make_update(update_id, client_id=f"client-{update_id}"))
    store.add_update(make_update("other-round", number=2))
    assert [u.update_id for u in store.list_updates("run-a", 1)] == ["zz", "aa", "mm"]
    assert list(store.list_updates("run-a", 2)) == [make_update("other-round", number=2)]


def test_add_update_for_a_round_that_does_not_exist_raises_not_found(store: RunStore) -> None:
    store.create_round(make_round(1))
    with pytest.raises(NotFoundError):
        store.add_update(make_update("u1", number=2))
    with pytest.raises(NotFoundError):
        store.add_update(make_update("u2", run_id="nope"))
    assert store.get_update("run-a", "u1") is None


# -- rejections -----------------------------------------------------------------------


def test_add_rejection_round_trips_every_field(store: RunStore) -> None:
    rejection = make_rejection(
        "norm_outlier", 3, client_id="c" * 100, update_id="u" * 100, message="é ünïcode"
    )
    store.add_rejection(rejection)
    assert list(store.list_rejections("run-a", 3)) == [rejection]


def test_rejections_may_name_rounds_that_do_not_exist(store: RunStore) -> None:
    store.add_rejection(make_rejection("stale_round", 0))
    store.add_rejection(make_rejection("stale_round", 99))
    assert store.get_round("run-a", 99) is None
    assert list(store.list_rejections("run-a", 99)) == [make_rejection("stale_round", 99)]


def test_list_rejections_returns_a_rounds_rejections_in_insertion_order(store: RunStore) -> None:
    store.create_run(make_run("run-b"))
    reasons = ["non_finite", "wrong_shape", "non_finite", "already_submitted"]
    for i, reason in enumerate(reasons):
        store.add_rejection(make_rejection(reason, update_id=f"u{i}"))
    store.add_rejection(make_rejection("stale_round", 2))
    store.add_rejection(make_rejection("unknown_client", run_id="run-b"))
    assert [r.reason for r in store.list_rejections("run-a", 1)] == reasons
    assert [r.update_id for r in store.list_rejections("run-a", 1)] == ["u0", "u1", "u2", "u3"]
    assert list(store.list_rejections("run-a", 5)) == []
    assert list(store.list_rejections("nope", 1)) == []


def test_count_rejections_counts_by_reason_per_round_or_per_run(store: RunStore) -> None:
    store.create_run(make_run("run-b"))
    for reason in ("non_finite", "non_finite", "wrong_shape"):
        store.add_rejection(make_rejection(reason, 1))
    store.add_rejection(make_rejection("non_finite", 2))
    store.add_rejection(make_rejection("stale_round", 2))
    store.add_rejection(make_rejection("non_finite", 1, run_id="run-b"))
    assert store.count_rejections("run-a", 1) == {"non_finite": 2, "wrong_shape": 1}
    assert store.count_rejections("run-a", 2) == {"non_finite": 1, "stale_round": 1}
    assert store.count_rejections("run-a") == {
        "non_finite": 3,
        "wrong_shape": 1,
        "stale_round": 1,
    }
    assert store.count_rejections("run-a", 7) == {}
    assert store.count_rejections("nope") == {}


def test_long_rejection_messages_are_truncated_to_500_characters(store: RunStore) -> None:
    store.add_rejection(make_rejection(message="x" * 5000))
    (stored,) = store.list_rejections("run-a", 1)
    assert len(stored.message) == 500
    assert stored.message.startswith("xxx")
    assert stored.message.endswith("...")


def test_add_rejection_of_unknown_run_raises_not_found(store: RunStore) -> None:
    with pytest.raises(NotFoundError):
        store.add_rejection(make_rejection(run_id="nope"))
    assert store.count_rejections("nope") == {}


def test_rejections_that_cannot_be_stored_raise_storage_error(store: RunStore) -> None:
    with pytest.raises(StorageError):
        store.add_rejection(make_rejection(client_id="c" * 101))
    with pytest.raises(StorageError):
        store.add_rejection(make_rejection(reason="r" * 65))
    with pytest.raises(StorageError):
        store.add_rejection(make_rejection(rejected_at=float("nan")))
    assert store.count_rejections("run-a") == {}


# -- threads --------------------------------------------------------------------------


def test_concurrent_writers_from_many_threads_all_succeed(store: RunStore) -> None:
    store.create_round(make_round(1))
    workers, per_worker = 8, 6
    errors: list[BaseException] = []
    start = threading.Barrier(workers)

    def work(worker: int) -> None:
        try:
            start.wait()
            for i in range(per_worker):
                store.upsert_client(make_client("shared", available_samples=worker))
                store.add_update(make_update(f"u{worker}-{i}", client_id=f"c{worker}-{i}"))
                # a read-then-write of the same round from every thread
                current = store.get_round("run-a", 1)
                assert current is not None
                store.save_round(replace(current, bytes_up=worker))
        except BaseException as exc:  # reported below with the thread's error
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(store.list_updates("run-a", 1)) == workers * per_worker
    assert [c.client_id for c in store.list_clients("run-a")] == ["shared"]


# -- cluster: fencing tokens, open-only updates, one update per client ----------------


def test_a_second_update_of_a_client_in_a_round_is_refused(store: RunStore) -> None:
    store.create_round(make_round(1))
    store.create_round(make_round(2))
    store.add_update(make_update("u1"))
    with pytest.raises(ConflictError) as refused:
        store.add_update(make_update("u2"))
    assert refused.value.reason == "already_submitted"
    store.add_update(make_update("u3", number=2))  # the next round takes it
    assert [u.update_id for u in store.list_updates("run-a", 1)] == ["u1"]


def test_add_update_only_if_open_refuses_a_closed_round(store: RunStore) -> None:
    store.create_round(make_round(1))
    store.add_update(make_update("u1"), only_if_open=True)
    store.save_round(make_round(1, status=RoundStatus.COMPLETED))
    with pytest.raises(StaleRoundError):
        store.add_update(make_update("u2", client_id="c2"), only_if_open=True)
    assert [u.update_id for u in store.list_updates("run-a", 1)] == ["u1"]


def test_claims_issue_tokens_that_count_up_per_round(store: RunStore) -> None:
    store.create_round(make_round(1))
    store.create_round(make_round(2))
    assert [store.claim_round("run-a", 1) for _ in range(3)] == [1, 2, 3]
    assert store.claim_round("run-a", 2) == 1
    with pytest.raises(NotFoundError):
        store.claim_round("run-a", 9)


def test_a_fenced_save_needs_the_newest_claim(store: RunStore) -> None:
    store.create_round(make_round(1))
    first = store.claim_round("run-a", 1)
    store.save_round(make_round(1, bytes_up=1), fence=first)
    second = store.claim_round("run-a", 1)  # another holder took the round over
    with pytest.raises(FencedError) as refused:
        store.save_round(make_round(1, status=RoundStatus.COMPLETED), fence=first)
    assert refused.value.token == first
    stored = store.get_round("run-a", 1)
    assert stored is not None
    assert (stored.status, stored.bytes_up) == (RoundStatus.OPEN, 1)
    store.save_round(make_round(1, status=RoundStatus.COMPLETED), fence=second)
    assert store.get_round("run-a", 1) == make_round(1, status=RoundStatus.COMPLETED)


def test_a_round_without_a_claim_refuses_every_fenced_save(store: RunStore) -> None:
    store.create_round(make_round(1))
    with pytest.raises(FencedError):
        store.save_round(make_round(1, bytes_up=5), fence=1)
    stored = store.get_round("run-a", 1)
    assert stored is not None and stored.bytes_up == 0


def test_an_unfenced_save_keeps_the_token(store: RunStore) -> None:
    store.create_round(make_round(1))
    token = store.claim_round("run-a", 1)
    store.save_round(make_round(1, bytes_up=9))  # the token column is not the record's
    store.save_round(make_round(1, bytes_up=10), fence=token)
    assert store.claim_round("run-a", 1) == token + 1


def test_concurrent_claims_get_distinct_tokens(store: RunStore) -> None:
    store.create_round(make_round(1))
    tokens: list[int] = []
    start = threading.Barrier(4)

    def claim() -> None:
        start.wait()
        for _ in range(5):
            tokens.append(store.claim_round("run-a", 1))

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(tokens) == list(range(1, 21))


def test_save_with_expected_updates_refuses_a_changed_round(store: RunStore) -> None:
    store.create_round(make_round(1))
    store.add_update(make_update("u1"))
    store.add_update(make_update("u2", client_id="c2"))
    closed = make_round(1, status=RoundStatus.COMPLETED)
    with pytest.raises(ConflictError) as refused:
        store.save_round(closed, expect_updates=["u1"])
    assert refused.value.reason == "updates_changed"
    with pytest.raises(ConflictError):
        store.save_round(closed, expect_updates=["u1", "u2", "u3"])
    stored = store.get_round("run-a", 1)
    assert stored is not None and stored.status is RoundStatus.OPEN
    store.save_round(closed, expect_updates=["u2", "u1"])
    assert store.get_round("run-a", 1) == closed


def test_updates_racing_a_fenced_close_are_either_counted_or_refused(store: RunStore) -> None:
    """Replicas store updates while the leader closes: none is both acknowledged and left out."""
    store.create_round(make_round(1, selected_clients=tuple(f"c{i}" for i in range(40))))
    token = store.claim_round("run-a", 1)
    stored: list[str] = []
    refused: list[str] = []
    start = threading.Barrier(5)

    def replica(worker: int) -> None:
        start.wait()
        for i in range(8):
            update_id = f"u{worker}-{i}"
            try:
                store.add_update(
                    make_update(update_id, client_id=f"c{worker * 8 + i}"), only_if_open=True
                )
                stored.append(update_id)
            except StaleRoundError:
                refused.append(update_id)

    def leader() -> None:
        start.wait()
        while True:
            seen = [u.update_id for u in store.list_updates("run-a", 1)]
            try:
                store.save_round(
                    make_round(1, status=RoundStatus.COMPLETED), fence=token, expect_updates=seen
                )
                counted.extend(seen)
                return
            except ConflictError as exc:
                assert exc.reason == "updates_changed"

    counted: list[str] = []
    threads = [threading.Thread(target=replica, args=(w,)) for w in range(4)]
    threads.append(threading.Thread(target=leader))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(counted) == sorted(stored)
    assert len(stored) + len(refused) == 32
