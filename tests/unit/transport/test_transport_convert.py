"""Round trips through every ``x_to_proto`` / ``x_from_proto`` pair, over the wire.

Each message is serialized to bytes and parsed back before conversion, so
field presence (``optional`` fields, sub-messages) is checked as gRPC sees it.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlearn.core.types import (
    ClientCapabilities,
    ClientRecord,
    ComputePowerLevel,
    PrivacyConfig,
    PrivacySpend,
    RoundConfig,
)
from fedlearn.service.messages import (
    CentralPrivacyStatus,
    Registration,
    RollbackOutcome,
    RoundSummary,
    RunState,
    Task,
    TaskKind,
    TrainingStatus,
    UpdateAck,
    UpdateSubmission,
)
from fedlearn.transport import convert
from fedlearn.transport.pb.fedlearn.v1 import fedlearn_pb2 as pb

U32 = st.integers(min_value=0, max_value=2**32 - 1)
U64 = st.integers(min_value=0, max_value=2**64 - 1)
DOUBLES = st.floats(allow_nan=False)  # NaN never equals itself; infinities are fine
TIMES = st.floats(min_value=1.0, max_value=4e9)  # 0.0 means "unset" for completed_at
TEXT = st.text(max_size=20)
OPTIONAL_DOUBLES = st.none() | DOUBLES


def _wire(msg):
    """``msg`` after a trip through its serialized form."""
    return type(msg).FromString(msg.SerializeToString())


privacy_configs = st.builds(
    PrivacyConfig,
    epsilon=DOUBLES,
    delta=DOUBLES,
    max_grad_norm=DOUBLES,
    noise_multiplier=DOUBLES,
)
capabilities = st.builds(
    ClientCapabilities,
    compute_power=st.sampled_from(ComputePowerLevel),
    network_bandwidth_mbps=U32,
    available_samples=U64,
    supported_models=st.lists(TEXT, max_size=4).map(tuple),
    privacy=privacy_configs,
)
round_configs = st.builds(RoundConfig, local_epochs=U32, batch_size=U32, learning_rate=DOUBLES)
tasks = st.builds(
    Task,
    kind=st.sampled_from(TaskKind),
    round_number=U32,
    config=st.none() | round_configs,
    deadline_at=DOUBLES,
)
submissions = st.builds(
    UpdateSubmission,
    client_id=TEXT,
    round_number=U32,
    update_id=TEXT,
    payload=st.binary(max_size=64),
    num_samples=U64,
    training_loss=DOUBLES,
    eval_accuracy=OPTIONAL_DOUBLES,
    eval_loss=OPTIONAL_DOUBLES,
    eval_samples=U64,
    train_seconds=DOUBLES,
    privacy_budget_used=DOUBLES,
    wire_bytes=U64,
)
acks = st.builds(
    UpdateAck,
    round_number=U32,
    duplicate=st.booleans(),
    updates_received=U32,
    updates_expected=U32,
)
round_summaries = st.builds(
    RoundSummary,
    round_number=U32,
    status=st.sampled_from(["open", "completed", "failed"]),
    selected_clients=U32,
    participating_clients=U32,
    accuracy=OPTIONAL_DOUBLES,
    loss=OPTIONAL_DOUBLES,
    client_eval_accuracy=OPTIONAL_DOUBLES,
    training_loss=OPTIONAL_DOUBLES,
    convergence_score=OPTIONAL_DOUBLES,
    bytes_up=U64,
    bytes_down=U64,
    started_at=DOUBLES,
    completed_at=st.none() | TIMES,
    failure_reason=st.none() | st.text(min_size=1, max_size=20),
    global_model_path=st.none() | st.text(min_size=1, max_size=20),
)


@st.composite
def statuses(draw: st.DrawFn) -> TrainingStatus:
    run_id = draw(TEXT)
    clients = draw(
        st.lists(
            st.builds(
                ClientRecord,
                client_id=TEXT,
                run_id=st.just(run_id),
                capabilities=capabilities,
                registered_at=DOUBLES,
                last_seen_at=DOUBLES,
            ),
            max_size=3,
        )
    )
    return TrainingStatus(
        run_id=run_id,
        model_name=draw(TEXT),
        state=draw(st.sampled_from(RunState)),
        num_rounds=draw(U32),
        completed_rounds=draw(U32),
        current_round=draw(U32),
        updates_received=draw(U32),
        updates_expected=draw(U32),
        clients=tuple(clients),
        rounds=tuple(draw(st.lists(round_summaries, max_size=4))),
    )


@given(capabilities)
def test_capabilities_survive_the_wire_with_privacy_and_compute_power(caps):
    msg = _wire(convert.capabilities_to_proto(caps))
    assert convert.capabilities_from_proto(msg) == caps


@pytest.mark.parametrize("level", list(ComputePowerLevel))
def test_every_compute_power_level_maps_to_a_distinct_enum_value(level):
    msg = convert.capabilities_to_proto(ClientCapabilities(compute_power=level))
    assert msg.compute_power != pb.COMPUTE_POWER_UNSPECIFIED
    assert pb.ComputePower.Name(msg.compute_power).endswith(level.name)


def test_unspecified_compute_power_reads_as_medium():
    caps = convert.capabilities_from_proto(pb.ClientCapabilities())
    assert caps.compute_power is ComputePowerLevel.MEDIUM
    assert caps.privacy == PrivacyConfig()


@given(st.builds(Registration, client_id=TEXT, run_id=TEXT, model_name=TEXT))
def test_registration_survives_the_wire(reg):
    assert convert.registration_from_proto(_wire(convert.registration_to_proto(reg))) == reg


@given(tasks)
def test_task_survives_the_wire_for_every_kind_with_and_without_config(task):
    msg = _wire(convert.task_to_proto(task))
    assert msg.HasField("config") is (task.config is not None)
    assert convert.task_from_proto(msg) == task


@pytest.mark.parametrize("kind", list(TaskKind))
@pytest.mark.parametrize("config", [None, RoundConfig(local_epochs=2, batch_size=16)])
def test_task_kind_and_config_presence_round_trip(kind, config):
    task = Task(kind, round_number=3, config=config, deadline_at=1_700_000_000.5)
    assert convert.task_from_proto(_wire(convert.task_to_proto(task))) == task


def test_task_with_unspecified_kind_reads_as_wait():
    assert convert.task_from_proto(pb.TaskResponse()).kind is TaskKind.WAIT


@given(submissions)
def test_submission_survives_header_and_payload(sub):
    sha = hashlib.sha256(sub.payload).hexdigest()
    header = _wire(convert.submission_to_header(sub, sha256=sha))
    assert header.total_bytes == len(sub.payload)
    assert header.sha256 == sha
    back = convert.submission_from_header(header, sub.payload, wire_bytes=sub.wire_bytes)
    assert back == sub


@pytest.mark.parametrize(
    ("eval_accuracy", "eval_loss"),
    [(None, None), (0.0, None), (None, 0.0), (0.0, 0.0), (0.75, 1.25)],
)
def test_submission_keeps_optional_eval_metrics_absent_or_present(eval_accuracy, eval_loss):
    sub = UpdateSubmission(
        client_id="c",
        round_number=1,
        update_id="u",
        payload=b"abc",
        num_samples=5,
        training_loss=0.5,
        eval_accuracy=eval_accuracy,
        eval_loss=eval_loss,
    )
    header = _wire(convert.submission_to_header(sub, sha256="x"))
    assert header.HasField("eval_accuracy") is (eval_accuracy is not None)
    assert header.HasField("eval_loss") is (eval_loss is not None)
    back = convert.submission_from_header(header, b"abc", wire_bytes=0)
    assert back.eval_accuracy == eval_accuracy and back.eval_loss == eval_loss


@given(acks)
def test_ack_survives_the_wire(ack):
    assert convert.ack_from_proto(_wire(convert.ack_to_proto(ack))) == ack


@settings(max_examples=50)
@given(statuses())
def test_status_survives_the_wire_with_rounds_and_clients(status):
    assert convert.status_from_proto(_wire(convert.status_to_proto(status))) == status


@pytest.mark.parametrize("value", [None, 0.0, 0.9])
def test_status_round_metrics_keep_none_apart_from_zero(value):
    summary = RoundSummary(
        round_number=1,
        status="completed",
        selected_clients=2,
        participating_clients=2,
        accuracy=value,
        loss=value,
        client_eval_accuracy=value,
        training_loss=value,
        convergence_score=value,
        completed_at=1_700_000_000.0,
        global_model_path="run/rounds/00001/global.flw",
    )
    status = TrainingStatus(
        run_id="r",
        model_name="cnn",
        state=RunState.TRAINING,
        num_rounds=3,
        completed_rounds=1,
        current_round=2,
        updates_received=0,
        updates_expected=2,
        clients=(ClientRecord("a", "r", ClientCapabilities(available_samples=7), 1.0, 2.0),),
        rounds=(summary,),
    )
    back = convert.status_from_proto(_wire(convert.status_to_proto(status)))
    assert back == status
    assert back.rounds[0].accuracy == value


def test_status_carries_the_privacy_ledger_and_capabilities_say_when_a_budget_is_spent():
    ledger = (
        PrivacySpend("r", "a", epsilon_spent=1.25, epsilon_budget=3.0, delta=1e-5),
        PrivacySpend("r", "b", epsilon_spent=3.0, epsilon_budget=3.0, delta=1e-5, exhausted=True),
    )
    status = TrainingStatus("r", "cnn", RunState.TRAINING, 3, 0, 1, 0, 2, (), (), privacy=ledger)
    assert convert.status_from_proto(_wire(convert.status_to_proto(status))) == status
    caps = ClientCapabilities(available_samples=3, budget_exhausted=True)
    back = convert.capabilities_from_proto(_wire(convert.capabilities_to_proto(caps)))
    assert back == caps


def test_status_carries_rejection_counts_by_reason():
    status = TrainingStatus(
        "r", "cnn", RunState.TRAINING, 3, 0, 1, 0, 2, (), (),
        rejections={"non_finite": 2, "deadline_missed": 5},
    )  # fmt: skip
    assert convert.status_from_proto(_wire(convert.status_to_proto(status))) == status


@pytest.mark.parametrize("target", [None, 0.0, 3.75])
@pytest.mark.parametrize("exhausted", [False, True])
def test_status_carries_central_dp_and_keeps_no_target_apart_from_zero(target, exhausted):
    central = CentralPrivacyStatus(
        epsilon_spent=2.5000000000000004,
        target_epsilon=target,
        delta=1e-5,
        noise_multiplier=1.1,
        clip_norm=0.75,
        rounds_charged=7,
        exhausted=exhausted,
    )
    status = TrainingStatus(
        "r", "cnn", RunState.FINISHED, 9, 7, 7, 0, 0, (), (), central_privacy=central
    )  # fmt: skip
    assert convert.status_from_proto(_wire(convert.status_to_proto(status))) == status
    without = TrainingStatus("r", "cnn", RunState.TRAINING, 3, 0, 1, 0, 2, (), ())
    assert convert.status_from_proto(_wire(convert.status_to_proto(without))) == without


@pytest.mark.parametrize("undone", [(), (2,), (2, 3, 4)])
def test_rollback_outcome_survives_the_wire(undone):
    outcome = RollbackOutcome(restored_round=1, rolled_back=undone, reason="operator: bad data")
    assert convert.rollback_from_proto(_wire(convert.rollback_to_proto(outcome))) == outcome


def test_status_of_open_round_reads_unset_strings_and_times_as_none():
    summary = RoundSummary(
        round_number=1, status="open", selected_clients=2, participating_clients=0
    )
    status = TrainingStatus("r", "cnn", RunState.TRAINING, 3, 0, 1, 0, 2, (), (summary,))
    back = convert.status_from_proto(_wire(convert.status_to_proto(status))).rounds[0]
    assert back.completed_at is None
    assert back.failure_reason is None
    assert back.global_model_path is None


def test_every_public_conversion_pair_is_covered_here():
    covered = {
        "capabilities",
        "registration",
        "task",
        "ack",
        "status",
        "rollback",
    }
    pairs = {n.removesuffix("_to_proto") for n in convert.__all__ if n.endswith("_to_proto")}
    assert pairs == covered, "a new x_to_proto/x_from_proto pair needs a round-trip test"
    assert {n for n in convert.__all__ if "header" in n} == {
        "submission_to_header",
        "submission_from_header",
    }
