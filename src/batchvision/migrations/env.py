"""Alembic environment: batchvision passes its own connection; nothing is read from an ini file."""

from __future__ import annotations

from alembic import context

# Importing the table modules registers every table on Base.metadata; the app lists every
# surface, and each surface's store imports its own tables.
import batchvision.accounts.tables
import batchvision.api.app
import batchvision.jobs.tables  # noqa: F401
from batchvision.core.db import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
