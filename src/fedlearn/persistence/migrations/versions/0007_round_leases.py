"""Coordinator cluster: each round's fencing token, and one update per client and round.

``training_rounds.lease_token`` holds the newest fencing token issued for the round
(each claim by a new round leader adds one); writes made under an older token are
refused. The unique
``(run_id, round_number, client_id)`` on ``client_updates`` lets replicas that accept
updates side by side rely on the database, not on one process's memory, to refuse a
second update from the same client in a round.

Written by hand to match ``fedlearn.persistence.tables``; a unit test checks
that autogenerate finds no difference.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("training_rounds") as batch:
        batch.add_column(sa.Column("lease_token", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("client_updates") as batch:
        batch.create_unique_constraint(
            "uq_client_updates_run_id_round_number_client_id",
            ["run_id", "round_number", "client_id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("client_updates") as batch:
        batch.drop_constraint("uq_client_updates_run_id_round_number_client_id", type_="unique")
    with op.batch_alter_table("training_rounds") as batch:
        batch.drop_column("lease_token")
