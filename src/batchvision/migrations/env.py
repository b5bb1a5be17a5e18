"""Alembic environment: batchvision passes its own connection; nothing is read from an ini file."""

from __future__ import annotations

from alembic import context

import batchvision.accounts.tables  # noqa: F401 - registers the accounts tables on Base
from batchvision.db import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
