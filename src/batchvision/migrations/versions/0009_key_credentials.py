"""API keys: OAuth client credentials and a pinned client certificate.

`oauth_secret_hash` (SHA-256 of the client secret, NULL for keys without client credentials;
the client id is derived from the key's public prefix) and `client_cert_sha256` (the SHA-256
fingerprint of the certificate a key's requests must present, NULL when none is pinned).

Revision ID: 0009_key_credentials
Revises: 0008_job_tokens
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_key_credentials"
down_revision = "0008_job_tokens"
branch_labels = None
depends_on = None

_COLUMNS = ("oauth_secret_hash", "client_cert_sha256")

# Plain ALTER TABLE statements, never batch mode: on SQLite a batch rebuild of `api_keys` drops
# the old table, and with foreign keys on that deletes every row that references a key.


def upgrade() -> None:
    for name in _COLUMNS:
        op.add_column("api_keys", sa.Column(name, sa.String(64), nullable=True))


def downgrade() -> None:
    for name in _COLUMNS:
        op.execute(f"ALTER TABLE api_keys DROP COLUMN {name}")
