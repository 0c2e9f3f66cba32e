"""Round timings (where each round's coordinator time went, per phase) and the
``rolled_back`` round status.

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


_OLD_STATUSES = "status IN ('open', 'completed', 'failed')"
_NEW_STATUSES = "status IN ('open', 'completed', 'failed', 'rolled_back')"


def upgrade() -> None:
    with op.batch_alter_table("training_rounds") as batch:
        batch.add_column(sa.Column("timings", sa.JSON(), nullable=True))
        batch.drop_constraint("status", type_="check")
        batch.create_check_constraint("status", _NEW_STATUSES)


def downgrade() -> None:
    op.execute("UPDATE training_rounds SET status = 'failed' WHERE status = 'rolled_back'")
    with op.batch_alter_table("training_rounds") as batch:
        batch.drop_constraint("status", type_="check")
        batch.create_check_constraint("status", _OLD_STATUSES)
        batch.drop_column("timings")
