"""The relational schema: runs, clients, training rounds, client updates and rejections.

The design's ``training_rounds`` and ``client_updates`` tables are kept column
for column, with three deliberate widenings (each explained where it happens):

- every table carries ``run_id``, so one database holds many runs; the design's
  ``FOREIGN KEY (round_number)`` becomes ``(run_id, round_number)``, which is
  what makes it a valid foreign key (``round_number`` alone is not unique);
- timestamps are epoch seconds in ``DOUBLE PRECISION`` columns, not
  ``TIMESTAMP``: the records hold float seconds and the coordinator compares
  them with its clock (``now < deadline_at``), so they must round-trip exactly,
  which a microsecond ``TIMESTAMP`` cannot promise;
- metrics are ``DOUBLE PRECISION`` instead of ``DECIMAL(p, s)``: a superset of
  the design's ranges (``DECIMAL(10,8)`` overflows for a training loss of 100,
  and ``DECIMAL(5,4)`` rounds an accuracy to four places), exact for the floats
  the records hold, and returned as ``float`` rather than ``Decimal``.

``migrations/versions`` builds exactly this schema; a unit test compares them.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "CentralPrivacyRow",
    "ClientRow",
    "ID_LENGTH",
    "NAME_LENGTH",
    "MESSAGE_LENGTH",
    "PATH_LENGTH",
    "PrivacyRow",
    "REASON_LENGTH",
    "RejectionRow",
    "RoundRow",
    "RunRow",
    "UpdateRow",
    "central_privacy",
    "clients",
    "client_updates",
    "metadata",
    "privacy_ledger",
    "rejected_updates",
    "runs",
    "training_rounds",
]

ID_LENGTH = 100
"""Longest run, client or update id (the design's ``client_id VARCHAR(100)``)."""
NAME_LENGTH = 200
"""Longest model name."""
PATH_LENGTH = 255
"""Longest model-store path (the design's ``VARCHAR(255)``)."""
REASON_LENGTH = 64
"""Longest rejection reason code."""
MESSAGE_LENGTH = 500
"""Longest stored rejection message; longer ones are truncated before storing."""

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Id = sa.String(ID_LENGTH)
Path = sa.String(PATH_LENGTH)
Seconds: sa.Double[float] = sa.Double()
"""Epoch seconds; see the module docstring for why not ``TIMESTAMP``."""
Metric: sa.Double[float] = sa.Double()
"""A float metric; see the module docstring for why not ``DECIMAL``."""


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


metadata = Base.metadata


class RunRow(Base):
    __tablename__ = "runs"

    run_id: Mapped[str] = mapped_column(Id, primary_key=True)
    model_name: Mapped[str] = mapped_column(sa.String(NAME_LENGTH))
    created_at: Mapped[float] = mapped_column(Seconds)


class ClientRow(Base):
    """A registered client; its capabilities are spread over plain columns."""

    __tablename__ = "clients"
    __table_args__ = (
        sa.CheckConstraint("compute_power IN ('low', 'medium', 'high')", name="compute_power"),
    )

    run_id: Mapped[str] = mapped_column(Id, sa.ForeignKey("runs.run_id"), primary_key=True)
    client_id: Mapped[str] = mapped_column(Id, primary_key=True)
    compute_power: Mapped[str] = mapped_column(sa.String(16))
    network_bandwidth_mbps: Mapped[int] = mapped_column(sa.Integer)
    available_samples: Mapped[int] = mapped_column(sa.Integer)
    supported_models: Mapped[list[str]] = mapped_column(sa.JSON)
    # update codecs the client can encode; added by migration 0006
    codecs: Mapped[list[str] | None] = mapped_column(sa.JSON)
    privacy_epsilon: Mapped[float] = mapped_column(Metric)
    privacy_delta: Mapped[float] = mapped_column(Metric)
    privacy_max_grad_norm: Mapped[float] = mapped_column(Metric)
    privacy_noise_multiplier: Mapped[float] = mapped_column(Metric)
    # added by migration 0004
    budget_exhausted: Mapped[bool] = mapped_column(sa.Boolean, server_default=sa.false())
    registered_at: Mapped[float] = mapped_column(Seconds)
    last_seen_at: Mapped[float] = mapped_column(Seconds)


class RoundRow(Base):
    """The design's ``training_rounds`` plus the round lifecycle and metrics."""

    __tablename__ = "training_rounds"
    __table_args__ = (
        sa.UniqueConstraint("run_id", "round_number"),
        sa.CheckConstraint(
            "status IN ('open', 'completed', 'failed', 'rolled_back')", name="status"
        ),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(Id, sa.ForeignKey("runs.run_id"))
    round_number: Mapped[int] = mapped_column(sa.Integer)
    status: Mapped[str] = mapped_column(sa.String(16))
    selected_clients: Mapped[list[str]] = mapped_column(sa.JSON)
    local_epochs: Mapped[int] = mapped_column(sa.Integer)
    batch_size: Mapped[int] = mapped_column(sa.Integer)
    learning_rate: Mapped[float] = mapped_column(sa.Double)
    # the round's update codec and uncompressed update bytes; added by migration 0006
    codec: Mapped[str] = mapped_column(sa.String(200), server_default="raw")
    started_at: Mapped[float] = mapped_column(Seconds)
    deadline_at: Mapped[float] = mapped_column(Seconds)
    completed_at: Mapped[float | None] = mapped_column(Seconds)
    base_model_path: Mapped[str | None] = mapped_column(Path)
    global_model_path: Mapped[str | None] = mapped_column(Path)
    server_state_path: Mapped[str | None] = mapped_column(Path)
    participating_clients: Mapped[int] = mapped_column(sa.Integer)
    accuracy: Mapped[float | None] = mapped_column(Metric)
    loss: Mapped[float | None] = mapped_column(Metric)
    client_eval_accuracy: Mapped[float | None] = mapped_column(Metric)
    client_eval_loss: Mapped[float | None] = mapped_column(Metric)
    training_loss: Mapped[float | None] = mapped_column(Metric)
    update_norm: Mapped[float | None] = mapped_column(Metric)
    model_delta_norm: Mapped[float | None] = mapped_column(Metric)
    convergence_score: Mapped[float | None] = mapped_column(Metric)
    bytes_up: Mapped[int] = mapped_column(sa.BigInteger)
    raw_bytes_up: Mapped[int] = mapped_column(sa.BigInteger, server_default="0")
    bytes_down: Mapped[int] = mapped_column(sa.BigInteger)
    failure_reason: Mapped[str | None] = mapped_column(sa.Text)
    # seconds per phase (RoundTimings as a JSON object); added by migration 0003
    timings: Mapped[dict[str, float] | None] = mapped_column(sa.JSON)
    # the fencing token of the round's lease that claimed it last; added by migration 0007
    lease_token: Mapped[int | None] = mapped_column(sa.BigInteger)


class UpdateRow(Base):
    """The design's ``client_updates`` plus the update's id and metrics."""

    __tablename__ = "client_updates"
    __table_args__ = (
        sa.UniqueConstraint("run_id", "update_id"),
        # one update per client and round; added by migration 0007
        sa.UniqueConstraint("run_id", "round_number", "client_id"),
        sa.ForeignKeyConstraint(
            ["run_id", "round_number"],
            ["training_rounds.run_id", "training_rounds.round_number"],
        ),
        sa.Index(None, "run_id", "round_number"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(Id)
    update_id: Mapped[str] = mapped_column(Id)
    client_id: Mapped[str] = mapped_column(Id)
    round_number: Mapped[int] = mapped_column(sa.Integer)
    model_update_path: Mapped[str | None] = mapped_column(Path)
    num_samples: Mapped[int] = mapped_column(sa.Integer)
    training_loss: Mapped[float] = mapped_column(Metric)
    submitted_at: Mapped[float] = mapped_column(Seconds)
    eval_accuracy: Mapped[float | None] = mapped_column(Metric)
    eval_loss: Mapped[float | None] = mapped_column(Metric)
    eval_samples: Mapped[int] = mapped_column(sa.Integer)
    privacy_budget_used: Mapped[float] = mapped_column(Metric)
    compression_ratio: Mapped[float] = mapped_column(Metric)
    codec: Mapped[str] = mapped_column(sa.String(200), server_default="raw")
    wire_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    update_norm: Mapped[float] = mapped_column(Metric)
    train_seconds: Mapped[float] = mapped_column(Metric)


class RejectionRow(Base):
    """An update the coordinator refused, with its reason code and message.

    ``round_number`` is the round the update claimed, so it has no foreign key
    to ``training_rounds`` (a stale or made-up round may not exist).
    """

    __tablename__ = "rejected_updates"
    __table_args__ = (sa.Index(None, "run_id", "round_number"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(Id, sa.ForeignKey("runs.run_id"))
    round_number: Mapped[int] = mapped_column(sa.Integer)
    client_id: Mapped[str] = mapped_column(Id)
    update_id: Mapped[str] = mapped_column(Id)
    reason: Mapped[str] = mapped_column(sa.String(REASON_LENGTH))
    message: Mapped[str] = mapped_column(sa.String(MESSAGE_LENGTH))
    rejected_at: Mapped[float] = mapped_column(Seconds)


class PrivacyRow(Base):
    """The privacy ledger: per run and client, the epsilon spent and the budget."""

    __tablename__ = "privacy_ledger"
    __table_args__ = (
        sa.ForeignKeyConstraint(["run_id", "client_id"], ["clients.run_id", "clients.client_id"]),
    )

    run_id: Mapped[str] = mapped_column(Id, primary_key=True)
    client_id: Mapped[str] = mapped_column(Id, primary_key=True)
    epsilon_spent: Mapped[float] = mapped_column(sa.Double)
    epsilon_budget: Mapped[float] = mapped_column(sa.Double)
    delta: Mapped[float] = mapped_column(sa.Double)
    exhausted: Mapped[bool] = mapped_column(sa.Boolean)
    updated_at: Mapped[float] = mapped_column(Seconds)


class CentralPrivacyRow(Base):
    """A run's central (user-level) DP accountant state; added by migration 0005."""

    __tablename__ = "central_privacy"

    run_id: Mapped[str] = mapped_column(Id, sa.ForeignKey("runs.run_id"), primary_key=True)
    # the accountant's state_dict(): {"mechanism": "rdp", "history": [[z, q, steps], ...]}
    accountant: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    last_round: Mapped[int] = mapped_column(sa.Integer)
    pending_round: Mapped[int] = mapped_column(sa.Integer)
    pending_sample_rate: Mapped[float] = mapped_column(sa.Double)
    epsilon_spent: Mapped[float] = mapped_column(sa.Double)
    delta: Mapped[float] = mapped_column(sa.Double)
    updated_at: Mapped[float] = mapped_column(Seconds)


def _table(row: type[Base]) -> sa.Table:
    table: Any = row.__table__
    assert isinstance(table, sa.Table)
    return table


runs = _table(RunRow)
clients = _table(ClientRow)
training_rounds = _table(RoundRow)
client_updates = _table(UpdateRow)
rejected_updates = _table(RejectionRow)
privacy_ledger = _table(PrivacyRow)
central_privacy = _table(CentralPrivacyRow)
