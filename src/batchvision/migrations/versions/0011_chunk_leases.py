"""Chunks handed to Celery workers (their leases), the leader of the job dispatcher, and
whether a job's result files are assembled (a late chunk is refused from then on).

Revision ID: 0011_chunk_leases
Revises: 0010_job_videos
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_chunk_leases"
down_revision = "0010_job_videos"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ALTER TABLE, never batch mode (see 0010): a rebuild of `jobs` would cascade.
    op.add_column(
        "jobs",
        sa.Column("outputs_assembled", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.execute("UPDATE jobs SET outputs_assembled = (output_files > 0)")
    op.create_table(
        "chunk_leases",
        sa.Column(
            "job_id",
            sa.String(32),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("index", sa.Integer(), primary_key=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("holder", sa.String(255), nullable=True),
    )
    op.create_index("ix_chunk_leases_expires_at", "chunk_leases", ["expires_at"])
    op.create_table(
        "leaders",
        sa.Column("role", sa.String(32), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.execute("ALTER TABLE jobs DROP COLUMN outputs_assembled")
    op.drop_table("leaders")
    op.drop_index("ix_chunk_leases_expires_at", table_name="chunk_leases")
    op.drop_table("chunk_leases")
