"""Every conversion between domain dataclasses and protobuf messages.

Pairs are named ``x_to_proto`` / ``x_from_proto`` and are tested for round
trips; no other module builds or reads these messages field by field.
"""

from __future__ import annotations

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
from fedlearn.transport.pb.fedlearn.v1 import fedlearn_pb2 as pb

__all__ = [
    "ack_from_proto",
    "ack_to_proto",
    "capabilities_from_proto",
    "capabilities_to_proto",
    "registration_from_proto",
    "registration_to_proto",
    "rollback_from_proto",
    "rollback_to_proto",
    "status_from_proto",
    "status_to_proto",
    "submission_from_header",
    "submission_to_header",
    "task_from_proto",
    "task_to_proto",
]

_POWER = {
    ComputePowerLevel.LOW: pb.COMPUTE_POWER_LOW,
    ComputePowerLevel.MEDIUM: pb.COMPUTE_POWER_MEDIUM,
    ComputePowerLevel.HIGH: pb.COMPUTE_POWER_HIGH,
}
_POWER_BACK = {v: k for k, v in _POWER.items()}
_KIND = {
    TaskKind.TRAIN: pb.TaskResponse.KIND_TRAIN,
    TaskKind.WAIT: pb.TaskResponse.KIND_WAIT,
    TaskKind.FINISHED: pb.TaskResponse.KIND_FINISHED,
}
_KIND_BACK = {v: k for k, v in _KIND.items()}


def capabilities_to_proto(caps: ClientCapabilities) -> pb.ClientCapabilities:
    p = caps.privacy
    return pb.ClientCapabilities(
        compute_power=_POWER[caps.compute_power],
        network_bandwidth_mbps=caps.network_bandwidth_mbps,
        available_samples=caps.available_samples,
        supported_models=list(caps.supported_models),
        privacy_requirements=pb.PrivacyConfig(
            epsilon=p.epsilon,
            delta=p.delta,
            max_grad_norm=p.max_grad_norm,
            noise_multiplier=p.noise_multiplier,
        ),
        budget_exhausted=caps.budget_exhausted,
        codecs=list(caps.codecs),
    )


def capabilities_from_proto(msg: pb.ClientCapabilities) -> ClientCapabilities:
    p = msg.privacy_requirements
    return ClientCapabilities(
        compute_power=_POWER_BACK.get(msg.compute_power, ComputePowerLevel.MEDIUM),
        network_bandwidth_mbps=msg.network_bandwidth_mbps,
        available_samples=msg.available_samples,
        supported_models=tuple(msg.supported_models),
        privacy=PrivacyConfig(
            epsilon=p.epsilon,
            delta=p.delta,
            max_grad_norm=p.max_grad_norm,
            noise_multiplier=p.noise_multiplier,
        ),
        budget_exhausted=msg.budget_exhausted,
        codecs=tuple(msg.codecs),
    )


def registration_to_proto(reg: Registration) -> pb.RegistrationResponse:
    return pb.RegistrationResponse(
        client_id=reg.client_id, run_id=reg.run_id, model_name=reg.model_name
    )


def registration_from_proto(msg: pb.RegistrationResponse) -> Registration:
    return Registration(client_id=msg.client_id, run_id=msg.run_id, model_name=msg.model_name)


def _config_to_proto(cfg: RoundConfig) -> pb.RoundConfig:
    return pb.RoundConfig(
        local_epochs=cfg.local_epochs,
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        codec=cfg.codec,
    )


def task_to_proto(task: Task) -> pb.TaskResponse:
    msg = pb.TaskResponse(
        kind=_KIND[task.kind], round_number=task.round_number, deadline_unix=task.deadline_at
    )
    if task.config is not None:
        msg.config.CopyFrom(_config_to_proto(task.config))
    return msg


