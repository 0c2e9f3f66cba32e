"""Plain data shared by every layer: frozen, slotted dataclasses, numpy weights."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "CentralPrivacyState",
    "ClusterEvent",
    "ClusterEventKind",
    "round_lease_name",
    "ClientCapabilities",
    "ClientRecord",
    "ComputePowerLevel",
    "EvalResult",
    "Lease",
    "PrivacyConfig",
    "PrivacySpend",
    "RejectionRecord",
    "RoundConfig",
    "RoundRecord",
    "RoundStatus",
    "RoundTimings",
    "RunRecord",
    "TensorSpec",
    "UpdateRecord",
    "Weights",
]

Weights = Mapping[str, npt.NDArray[np.generic]]
"""A model's parameters by name, in the model's own order."""


class ComputePowerLevel(enum.Enum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


@dataclass(frozen=True, slots=True)
class Lease:
    """A time-limited, exclusive right to act for ``name`` (a round, say), held by ``holder``.

    ``token`` is the lease's fencing token: every successful acquisition of a name gets
    a larger one than all before it, so storage can refuse a write that carries a
    token older than the newest issued. ``expires_at`` is the expiry in seconds since
    the epoch by the lease store's clock (for Redis, the server's), for information:
    the store alone decides whether a lease is still held.
    """

    name: str
    holder: str
    _: KW_ONLY
    token: int
    expires_at: float


class ClusterEventKind(enum.Enum):
    ROUND = "round"
    """A round opened, completed or failed: reread the run from the database."""
    UPDATE = "update"
    """A replica stored an accepted update (``update_id``) of ``round_number``."""
    CLIENT = "client"
    """A client registered: a round may open."""


@dataclass(frozen=True, slots=True)
class ClusterEvent:
    """What one replica of a coordinator cluster tells the others (pub/sub)."""

    kind: ClusterEventKind
    run_id: str
    replica: str
    """The replica that published it (which ignores its own events)."""
    round_number: int = 0
    update_id: str = ""


def round_lease_name(run_id: str, round_number: int) -> str:
    """The name of the lease whose holder leads a round of a run (a coordinator cluster)."""
    return f"{run_id}/round/{round_number}"


@dataclass(frozen=True, slots=True)
class PrivacyConfig:
    """A client's differential-privacy settings (the design's ``PrivacyConfig``)."""

    epsilon: float = 0.0
    delta: float = 0.0
    max_grad_norm: float = 0.0
    noise_multiplier: float = 0.0


@dataclass(frozen=True, slots=True)
class PrivacySpend:
    """One client's line of a run's privacy ledger, as the coordinator keeps it.

    ``epsilon_spent`` is the latest claim the client made with an accepted update
    (at ``delta``); ``epsilon_budget`` the budget it registered (0: none);
    ``exhausted`` is set once the client said it cannot train within its budget,
    after which it is no longer selected.
    """

    run_id: str
    client_id: str
    epsilon_spent: float = 0.0
    epsilon_budget: float = 0.0
    delta: float = 0.0
    exhausted: bool = False
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class CentralPrivacyState:
    """A run's central (user-level) DP accountant, as the coordinator persists it.

    ``accountant`` is the accountant's ``state_dict()`` (plain JSON values);
    ``last_round`` the highest round whose noised aggregate it has charged (0: none),
    so a close redone after a restart is not charged twice; ``pending_round`` and
    ``pending_sample_rate`` the round opened last and the sample rate it will be
    charged at when it closes. ``epsilon_spent`` (at ``delta``) is derived from the
    accountant, stored so that readers need not redo the RDP math.
    """

    run_id: str
    accountant: Mapping[str, Any] = field(default_factory=dict)
    last_round: int = 0
    pending_round: int = 0
    pending_sample_rate: float = 0.0
    epsilon_spent: float = 0.0
    delta: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class ClientCapabilities:
    """What a client says about itself when it registers."""

    compute_power: ComputePowerLevel = ComputePowerLevel.MEDIUM
    network_bandwidth_mbps: int = 0
    available_samples: int = 0
    supported_models: tuple[str, ...] = ()
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    budget_exhausted: bool = False
    """The client cannot train another round within its privacy budget."""
    codecs: tuple[str, ...] = ()
    """Update codecs the client can encode (``fedlearn.core.codecs`` names)."""


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """Name, shape and dtype of one tensor of a model."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True, slots=True)
class RoundConfig:
    """What a selected client is asked to do in one round."""

    local_epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.05
    codec: str = "raw"
    """How the update is encoded: ``raw`` or a ``fedlearn.core.codecs`` name."""


