"""The accounts store on a real PostgreSQL server: migrations, KeyStore, credit exactness under
concurrency, and the real app over HTTP metering credits in PostgreSQL. No mocks."""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from psycopg import sql
from sqlalchemy import Engine, inspect, select, text

import batchvision.jobs.tables  # noqa: F401 - tables compared with the migrated schema
from batchvision.accounts.keys import AccountError, KeyStore, Usage
from batchvision.accounts.tables import UsageDay
from batchvision.core.db import Base, make_engine, migrate
from conftest import LiveServer, coco_image, make_settings
from pg_server import PgServer, running_postgres
from together import run_released_together

_databases = itertools.count()
ACTIVE = ("chunking", "processing")
SERVER_TIMEZONE = "Pacific/Auckland"  # UTC+12/+13: never equal to UTC


@pytest.fixture(scope="module")
def postgres() -> Iterator[PgServer]:
    """One throwaway cluster for the module; stopped and deleted afterwards."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def pg_url(postgres: PgServer) -> str:
    """A fresh, empty database per test. Its sessions' TimeZone is deliberately not UTC (as on
    many real servers), so code that assumes timestamps come back in UTC is caught."""
    name = f"bv_test_{next(_databases)}"
    url = postgres.create_database(name)
    with postgres.connect() as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET timezone TO {}").format(
                sql.Identifier(name), sql.Literal(SERVER_TIMEZONE)
            )
        )
    return url


@pytest.fixture
def engine(pg_url: str, tmp_path: Path) -> Iterator[Engine]:
    """make_engine + migrate on the test's fresh database, as `Accounts` does at start-up."""
    engine = make_engine(make_settings(tmp_path, database_url=pg_url))
    assert engine.dialect.name == "postgresql"
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> KeyStore:
    return KeyStore(engine)


# --- migrations -------------------------------------------------------------------------------

ALL_TABLES = {
    "alembic_version",
    "api_keys",
    "usage_days",
    "credit_reservations",
    "uploads",
    "upload_parts",
    "jobs",
    "job_chunks",
    "detect_results",
    "chunk_leases",
    "leaders",
}


def test_migrate_creates_schema_on_empty_database_and_is_idempotent(
    pg_url: str, tmp_path: Path
) -> None:
    engine = make_engine(make_settings(tmp_path, database_url=pg_url))
    try:
        assert inspect(engine).get_table_names() == []
        migrate(engine)
        inspector = inspect(engine)
        assert set(inspector.get_table_names()) == ALL_TABLES
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        columns = {c["name"]: c for c in inspector.get_columns("api_keys")}
        assert str(columns["credits"]["type"]) == "BIGINT"
        assert getattr(columns["created_at"]["type"], "timezone", False) is True
        assert inspector.get_pk_constraint("usage_days")["constrained_columns"] == ["key_id", "day"]
        [fk] = inspector.get_foreign_keys("usage_days")
        assert fk["referred_table"] == "api_keys"
        assert fk["options"].get("ondelete") == "CASCADE"

        migrate(engine)  # second run: nothing to do, nothing broken
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        assert versions == [("0011_chunk_leases",)]
        assert set(inspect(engine).get_table_names()) == ALL_TABLES
    finally:
        engine.dispose()


# Alembic keeps its context in module globals, so concurrent migrations need processes.
_MIGRATE_CHILD = """
import sys
from batchvision.core.db import make_engine, migrate
from batchvision.core.settings import Settings
engine = make_engine(Settings(database_url=sys.argv[1]))
print("ready", flush=True)
sys.stdin.readline()
migrate(engine)
print("migrated", flush=True)
"""


def test_servers_starting_together_migrate_once(pg_url: str) -> None:
    """Several processes migrating one empty database at the same moment (servers started
    together): one creates the schema, the others wait for it and find nothing to do."""
    for returncode, out, err in run_released_together(_MIGRATE_CHILD, pg_url, 4):
        assert returncode == 0 and out.strip() == "migrated", err[-3000:]


# --- KeyStore ---------------------------------------------------------------------------------