def task_from_proto(msg: pb.TaskResponse) -> Task:
    config = None
    if msg.HasField("config"):
        config = RoundConfig(
            local_epochs=msg.config.local_epochs,
            batch_size=msg.config.batch_size,
            learning_rate=msg.config.learning_rate,
            codec=msg.config.codec or "raw",
        )
    return Task(
        kind=_KIND_BACK.get(msg.kind, TaskKind.WAIT),
        round_number=msg.round_number,
        config=config,
        deadline_at=msg.deadline_unix,
    )


def submission_to_header(
    sub: UpdateSubmission, *, xxh3_128: str = "", sha256: str = ""
) -> pb.UpdateHeader:
    header = pb.UpdateHeader(
        client_id=sub.client_id,
        round_number=sub.round_number,
        update_id=sub.update_id,
        num_samples=sub.num_samples,
        training_loss=sub.training_loss,
        eval_samples=sub.eval_samples,
        train_seconds=sub.train_seconds,
        privacy_budget_used=sub.privacy_budget_used,
        total_bytes=len(sub.payload),
        sha256=sha256,
        xxh3_128=xxh3_128,
    )
    if sub.eval_accuracy is not None:
        header.eval_accuracy = sub.eval_accuracy
    if sub.eval_loss is not None:
        header.eval_loss = sub.eval_loss
    return header


def submission_from_header(
    header: pb.UpdateHeader, payload: bytes, *, wire_bytes: int, upload_seconds: float = 0.0
) -> UpdateSubmission:
    return UpdateSubmission(
        client_id=header.client_id,
        round_number=header.round_number,
        update_id=header.update_id,
        payload=payload,
        num_samples=header.num_samples,
        training_loss=header.training_loss,
        eval_accuracy=header.eval_accuracy if header.HasField("eval_accuracy") else None,
        eval_loss=header.eval_loss if header.HasField("eval_loss") else None,
        eval_samples=header.eval_samples,
        train_seconds=header.train_seconds,
        privacy_budget_used=header.privacy_budget_used,
        wire_bytes=wire_bytes,
        upload_seconds=upload_seconds,
    )


def ack_to_proto(ack: UpdateAck) -> pb.UpdateAck:
    return pb.UpdateAck(
        round_number=ack.round_number,
        duplicate=ack.duplicate,
        updates_received=ack.updates_received,
        updates_expected=ack.updates_expected,
    )


def ack_from_proto(msg: pb.UpdateAck) -> UpdateAck:
    return UpdateAck(
        round_number=msg.round_number,
        duplicate=msg.duplicate,
        updates_received=msg.updates_received,
        updates_expected=msg.updates_expected,
    )


_OPTIONAL_ROUND_FIELDS = (
    "accuracy",
    "loss",
    "client_eval_accuracy",
    "training_loss",
    "convergence_score",
)


def _round_to_proto(r: RoundSummary) -> pb.RoundSummary:
    msg = pb.RoundSummary(
        round_number=r.round_number,
        status=r.status,
        selected_clients=r.selected_clients,
        participating_clients=r.participating_clients,
        bytes_up=r.bytes_up,
        bytes_down=r.bytes_down,
        started_at=r.started_at,
        completed_at=r.completed_at or 0.0,
        failure_reason=r.failure_reason or "",
        global_model_path=r.global_model_path or "",
    )
    for name in _OPTIONAL_ROUND_FIELDS:
        value = getattr(r, name)
        if value is not None:
            setattr(msg, name, value)
    return msg


def _round_from_proto(msg: pb.RoundSummary) -> RoundSummary:
    optional = {n: getattr(msg, n) if msg.HasField(n) else None for n in _OPTIONAL_ROUND_FIELDS}
    return RoundSummary(
        round_number=msg.round_number,
        status=msg.status,
        selected_clients=msg.selected_clients,
        participating_clients=msg.participating_clients,
        bytes_up=msg.bytes_up,
        bytes_down=msg.bytes_down,
        started_at=msg.started_at,
        completed_at=msg.completed_at or None,
        failure_reason=msg.failure_reason or None,
        global_model_path=msg.global_model_path or None,
        **optional,
    )