@dataclass(frozen=True, slots=True)
class EvalResult:
    """Accuracy (a fraction) and mean loss of a model on some samples."""

    accuracy: float
    loss: float
    samples: int


class RoundStatus(enum.Enum):
    OPEN = "open"
    COMPLETED = "completed"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    """Completed, then undone by a rollback: its model is no longer in the lineage."""


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One federated training run: a model trained over numbered rounds."""

    run_id: str
    model_name: str
    created_at: float


@dataclass(frozen=True, slots=True)
class ClientRecord:
    client_id: str
    run_id: str
    capabilities: ClientCapabilities
    registered_at: float
    last_seen_at: float


@dataclass(frozen=True, slots=True)
class RoundTimings:
    """Where a round's coordinator time went, in seconds summed over its updates.

    Uploads and downloads of different clients overlap, so the sums can exceed
    the round's wall time; divided by the number of updates they give the cost
    of one. ``close`` is not a sum: it is the one-off finalisation (mean of the
    running sum, strategy step, storing the new global model).
    """

    download: float = 0.0
    """Streaming the global model to clients."""
    upload: float = 0.0
    """Receiving update chunks, reassembly and the SHA-256 check."""
    validate: float = 0.0
    """Decoding and validating updates (shapes, finiteness, norm)."""
    persist: float = 0.0
    """Writing update blobs and rows (durable before the acknowledgement)."""
    aggregate: float = 0.0
    """Folding updates into the streaming weighted sum."""
    close: float = 0.0

    def plus(self, **seconds: float) -> RoundTimings:
        """These timings with ``seconds`` added to the named phases."""
        return replace(self, **{k: getattr(self, k) + v for k, v in seconds.items()})


@dataclass(frozen=True, slots=True)
class RoundRecord:
    """A training round as stored; metrics are ``None`` until the round completes."""

    run_id: str
    round_number: int
    status: RoundStatus
    selected_clients: tuple[str, ...]
    config: RoundConfig
    started_at: float
    deadline_at: float
    base_model_path: str | None = None
    global_model_path: str | None = None
    server_state_path: str | None = None
    participating_clients: int = 0
    completed_at: float | None = None
    accuracy: float | None = None
    loss: float | None = None
    client_eval_accuracy: float | None = None
    client_eval_loss: float | None = None
    training_loss: float | None = None
    update_norm: float | None = None
    model_delta_norm: float | None = None
    convergence_score: float | None = None
    bytes_up: int = 0
    raw_bytes_up: int = 0
    """What ``bytes_up`` would have been uncompressed (float32 updates)."""
    bytes_down: int = 0
    failure_reason: str | None = None
    timings: RoundTimings = field(default_factory=RoundTimings)


@dataclass(frozen=True, slots=True)
class UpdateRecord:
    """One accepted client update as stored."""

    run_id: str
    update_id: str
    client_id: str
    round_number: int
    model_update_path: str | None
    num_samples: int
    training_loss: float
    submitted_at: float
    eval_accuracy: float | None = None
    eval_loss: float | None = None
    eval_samples: int = 0
    privacy_budget_used: float = 0.0
    compression_ratio: float = 1.0
    """Uncompressed (float32) update bytes over the payload's bytes."""
    codec: str = "raw"
    wire_bytes: int = 0
    update_norm: float = 0.0
    train_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class RejectionRecord:
    """One refused update submission, kept so a run can say why updates were lost.

    ``round_number`` is the round the update claimed, which need not exist;
    ``reason`` is a short code (``wrong_shape``, ``non_finite``, ``stale_round``,
    ``not_selected``, ``already_submitted``, ``uploading``, ``unknown_client``,
    ``norm_outlier``, ``malformed_payload`` ...) and ``message`` the human text.
    """

    run_id: str
    round_number: int
    client_id: str
    update_id: str
    reason: str
    message: str
    rejected_at: float
