"""Initial schema: runs, clients, training_rounds, client_updates.

Written by hand to match ``fedlearn.persistence.tables``; a unit test checks
that autogenerate finds no difference.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _id() -> sa.String:
    return sa.String(100)


def _path() -> sa.String:
    return sa.String(255)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("run_id", _id(), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_runs")),
    )
    op.create_table(
        "clients",
        sa.Column("run_id", _id(), nullable=False),
        sa.Column("client_id", _id(), nullable=False),
        sa.Column("compute_power", sa.String(16), nullable=False),
        sa.Column("network_bandwidth_mbps", sa.Integer(), nullable=False),
        sa.Column("available_samples", sa.Integer(), nullable=False),
        sa.Column("supported_models", sa.JSON(), nullable=False),
        sa.Column("privacy_epsilon", sa.Double(), nullable=False),
        sa.Column("privacy_delta", sa.Double(), nullable=False),
        sa.Column("privacy_max_grad_norm", sa.Double(), nullable=False),
        sa.Column("privacy_noise_multiplier", sa.Double(), nullable=False),
        sa.Column("registered_at", sa.Double(), nullable=False),
        sa.Column("last_seen_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "client_id", name=op.f("pk_clients")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], name=op.f("fk_clients_run_id_runs")),
        sa.CheckConstraint(
            "compute_power IN ('low', 'medium', 'high')", name=op.f("ck_clients_compute_power")
        ),
    )
    op.create_table(
        "training_rounds",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", _id(), nullable=False),
        sa.Column("round_number", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("selected_clients", sa.JSON(), nullable=False),
        sa.Column("local_epochs", sa.Integer(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("learning_rate", sa.Double(), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("deadline_at", sa.Double(), nullable=False),
        sa.Column("completed_at", sa.Double(), nullable=True),
        sa.Column("base_model_path", _path(), nullable=True),
        sa.Column("global_model_path", _path(), nullable=True),
        sa.Column("server_state_path", _path(), nullable=True),
        sa.Column("participating_clients", sa.Integer(), nullable=False),
        sa.Column("accuracy", sa.Double(), nullable=True),
        sa.Column("loss", sa.Double(), nullable=True),
        sa.Column("client_eval_accuracy", sa.Double(), nullable=True),
        sa.Column("client_eval_loss", sa.Double(), nullable=True),
        sa.Column("training_loss", sa.Double(), nullable=True),
        sa.Column("update_norm", sa.Double(), nullable=True),
        sa.Column("model_delta_norm", sa.Double(), nullable=True),
        sa.Column("convergence_score", sa.Double(), nullable=True),
        sa.Column("bytes_up", sa.BigInteger(), nullable=False),
        sa.Column("bytes_down", sa.BigInteger(), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_rounds")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.run_id"], name=op.f("fk_training_rounds_run_id_runs")
        ),
        sa.UniqueConstraint(
            "run_id", "round_number", name=op.f("uq_training_rounds_run_id_round_number")
        ),
        sa.CheckConstraint(
            "status IN ('open', 'completed', 'failed')", name=op.f("ck_training_rounds_status")
        ),
    )
    op.create_table(
        "client_updates",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", _id(), nullable=False),
        sa.Column("update_id", _id(), nullable=False),
        sa.Column("client_id", _id(), nullable=False),
        sa.Column("round_number", sa.Integer(), nullable=False),
        sa.Column("model_update_path", _path(), nullable=True),
        sa.Column("num_samples", sa.Integer(), nullable=False),
        sa.Column("training_loss", sa.Double(), nullable=False),
        sa.Column("submitted_at", sa.Double(), nullable=False),
        sa.Column("eval_accuracy", sa.Double(), nullable=True),
        sa.Column("eval_loss", sa.Double(), nullable=True),
        sa.Column("eval_samples", sa.Integer(), nullable=False),
        sa.Column("privacy_budget_used", sa.Double(), nullable=False),
        sa.Column("compression_ratio", sa.Double(), nullable=False),
        sa.Column("wire_bytes", sa.BigInteger(), nullable=False),
        sa.Column("update_norm", sa.Double(), nullable=False),
        sa.Column("train_seconds", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_client_updates")),
        sa.ForeignKeyConstraint(
            ["run_id", "round_number"],
            ["training_rounds.run_id", "training_rounds.round_number"],
            name=op.f("fk_client_updates_run_id_round_number_training_rounds"),
        ),
        sa.UniqueConstraint("run_id", "update_id", name=op.f("uq_client_updates_run_id_update_id")),
    )
    op.create_index(
        op.f("ix_client_updates_run_id_round_number"),
        "client_updates",
        ["run_id", "round_number"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_client_updates_run_id_round_number"), table_name="client_updates")
    op.drop_table("client_updates")
    op.drop_table("training_rounds")
    op.drop_table("clients")
    op.drop_table("runs")
