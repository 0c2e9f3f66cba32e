"""Update compression: clients' codecs, each update's codec, each round's codec and raw bytes.

Written by hand to match ``fedlearn.persistence.tables``; a unit test checks
that autogenerate finds no difference.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        batch.add_column(sa.Column("codecs", sa.JSON(), nullable=True))
    with op.batch_alter_table("client_updates") as batch:
        batch.add_column(sa.Column("codec", sa.String(200), server_default="raw", nullable=False))
    with op.batch_alter_table("training_rounds") as batch:
        batch.add_column(sa.Column("codec", sa.String(200), server_default="raw", nullable=False))
        batch.add_column(
            sa.Column("raw_bytes_up", sa.BigInteger(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("training_rounds") as batch:
        batch.drop_column("raw_bytes_up")
        batch.drop_column("codec")
    with op.batch_alter_table("client_updates") as batch:
        batch.drop_column("codec")
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("codecs")