def status_to_proto(status: TrainingStatus) -> pb.TrainingStatus:
    return pb.TrainingStatus(
        run_id=status.run_id,
        model_name=status.model_name,
        state=status.state.value,
        num_rounds=status.num_rounds,
        completed_rounds=status.completed_rounds,
        current_round=status.current_round,
        updates_received=status.updates_received,
        updates_expected=status.updates_expected,
        clients=[
            pb.ClientSummary(
                client_id=c.client_id,
                capabilities=capabilities_to_proto(c.capabilities),
                registered_at=c.registered_at,
                last_seen_at=c.last_seen_at,
            )
            for c in status.clients
        ],
        rounds=[_round_to_proto(r) for r in status.rounds],
        rejections=status.rejections,
        privacy=[
            pb.PrivacyLine(
                client_id=p.client_id,
                epsilon_spent=p.epsilon_spent,
                epsilon_budget=p.epsilon_budget,
                delta=p.delta,
                exhausted=p.exhausted,
            )
            for p in status.privacy
        ],
        central_privacy=_central_to_proto(status.central_privacy),
    )


def _central_to_proto(central: CentralPrivacyStatus | None) -> pb.CentralPrivacy | None:
    if central is None:
        return None
    return pb.CentralPrivacy(
        epsilon_spent=central.epsilon_spent,
        target_epsilon=central.target_epsilon,
        delta=central.delta,
        noise_multiplier=central.noise_multiplier,
        clip_norm=central.clip_norm,
        rounds_charged=central.rounds_charged,
        exhausted=central.exhausted,
    )


def _central_from_proto(msg: pb.TrainingStatus) -> CentralPrivacyStatus | None:
    if not msg.HasField("central_privacy"):
        return None
    c = msg.central_privacy
    return CentralPrivacyStatus(
        epsilon_spent=c.epsilon_spent,
        target_epsilon=c.target_epsilon if c.HasField("target_epsilon") else None,
        delta=c.delta,
        noise_multiplier=c.noise_multiplier,
        clip_norm=c.clip_norm,
        rounds_charged=c.rounds_charged,
        exhausted=c.exhausted,
    )


def status_from_proto(msg: pb.TrainingStatus) -> TrainingStatus:
    return TrainingStatus(
        run_id=msg.run_id,
        model_name=msg.model_name,
        state=RunState(msg.state),
        num_rounds=msg.num_rounds,
        completed_rounds=msg.completed_rounds,
        current_round=msg.current_round,
        updates_received=msg.updates_received,
        updates_expected=msg.updates_expected,
        clients=tuple(
            ClientRecord(
                client_id=c.client_id,
                run_id=msg.run_id,
                capabilities=capabilities_from_proto(c.capabilities),
                registered_at=c.registered_at,
                last_seen_at=c.last_seen_at,
            )
            for c in msg.clients
        ),
        rounds=tuple(_round_from_proto(r) for r in msg.rounds),
        rejections=dict(msg.rejections),
        privacy=tuple(
            PrivacySpend(
                run_id=msg.run_id,
                client_id=p.client_id,
                epsilon_spent=p.epsilon_spent,
                epsilon_budget=p.epsilon_budget,
                delta=p.delta,
                exhausted=p.exhausted,
            )
            for p in msg.privacy
        ),
        central_privacy=_central_from_proto(msg),
    )


def rollback_to_proto(outcome: RollbackOutcome) -> pb.RollbackResponse:
    return pb.RollbackResponse(
        restored_round=outcome.restored_round,
        rolled_back_rounds=outcome.rolled_back,
        reason=outcome.reason,
    )


def rollback_from_proto(msg: pb.RollbackResponse) -> RollbackOutcome:
    return RollbackOutcome(
        restored_round=msg.restored_round,
        rolled_back=tuple(msg.rolled_back_rounds),
        reason=msg.reason,
    )
