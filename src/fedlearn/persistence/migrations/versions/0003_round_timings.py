"""Round timings: where each round's coordinator time went, per phase.

Written by hand to match ``fedlearn.persistence.tables``; a unit test checks
that autogenerate finds no difference. Rounds stored before this revision read
back with zero timings.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("training_rounds") as batch:
        batch.add_column(sa.Column("timings", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("training_rounds") as batch:
        batch.drop_column("timings")