def test_key_round_trip(store: KeyStore) -> None:
    new = store.create("alice", credits=10, requests_per_minute=60, images_per_minute=600)
    info = new.info
    assert info.id > 0 and info.name == "alice" and info.credits == 10
    assert info.created_at.tzinfo is not None  # timestamptz comes back aware
    assert new.secret.startswith(f"bv_{info.prefix}_")

    found = store.authenticate(new.secret)
    assert found is not None and found.id == info.id and found.requests_per_minute == 60
    assert store.authenticate(new.secret[:-1] + ("A" if new.secret[-1] != "A" else "B")) is None
    assert store.authenticate("bv_nothex!_x") is None
    assert store.get(info.id) == found
    assert store.by_name("alice") == found

    admin = store.create("root@example.com", is_admin=True)  # unlimited
    assert admin.info.credits is None and admin.info.is_admin
    assert [k.name for k in store.all_keys()] == ["alice", "root@example.com"]

    with pytest.raises(AccountError, match="already exists"):
        store.create("alice")
    assert len(store.all_keys()) == 2  # the failed insert left nothing behind
    with pytest.raises(AccountError, match="no key named"):
        store.by_name("bob")

    assert store.add_credits("alice", 5).credits == 15
    assert store.add_credits("alice", -100).credits == 0  # never below zero
    assert store.add_credits("alice", 3).credits == 3
    with pytest.raises(AccountError):
        store.add_credits("bob", 1)

    revoked = store.revoke("alice")
    assert revoked.revoked_at is not None and not revoked.active
    assert store.revoke("alice").revoked_at == revoked.revoked_at  # idempotent
    assert store.authenticate(new.secret) is None
    assert store.reserve(info.id, 1) is None  # a revoked key cannot spend

    # Listings render UTC with a Z whatever the server's TimeZone (psycopg returns timestamptz
    # in the session's zone).
    body = revoked.to_dict()
    assert body["created_at"].endswith("Z") and body["revoked_at"].endswith("Z"), body
    created = dt.datetime.fromisoformat(body["created_at"])
    assert created == info.created_at
    assert abs(created - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)


def test_record_usage_upsert_accumulates_per_day(store: KeyStore, engine: Engine) -> None:
    key = store.create("metered", credits=100).info
    other = store.create("other", credits=100).info
    assert store.usage(key.id) == []

    store.record_usage(key.id, requests=1, images=3, credits=3)
    store.record_usage(key.id, requests=1, images=2, credits=2)  # ON CONFLICT DO UPDATE
    store.record_usage(other.id, requests=1, images=7, credits=7)

    [day] = store.usage(key.id)
    assert (day["requests"], day["images"], day["credits"]) == (2, 5, 5)
    [other_day] = store.usage(other.id)
    assert other_day["images"] == 7 and other_day["date"] == day["date"]
    with engine.connect() as conn:
        assert len(conn.execute(select(UsageDay)).all()) == 2  # one row per key and day


def test_record_usage_concurrent_first_inserts_merge(store: KeyStore) -> None:
    """Many first-of-the-day upserts racing: PostgreSQL's ON CONFLICT must merge them all."""
    key = store.create("racer").info
    barrier = threading.Barrier(16)

    def record(_: int) -> None:
        barrier.wait()
        store.record_usage(key.id, requests=1, images=2, credits=3)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(record, range(16)))
    [day] = store.usage(key.id)
    assert (day["requests"], day["images"], day["credits"]) == (16, 32, 48)


# --- credits under concurrency ----------------------------------------------------------------


def test_concurrent_reservations_never_overdraw(store: KeyStore) -> None:
    key = store.create("contended", credits=20).info
    threads = 50
    barrier = threading.Barrier(threads)

    def reserve(_: int) -> bool:
        barrier.wait()
        return store.reserve(key.id, 1) is not None

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(reserve, range(threads)))
    assert results.count(True) == 20
    assert results.count(False) == 30
    assert store.get(key.id).credits == 0  # type: ignore[union-attr]
    assert store.reserve(key.id, 1) is None

    store.refund(key.id, 20)
    assert store.get(key.id).credits == 20  # type: ignore[union-attr]
    assert store.reserve(key.id, 21) is None  # all or nothing
    assert store.reserve(key.id, 20) is not None
    assert store.get(key.id).credits == 0  # type: ignore[union-attr]


def test_unlimited_key_reserves_and_refund_is_a_no_op(store: KeyStore) -> None:
    key = store.create("unlimited").info
    assert store.reserve(key.id, 10**9) is not None
    store.refund(key.id, 5)
    assert store.get(key.id).credits is None  # type: ignore[union-attr]


