"""The privacy ledger, and clients that ran out of privacy budget.

Written by hand to match ``fedlearn.persistence.tables``; a unit test checks
that autogenerate finds no difference.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        batch.add_column(
            sa.Column("budget_exhausted", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.create_table(
        "privacy_ledger",
        sa.Column("run_id", sa.String(100), nullable=False),
        sa.Column("client_id", sa.String(100), nullable=False),
        sa.Column("epsilon_spent", sa.Double(), nullable=False),
        sa.Column("epsilon_budget", sa.Double(), nullable=False),
        sa.Column("delta", sa.Double(), nullable=False),
        sa.Column("exhausted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "client_id", name=op.f("pk_privacy_ledger")),
        sa.ForeignKeyConstraint(
            ["run_id", "client_id"],
            ["clients.run_id", "clients.client_id"],
            name=op.f("fk_privacy_ledger_run_id_clients"),
        ),
    )


def downgrade() -> None:
    op.drop_table("privacy_ledger")
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("budget_exhausted")
