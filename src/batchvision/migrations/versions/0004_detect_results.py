"""Stored batch-detect responses (the table of a camera-trap compat surface's result store).

Revision ID: 0004_detect_results
Revises: 0003_job_delivery
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_detect_results"
down_revision = "0003_job_delivery"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "detect_results",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("owner_key_id", sa.Integer(), sa.ForeignKey("api_keys.id"), nullable=True),
        sa.Column("route", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("response", sa.Text(), nullable=False),
    )
    op.create_index("ix_detect_results_owner_key_id", "detect_results", ["owner_key_id"])
    op.create_index("ix_detect_results_expires_at", "detect_results", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_detect_results_expires_at", table_name="detect_results")
    op.drop_index("ix_detect_results_owner_key_id", table_name="detect_results")
    op.drop_table("detect_results")
