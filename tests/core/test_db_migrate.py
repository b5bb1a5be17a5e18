"""Processes migrating one empty SQLite file at the same moment (`batchvision serve` and its
`batchvision worker`s started together on one data dir): one creates the schema, the others
wait for its write lock, then find nothing to do. PostgreSQL's case is in
tests/accounts/test_postgres_store.py."""

from __future__ import annotations

from pathlib import Path

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from batchvision.core.db import make_engine
from batchvision.core.settings import Settings
from conftest import REPO
from together import run_released_together

# Alembic keeps its context in module globals, so concurrent migrations need processes. Each
# table created waits a little, so every process starts migrating while the first is still in
# its first revision (without a lock held across it, the others then create the same tables).
_MIGRATE_CHILD = """
import sys, time
from alembic.ddl.impl import DefaultImpl
from batchvision.core.db import make_engine, migrate
from batchvision.core.settings import Settings

create_table = DefaultImpl.create_table
def slow_create_table(self, table, **kw):
    result = create_table(self, table, **kw)
    time.sleep(0.05)
    return result
DefaultImpl.create_table = slow_create_table

engine = make_engine(Settings(data_dir=sys.argv[1]))
print("ready", flush=True)
sys.stdin.readline()
migrate(engine)
print("migrated", flush=True)
"""


def test_processes_starting_together_migrate_one_sqlite_file_once(tmp_path: Path) -> None:
    for returncode, out, err in run_released_together(_MIGRATE_CHILD, str(tmp_path), 3):
        assert returncode == 0 and out.strip() == "migrated", err[-3000:]

    engine = make_engine(Settings(data_dir=tmp_path))
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_heads()
            tables = set(inspect(connection).get_table_names())
    finally:
        engine.dispose()
    script = ScriptDirectory(str(REPO / "src" / "batchvision" / "migrations"))
    assert set(current) == set(script.get_heads())
    assert {"api_keys", "jobs", "chunk_leases"} <= tables