def test_a_reservation_settles_once_and_start_up_refunds_the_abandoned(store: KeyStore) -> None:
    """On PostgreSQL too: settling deletes the reservation in the transaction that refunds and
    bills, so a second settle (the request ending after start-up refunded it) changes nothing."""
    key = store.create("ledger", credits=10).info
    served = store.reserve(key.id, 4, "req-served")
    abandoned = store.reserve(key.id, 3, "req-abandoned")
    assert served is not None and abandoned is not None
    assert store.settle(served, refund=1, usage=Usage(1, 3, 3)) is True
    assert store.settle(served, refund=1, usage=Usage(1, 3, 3)) is False
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    assert store.settle_abandoned(later) == [("req-abandoned", 3)]
    assert store.settle(abandoned, refund=0, usage=Usage(1, 3, 3)) is False
    assert store.get(key.id).credits == 7  # type: ignore[union-attr]
    assert sum(day["credits"] for day in store.usage(key.id)) == 3


# --- the real app over HTTP -------------------------------------------------------------------


def test_http_metering_on_postgres(
    serve: Callable[..., LiveServer], pg_url: str, tmp_path: Path
) -> None:
    live = serve(auth="required", database_url=pg_url)  # the app migrates the empty database
    engine = make_engine(make_settings(tmp_path, database_url=pg_url))
    try:
        new = KeyStore(engine).create("http", credits=5)
    finally:
        engine.dispose()
    headers = {"Authorization": f"Bearer {new.secret}"}
    image = coco_image()

    def analyze(_: int) -> httpx.Response:
        with live.client(headers=headers) as client:
            files = [("images", ("room.jpg", image, "image/jpeg"))]
            return client.post("/v1/analyze", files=files)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(analyze, range(8)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 5 + [402] * 3, [r.text for r in responses]
    for response in responses:
        if response.status_code == 402:
            assert response.json()["error"]["code"] == "insufficient_credits"
        else:
            assert response.json()["summary"]["succeeded"] == 1

    with live.client(headers=headers) as client:
        usage = client.get("/v1/usage")
    assert usage.status_code == 200, usage.text
    body = usage.json()
    assert body["balance"] == 0
    assert body["totals"]["images"] == 5
    assert body["totals"]["credits"] == 5
    assert body["totals"]["requests"] == 5
    with live.client(headers=headers) as client:
        listed = client.get("/v1/keys")
    assert listed.status_code == 200, listed.text
    [key] = listed.json()["keys"]
    assert key["credits"] == 0 and key["created_at"].endswith("Z")


def test_concurrent_top_ups_and_reservations_lose_nothing(store: KeyStore) -> None:
    """add_credits is read-modify-write: without a row lock, PostgreSQL (READ COMMITTED) lets
    concurrent top-ups and reservations overwrite each other."""
    key = store.create("busy", credits=100).info
    threads = 40
    barrier = threading.Barrier(threads)

    def work(i: int) -> bool:
        barrier.wait()
        if i % 2:
            store.add_credits("busy", 3)
            return True
        return store.reserve(key.id, 1) is not None

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(work, range(threads)))
    assert all(results)
    assert store.get(key.id).credits == 100 + 20 * 3 - 20  # type: ignore[union-attr]


def test_http_job_running_a_key_dry_on_postgres_records_the_credits_taken(
    serve: Callable[..., LiveServer], pg_url: str, tmp_path: Path
) -> None:
    """A job bills each chunk after its work (the key's row locked FOR UPDATE): run past its
    12 credits, the balance stops at 0 and the usage ledger says 12 credits, not the price."""
    live = serve(auth="required", database_url=pg_url, job_chunk_lines=5, job_output_lines=20)
    engine = make_engine(make_settings(tmp_path, database_url=pg_url))
    try:
        new = KeyStore(engine).create("jobs", credits=12)
    finally:
        engine.dispose()
    photo = base64.b64encode(coco_image()).decode()
    body = "".join(
        json.dumps({"id": i, "skill": "metadata", "image": photo}) + "\n" for i in range(20)
    )
    with live.client(headers={"Authorization": f"Bearer {new.secret}"}) as client:
        job_id = client.post("/v1/jobs", content=body).json()["id"]
        deadline = time.monotonic() + 60
        while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] in ACTIVE:
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        report = client.get("/v1/usage").json()
    assert report["balance"] == 0
    assert report["totals"]["credits"] == 12
    assert report["totals"]["images"] == job["usage"]["images"] > 12
