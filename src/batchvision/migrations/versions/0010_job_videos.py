"""Jobs and their chunks: how many videos their video lines analysed.

A video line's sampled frames are not counted as images (as on sync requests, a video is billed
`credits_per_video` whatever its frame count), so the ledger counts videos beside images.

Revision ID: 0010_job_videos
Revises: 0009_key_credentials
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_job_videos"
down_revision = "0009_key_credentials"
branch_labels = None
depends_on = None

_TABLES = ("jobs", "job_chunks")

# Plain ALTER TABLE statements, never batch mode: on SQLite a batch rebuild of `jobs` drops the
# old table, and with foreign keys on that deletes every job's chunk rows (ON DELETE CASCADE).


def upgrade() -> None:
    for table in _TABLES:
        op.add_column(
            table, sa.Column("videos", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    for table in _TABLES:
        op.execute(f"ALTER TABLE {table} DROP COLUMN videos")
