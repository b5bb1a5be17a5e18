"""Accounts: credits reserved for a request in flight, settled when it ends or at start-up.

Revision ID: 0006_reservations
Revises: 0005_job_endings
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_reservations"
down_revision = "0005_job_endings"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "credit_reservations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "key_id",
            sa.Integer(),
            sa.ForeignKey("api_keys.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_credit_reservations_created_at", "credit_reservations", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_credit_reservations_created_at", "credit_reservations")
    op.drop_table("credit_reservations")
