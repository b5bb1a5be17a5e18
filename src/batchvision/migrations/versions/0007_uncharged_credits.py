"""Jobs and usage: the credits a job's finished work cost beyond what its key had left.

Revision ID: 0007_uncharged_credits
Revises: 0006_reservations
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_uncharged_credits"
down_revision = "0006_reservations"
branch_labels = None
depends_on = None

_TABLES = ("jobs", "usage_days")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("uncharged_credits", sa.BigInteger(), nullable=False, server_default="0")
            )


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("uncharged_credits")
