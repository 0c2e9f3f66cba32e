"""Requests and answers of the coordinator's use cases (transport-neutral)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from fedlearn.core.central_dp import CentralDpConfig
from fedlearn.core.strategy import FedAvg, Strategy
from fedlearn.core.types import ClientRecord, PrivacySpend, RoundConfig, RoundRecord

__all__ = [
    "CentralPrivacyStatus",
    "CoordinatorConfig",
    "GlobalModelBlob",
    "Registration",
    "RollbackOutcome",
    "RoundSummary",
    "RunState",
    "Task",
    "TaskKind",
    "TrainingStatus",
    "UpdateAck",
    "UpdateSubmission",
]


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    """Everything the round engine needs to know about one run."""

    run_id: str = "default"
    model_name: str = "cnn"
    num_rounds: int = 10
    min_clients: int = 2
    clients_per_round: int | None = None
    fraction: float | None = None
    round_config: RoundConfig = field(default_factory=RoundConfig)
    lr_decay: float = 1.0
    round_timeout_s: float = 300.0
    seed: int = 0
    keep_updates: bool = False
    max_failed_rounds: int = 3
    strategy: Strategy = field(default_factory=FedAvg)
    max_norm_ratio: float | None = None
    """Reject an update whose norm exceeds this multiple of the median norm of the
    round's accepted updates (checked once 3 were accepted); ``None``: never."""
    max_accuracy_drop: float | None = None
    """Roll back a round whose test accuracy falls more than this below the last
    good round's; ``None``: only a non-finite evaluation loss counts as divergence."""
    max_rollbacks: int = 3
    """Rollbacks after divergence before the run is declared failed."""
    require_dp: bool = False
    """Refuse updates from clients without a DP budget or without an epsilon claim."""
    central_dp: CentralDpConfig | None = None
    """Central, user-level DP (DP-FedAvg): clip each update, noise the aggregate and
    account epsilon over rounds; ``None``: off. Needs a noise source."""
    download_codec: str | None = None
    """Send clients quantised deltas of the global model (see ``core.downstream``)."""


class TaskKind(enum.Enum):
    TRAIN = "train"
    WAIT = "wait"
    FINISHED = "finished"


@dataclass(frozen=True, slots=True)
class Task:
    """What a polling client should do next."""

    kind: TaskKind
    round_number: int = 0
    config: RoundConfig | None = None
    deadline_at: float = 0.0


@dataclass(frozen=True, slots=True)
class GlobalModelBlob:
    """A serialized global model; ``round_number`` is the round that produced it."""

    round_number: int
    payload: bytes
    sha256: str
    """SHA-256 of ``payload``."""
    base_sha256: str = ""
    """Set when ``payload`` is a delta: the identity of the model it applies to."""
    model_sha256: str = ""
    """Set for a delta: the SHA-256 of the full (``FLW1``) model it rebuilds."""


@dataclass(frozen=True, slots=True)
class Registration:
    """What a client learns when it registers."""

    client_id: str
    run_id: str
    model_name: str


@dataclass(frozen=True, slots=True)
class UpdateSubmission:
    """A client's trained delta (serialized) with its metrics."""

    client_id: str
    round_number: int
    update_id: str
    payload: bytes
    num_samples: int
    training_loss: float
    eval_accuracy: float | None = None
    eval_loss: float | None = None
    eval_samples: int = 0
    train_seconds: float = 0.0
    privacy_budget_used: float = 0.0
    wire_bytes: int = 0
    upload_seconds: float = 0.0
    """Time the transport spent receiving and checking the payload (0 in process)."""


@dataclass(frozen=True, slots=True)
class UpdateAck:
    round_number: int
    duplicate: bool
    updates_received: int
    updates_expected: int


class RunState(enum.Enum):
    WAITING_FOR_CLIENTS = "waiting_for_clients"
    TRAINING = "training"
    FINISHED = "finished"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class RoundSummary:
    """What a status report says about one round."""

    round_number: int
    status: str
    selected_clients: int
    participating_clients: int
    accuracy: float | None = None
    loss: float | None = None
    client_eval_accuracy: float | None = None
    training_loss: float | None = None
    convergence_score: float | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    started_at: float = 0.0
    completed_at: float | None = None
    failure_reason: str | None = None
    global_model_path: str | None = None

    @staticmethod
    def of(r: RoundRecord) -> RoundSummary:
        return RoundSummary(
            round_number=r.round_number,
            status=r.status.value,
            selected_clients=len(r.selected_clients),
            participating_clients=r.participating_clients,
            accuracy=r.accuracy,
            loss=r.loss,
            client_eval_accuracy=r.client_eval_accuracy,
            training_loss=r.training_loss,
            convergence_score=r.convergence_score,
            bytes_up=r.bytes_up,
            bytes_down=r.bytes_down,
            started_at=r.started_at,
            completed_at=r.completed_at,
            failure_reason=r.failure_reason,
            global_model_path=r.global_model_path,
        )


@dataclass(frozen=True, slots=True)
class CentralPrivacyStatus:
    """The run's central (user-level) DP: epsilon spent at ``delta`` over the
    ``rounds_charged`` noised rounds, the target (``None``: none), the mechanism's
    parameters, and whether the run ended because the next round would pass the target."""

    epsilon_spent: float
    target_epsilon: float | None
    delta: float
    noise_multiplier: float
    clip_norm: float
    rounds_charged: int
    exhausted: bool


@dataclass(frozen=True, slots=True)
class TrainingStatus:
    run_id: str
    model_name: str
    state: RunState
    num_rounds: int
    completed_rounds: int
    current_round: int
    updates_received: int
    updates_expected: int
    clients: tuple[ClientRecord, ...]
    rounds: tuple[RoundSummary, ...]
    rejections: dict[str, int] = field(default_factory=dict)
    """Refused update submissions of the whole run, by reason code."""
    privacy: tuple[PrivacySpend, ...] = ()
    """The privacy ledger (``updated_at`` is not sent over gRPC)."""
    central_privacy: CentralPrivacyStatus | None = None
    """The run's central DP, ``None`` when it is off."""


@dataclass(frozen=True, slots=True)
class RollbackOutcome:
    """What a rollback did: the round whose model is global again, the rounds undone."""

    restored_round: int
    rolled_back: tuple[int, ...]
    reason: str
