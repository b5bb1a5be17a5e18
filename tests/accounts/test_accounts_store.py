"""The embedded SQLite store: migrations at start-up (idempotent), WAL and foreign keys, and the
KeyStore operations that must stay exact while requests run."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from accounts_support import analyze, bearer
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from batchvision.accounts.keys import MAX_CREDITS, AccountError, KeyStore, hash_secret
from batchvision.core.db import make_engine, migrate
from conftest import LiveServer, make_settings


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(make_settings(tmp_path, auth="required"))
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> KeyStore:
    return KeyStore(engine)


# --- migrations and pragmas -------------------------------------------------------------------


def test_two_servers_one_after_another_share_the_data_dir(
    serve: Callable[..., LiveServer],
) -> None:
    first = serve(auth="required")
    store = KeyStore(make_engine(first.settings))
    key = store.create("survivor", credits=5)
    with first.client() as client:
        assert analyze(client, key.secret).status_code == 200
    first.stop()
    store.engine.dispose()

    second = serve(auth="required")  # same tmp data dir: migrates an up-to-date database again
    assert second.settings.data_dir == first.settings.data_dir
    with second.client() as client:
        usage = client.get("/v1/usage", headers=bearer(key.secret))
        assert usage.status_code == 200, usage.text
        assert usage.json()["balance"] == 4
        assert usage.json()["totals"]["images"] == 1
        assert analyze(client, key.secret).status_code == 200
    with sqlite3.connect(second.settings.data_dir / "batchvision.db") as db:
        versions = db.execute("SELECT version_num FROM alembic_version").fetchall()
    assert len(versions) == 1


def test_migrate_is_idempotent(engine: Engine, store: KeyStore) -> None:
    key = store.create("kept", credits=3)
    with engine.connect() as connection:
        before = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    migrate(engine)
    migrate(engine)
    with engine.connect() as connection:
        after = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    assert before == after and len(after) == 1
    assert store.authenticate(key.secret) is not None
    assert {"api_keys", "usage_days", "alembic_version"} <= set(inspect(engine).get_table_names())


def test_sqlite_file_in_the_data_dir_uses_wal_and_foreign_keys(
    engine: Engine, tmp_path: Path
) -> None:
    assert engine.url.database == str((tmp_path / "data" / "batchvision.db").resolve())
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() >= 1000
    # WAL is a property of the file: a plain connection sees it too.
    with sqlite3.connect(tmp_path / "data" / "batchvision.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_data_dir_from_before_the_rename_keeps_its_database_file(tmp_path: Path) -> None:
    """Early releases named the file `batchvision.core.db`; such a data dir keeps using it
    (its keys and jobs stay), and a fresh one gets `batchvision.db`."""
    legacy = tmp_path / "old" / "batchvision.core.db"
    legacy.parent.mkdir()
    sqlite3.connect(legacy).close()
    old = make_settings(tmp_path / "old-root", data_dir=legacy.parent)
    assert old.resolved_database_url() == f"sqlite:///{legacy.resolve()}"
    fresh = make_settings(tmp_path / "new-root", data_dir=tmp_path / "new")
    assert fresh.resolved_database_url().endswith("/new/batchvision.db")


def test_every_pooled_connection_enforces_foreign_keys(engine: Engine) -> None:
    connections = [engine.connect() for _ in range(3)]
    try:
        for connection in connections:
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        for connection in connections:
            connection.close()
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO usage_days (key_id, day, requests, images, credits) "
                "VALUES (424242, '2026-01-01', 1, 1, 1)"
            )
        )


def test_the_data_dir_is_created_on_demand(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "nested" / "deeper")
    engine = make_engine(settings)
    try:
        migrate(engine)
        assert (settings.data_dir / "batchvision.db").is_file()
    finally:
        engine.dispose()


# --- keys ------------------------------------------------------------------------------------


def test_authenticate_compares_the_whole_secret(store: KeyStore) -> None:
    key = store.create("exact")
    found = store.authenticate(key.secret)
    assert found is not None and found.to_dict() == key.info.to_dict()
    assert store.authenticate(key.secret[:-1] + ("a" if key.secret[-1] != "a" else "b")) is None
    assert store.authenticate(key.secret + "\n") is None
    assert store.authenticate(key.secret.upper()) is None
    assert store.authenticate("") is None
    assert store.authenticate("bv_" + key.info.prefix) is None


def test_the_stored_hash_is_sha256_of_the_secret(engine: Engine, store: KeyStore) -> None:
    key = store.create("hashed")
    with engine.connect() as connection:
        stored = connection.execute(
            text("SELECT secret_hash FROM api_keys WHERE id = :id"), {"id": key.info.id}
        ).scalar()
    assert stored == hash_secret(key.secret)


def test_reserve_and_refund(store: KeyStore) -> None:
    key = store.create("metered", credits=3)
    assert store.reserve(key.info.id, 2)
    assert not store.reserve(key.info.id, 2)
    assert store.reserve(key.info.id, 1)
    assert store.get(key.info.id).credits == 0  # type: ignore[union-attr]
    store.refund(key.info.id, 2)
    store.refund(key.info.id, 0)
    store.refund(key.info.id, -5)  # nothing taken by a negative refund
    assert store.get(key.info.id).credits == 2  # type: ignore[union-attr]
    store.revoke("metered")
    assert not store.reserve(key.info.id, 1)


def test_add_credits_is_exact_while_reservations_run(store: KeyStore) -> None:
    """add_credits used to read the balance and write back a number, losing every reservation
    and refund that committed in between."""
    key = store.create("busy", credits=1000)
    rounds = 300
    start = threading.Barrier(3)

    def reserve() -> None:
        start.wait()
        for _ in range(rounds):
            assert store.reserve(key.info.id, 1)

    def refund() -> None:
        start.wait()
        for _ in range(rounds):
            store.refund(key.info.id, 1)

    def add() -> None:
        start.wait()
        for _ in range(rounds):
            store.add_credits("busy", 1)

    threads = [threading.Thread(target=fn) for fn in (reserve, refund, add)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.get(key.info.id).credits == 1000 + rounds  # type: ignore[union-attr]


def test_add_credits_clamps_and_refuses_what_it_cannot_store(store: KeyStore) -> None:
    store.create("clamped", credits=5)
    assert store.add_credits("clamped", -50).credits == 0
    assert store.add_credits("clamped", MAX_CREDITS).credits == MAX_CREDITS
    assert store.add_credits("clamped", MAX_CREDITS).credits == MAX_CREDITS
    with pytest.raises(ValueError, match="between"):
        store.add_credits("clamped", MAX_CREDITS + 1)
    with pytest.raises(ValueError, match="between"):
        store.add_credits("clamped", -(2**80))
    with pytest.raises(AccountError, match="no key named"):
        store.add_credits("nobody", 1)


def test_add_credits_leaves_an_unlimited_key_unlimited(store: KeyStore) -> None:
    key = store.create("boundless")
    with pytest.raises(ValueError, match="unlimited"):
        store.add_credits("boundless", 10)
    assert store.get(key.info.id).credits is None  # type: ignore[union-attr]
    assert store.reserve(key.info.id, 10**6)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"credits": -1},
        {"credits": MAX_CREDITS + 1},
        {"credits": 2**64},
        {"requests_per_minute": 0},
        {"requests_per_minute": 2**40},
        {"images_per_minute": -3},
    ],
)
def test_create_refuses_numbers_the_columns_cannot_hold(
    store: KeyStore, kwargs: dict[str, int]
) -> None:
    with pytest.raises(ValueError, match="between"):
        store.create("numbers", **kwargs)  # type: ignore[arg-type]
    assert store.all_keys() == []


def test_usage_rows_accumulate_per_day(store: KeyStore) -> None:
    key = store.create("counted")
    store.record_usage(key.info.id, requests=1, images=2, credits=2)
    store.record_usage(key.info.id, requests=1, images=0, credits=0)
    rows = store.usage(key.info.id)
    assert len(rows) == 1
    assert {k: rows[0][k] for k in ("requests", "images", "credits")} == {
        "requests": 2,
        "images": 2,
        "credits": 2,
    }
    assert store.usage(key.info.id + 1) == []
