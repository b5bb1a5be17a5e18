"""Jobs: multipart uploads, jobs and the chunk ledger.

Revision ID: 0002_jobs
Revises: 0001_accounts
Create Date: 2026-11-21
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0002_jobs"
down_revision = "0001_accounts"
branch_labels = None
depends_on = None


def _when(name: str, nullable: bool = True) -> sa.Column[dt.datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _owner() -> sa.Column[int]:
    return sa.Column("owner_key_id", sa.Integer(), sa.ForeignKey("api_keys.id"), nullable=True)


def upgrade() -> None:
    op.create_table(
        "uploads",
        sa.Column("id", sa.String(32), primary_key=True),
        _owner(),
        sa.Column("upload_id", sa.String(64), nullable=False),
        sa.Column("surface", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        _when("created_at", nullable=False),
        _when("expires_at", nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("blob_key", sa.String(512), nullable=True),
    )
    op.create_index("ix_uploads_owner_key_id", "uploads", ["owner_key_id"])
    op.create_table(
        "upload_parts",
        sa.Column(
            "upload_id",
            sa.String(32),
            sa.ForeignKey("uploads.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("part_number", sa.Integer(), primary_key=True),
        sa.Column("etag", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("blob_key", sa.String(512), nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        _owner(),
        sa.Column("surface", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("error_code", sa.String(32), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("input_key", sa.String(512), nullable=True),
        sa.Column("total_lines", sa.Integer(), nullable=False),
        sa.Column("completed_lines", sa.Integer(), nullable=False),
        sa.Column("failed_lines", sa.Integer(), nullable=False),
        sa.Column("images", sa.BigInteger(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("chunk_lines", sa.Integer(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("callback_url", sa.Text(), nullable=True),
        sa.Column("retention_days", sa.Integer(), nullable=False),
        _when("created_at", nullable=False),
        _when("completed_at"),
        _when("expires_at"),
    )
    op.create_index("ix_jobs_owner_key_id", "jobs", ["owner_key_id"])
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_table(
        "job_chunks",
        sa.Column(
            "job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("index", sa.Integer(), primary_key=True),
        sa.Column("first_line", sa.Integer(), nullable=False),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.Column("ok_lines", sa.Integer(), nullable=False),
        sa.Column("failed_lines", sa.Integer(), nullable=False),
        sa.Column("images", sa.BigInteger(), nullable=False),
        sa.Column("result_key", sa.String(512), nullable=False),
        _when("completed_at", nullable=False),
    )


def downgrade() -> None:
    op.drop_table("job_chunks")
    op.drop_index("ix_jobs_state", table_name="jobs")
    op.drop_index("ix_jobs_owner_key_id", table_name="jobs")
    op.drop_table("jobs")
    op.drop_table("upload_parts")
    op.drop_index("ix_uploads_owner_key_id", table_name="uploads")
    op.drop_table("uploads")
