"""The central (user-level) DP accountant of each run.

Written by hand to match ``fedlearn.persistence.tables``; a unit test checks
that autogenerate finds no difference.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "central_privacy",
        sa.Column("run_id", sa.String(100), nullable=False),
        sa.Column("accountant", sa.JSON(), nullable=False),
        sa.Column("last_round", sa.Integer(), nullable=False),
        sa.Column("pending_round", sa.Integer(), nullable=False),
        sa.Column("pending_sample_rate", sa.Double(), nullable=False),
        sa.Column("epsilon_spent", sa.Double(), nullable=False),
        sa.Column("delta", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_central_privacy")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.run_id"], name=op.f("fk_central_privacy_run_id_runs")
        ),
    )


def downgrade() -> None:
    op.drop_table("central_privacy")
