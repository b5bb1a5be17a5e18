"""Jobs: the decided end of a job (written before its work files go), invalid lines per chunk.

Revision ID: 0005_job_endings
Revises: 0004_detect_results
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_job_endings"
down_revision = "0004_detect_results"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("end_state", sa.String(16), nullable=True))
    with op.batch_alter_table("job_chunks") as batch:
        batch.add_column(
            sa.Column("invalid_lines", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("job_chunks") as batch:
        batch.drop_column("invalid_lines")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("end_state")
