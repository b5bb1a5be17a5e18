"""Jobs: input and output tokens of vision-language calls; chunks: their credits and tokens.

`jobs.tokens` (always 0 so far: no line reported tokens) becomes `input_tokens`, beside a new
`output_tokens`; each chunk row records what its lines cost (`credits`: images and
vision-language calls) and the tokens they reported, so a chunk's bill is computed once, where
its lines ran, and the ledger says what it was.

Revision ID: 0008_job_tokens
Revises: 0007_uncharged_credits
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_job_tokens"
down_revision = "0007_uncharged_credits"
branch_labels = None
depends_on = None

_CHUNK_COLUMNS = ("credits", "input_tokens", "output_tokens")


def _counter(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), nullable=False, server_default="0")


# Plain ALTER TABLE statements, never batch mode: on SQLite a batch rebuild of `jobs` drops the
# old table, and with foreign keys on that deletes every job's chunk rows (ON DELETE CASCADE).
# SQLite has renamed and dropped columns in place since 3.25 / 3.35.


def upgrade() -> None:
    op.execute("ALTER TABLE jobs RENAME COLUMN tokens TO input_tokens")
    op.add_column("jobs", _counter("output_tokens"))
    for name in _CHUNK_COLUMNS:
        op.add_column("job_chunks", _counter(name))


def downgrade() -> None:
    for name in _CHUNK_COLUMNS:
        op.execute(f"ALTER TABLE job_chunks DROP COLUMN {name}")
    op.execute("ALTER TABLE jobs DROP COLUMN output_tokens")
    op.execute("ALTER TABLE jobs RENAME COLUMN input_tokens TO tokens")
