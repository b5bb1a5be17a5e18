"""The job store on a real SQLite file: scoping, paging, the exactly-once chunk ledger, states."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

import batchvision.accounts.tables
import batchvision.jobs.tables  # noqa: F401 - the ORM tables the migrations must match
from batchvision.accounts.keys import KeyStore
from batchvision.accounts.scoping import Principal
from batchvision.core.db import Base, make_engine, migrate
from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.settings import Settings
from batchvision.jobs.store import ChunkResult, JobStore
from batchvision.jobs.tables import CallbackState, JobState
from pg_server import running_postgres


@pytest.fixture
def engine(tmp_path: Path):
    engine = make_engine(Settings(data_dir=tmp_path))
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def principals(engine) -> tuple[Principal, Principal, Principal]:
    keys = KeyStore(engine)
    alice = Principal.of(keys.create("alice").info)
    bob = Principal.of(keys.create("bob").info)
    admin = Principal.of(keys.create("root", is_admin=True).info)
    return alice, bob, admin


def test_migrations_build_exactly_the_orm_schema(engine) -> None:
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_another_key_gets_not_found_and_admins_see_everything(engine, principals) -> None:
    alice, bob, admin = principals
    store = JobStore(engine)
    job = store.create(alice, surface="native", chunk_lines=100)
    assert store.get(alice, job.id).owner_key_id == alice.key_id
    assert store.get(admin, job.id).id == job.id
    with pytest.raises(BatchVisionError) as caught:
        store.get(bob, job.id)
    assert caught.value.code is ErrorCode.NOT_FOUND
    with pytest.raises(BatchVisionError) as missing:
        store.get(bob, "0" * 32)
    assert str(caught.value).replace(job.id, "ID") == str(missing.value).replace("0" * 32, "ID")
    with pytest.raises(BatchVisionError):
        store.request_cancel(bob, job.id)
    assert store.page(bob)[0] == []
    assert [j.id for j in store.page(admin)[0]] == [job.id]


def test_pages_cover_every_job_once_newest_first(engine, principals) -> None:
    alice, bob, _ = principals
    store = JobStore(engine)
    made = [store.create(alice, surface="native", chunk_lines=10).id for _ in range(7)]
    store.create(bob, surface="native", chunk_lines=10)
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = store.page(alice, limit=3, cursor=cursor)
        seen.extend(j.id for j in page)
        if cursor is None:
            break
    assert sorted(seen) == sorted(made)
    assert len(seen) == len(set(seen)) == 7
    created = [store.get(alice, i).created_at for i in seen]
    assert created == sorted(created, reverse=True)


def test_a_cursor_the_listing_did_not_hand_out_is_refused(engine, principals) -> None:
    alice, bob, _ = principals
    store = JobStore(engine)
    hers = store.create(alice, surface="native", chunk_lines=10).id
    other_surface = store.create(bob, surface="other", chunk_lines=10).id
    his = store.create(bob, surface="native", chunk_lines=10).id
    answers = []
    for cursor in ("nope", hers, other_surface):
        with pytest.raises(BatchVisionError) as caught:
            store.page(bob, cursor=cursor, surface="native")
        assert caught.value.code == ErrorCode.INVALID_REQUEST
        answers.append(str(caught.value))
    assert len(set(answers)) == 1  # another key's job reads as an unknown id
    assert store.page(bob, cursor=his, surface="native") == ([], None)
    # without a surface filter every job of the caller's is a cursor
    listed = [j.id for j in store.page(bob)[0]]
    assert sorted(listed) == sorted([his, other_surface])
    after = [j.id for j in store.page(bob, cursor=listed[0])[0]]
    assert after == listed[1:]


def test_a_cursor_that_cannot_be_an_id_is_refused_on_postgresql_too(tmp_path: Path) -> None:
    # PostgreSQL refuses a NUL in text outright; the cursor must never reach it as a query.
    with running_postgres() as server:
        settings = Settings(data_dir=tmp_path, database_url=server.create_database("cursors"))
        engine = make_engine(settings)
        try:
            migrate(engine)
            store, anyone = JobStore(engine), Principal.anonymous()
            job = store.create(anyone, surface="native", chunk_lines=10).id
            for cursor in ("\x00", "a\x00b", "ü" * 40, "x" * 5000):
                with pytest.raises(BatchVisionError) as caught:
                    store.page(anyone, cursor=cursor)
                assert caught.value.code == ErrorCode.INVALID_REQUEST
            assert store.page(anyone, cursor=job) == ([], None)
        finally:
            engine.dispose()


def _chunk(index: int, ok: int = 8, failed: int = 2) -> ChunkResult:
    return ChunkResult(index, index * 10, ok + failed, ok, failed, ok + failed, f"r/{index}.jsonl")


def test_a_chunk_delivered_twice_counts_once(engine, principals) -> None:
    alice, _, _ = principals
    store = JobStore(engine)
    job = store.create(alice, surface="native", chunk_lines=10)
    store.start(job.id, input_key="in/x.jsonl", total_lines=30)
    assert store.record_chunk(job.id, _chunk(0))
    assert not store.record_chunk(job.id, _chunk(0))
    assert store.record_chunk(job.id, _chunk(2, ok=10, failed=0))
    view = store.get(alice, job.id)
    assert (view.completed_lines, view.failed_lines, view.images) == (18, 2, 20)
    assert [c.index for c in store.done_chunks(job.id)] == [0, 2]
    assert view.state is JobState.PROCESSING
    assert view.chunks == 3


def test_concurrent_deliveries_of_one_chunk_record_it_exactly_once(engine, principals) -> None:
    alice, _, _ = principals
    store = JobStore(engine)
    job = store.create(alice, surface="native", chunk_lines=10)
    wins: list[bool] = []
    barrier = threading.Barrier(8)

    def deliver() -> None:
        barrier.wait()
        wins.append(store.record_chunk(job.id, _chunk(0)))

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wins.count(True) == 1
    assert store.get(alice, job.id).completed_lines == 8


def test_states_cancel_resume_and_retention(engine, principals) -> None:
    alice, _, _ = principals
    store = JobStore(engine)
    running = store.create(alice, surface="native", chunk_lines=10, retention_days=2)
    store.start(running.id, input_key="in/a.jsonl", total_lines=5)
    other = store.create(alice, surface="moondream", chunk_lines=10)
    assert {j.id for j in store.unfinished()} == {running.id, other.id}
    assert store.request_cancel(alice, running.id).cancel_requested
    assert not store.finish(running.id)  # no end decided yet: nothing changes
    decided = store.decide_end(running.id, JobState.CANCELLED)
    assert decided is not None and decided.end_state is JobState.CANCELLED
    assert decided.state is JobState.PROCESSING  # decided, not yet the state
    later = store.decide_end(running.id, JobState.FAILED, error_code=ErrorCode.TIMEOUT)
    assert later is not None and later.end_state is JobState.CANCELLED  # the first one wins
    assert later.error_code is None
    assert store.finish(running.id)
    assert not store.finish(running.id)  # already final: unchanged
    assert store.decide_end(running.id, JobState.COMPLETED) is None
    done = store.get(alice, running.id)
    assert done.state is JobState.CANCELLED
    assert done.completed_at is not None
    assert done.expires_at == done.completed_at + dt.timedelta(days=2)
    assert {j.id for j in store.unfinished()} == {other.id}
    assert store.expired(done.completed_at + dt.timedelta(days=1)) == []
    assert [j.id for j in store.expired(done.completed_at + dt.timedelta(days=2))] == [running.id]
    store.mark_expired(running.id)
    assert store.get(alice, running.id).state is JobState.EXPIRED
    with pytest.raises(ValueError, match="ends in"):
        store.decide_end(other.id, JobState.PROCESSING)
    with pytest.raises(ValueError, match="ends in"):
        store.decide_end(other.id, JobState.EXPIRED)  # only the retention sweep expires a job


def test_a_cancel_after_the_end_is_decided_changes_nothing(engine, principals) -> None:
    alice, _, _ = principals
    store = JobStore(engine)
    job = store.create(alice, surface="native", chunk_lines=10)
    store.start(job.id, input_key="in/a.jsonl", total_lines=5)
    store.decide_end(job.id, JobState.COMPLETED)
    store.set_outputs(job.id, 1)
    assert not store.request_cancel(alice, job.id).cancel_requested
    assert store.finish(job.id)
    done = store.get(alice, job.id)
    assert (done.state, done.output_files, done.cancel_requested) == (JobState.COMPLETED, 1, False)


def test_states_are_enums_that_read_and_write_as_their_plain_values(engine, principals) -> None:
    alice, _, _ = principals
    store = JobStore(engine)
    job = store.create(alice, surface="native", chunk_lines=10, callback_url="https://x.test/h")
    store.decide_end(job.id, JobState.FAILED, error_code=ErrorCode.EMPTY_BATCH, error_message="m")
    store.finish(job.id)
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT state, error_code, callback_state FROM jobs WHERE id = :id"),
            {"id": job.id},
        ).one()
    assert tuple(row) == ("failed", "empty_batch", "pending")
    view = store.get(alice, job.id)
    assert view.state is JobState.FAILED
    assert view.error_code is ErrorCode.EMPTY_BATCH
    assert view.callback_state is CallbackState.PENDING


def test_0008_keeps_a_jobs_tokens_as_input_tokens_and_adds_the_chunk_costs(tmp_path: Path) -> None:
    from importlib import resources

    from alembic import command
    from alembic.config import Config

    engine = make_engine(Settings(data_dir=tmp_path))
    config = Config()
    config.set_main_option(
        "script_location", str(resources.files("batchvision").joinpath("migrations"))
    )
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0007_uncharged_credits")
        connection.execute(
            text(
                "INSERT INTO jobs (id, surface, state, total_lines, completed_lines, failed_lines,"
                " images, uncharged_credits, tokens, chunk_lines, cancel_requested,"
                " output_files, retention_days, created_at)"
                " VALUES ('j1', 'native', 'completed', 1, 1, 0, 1, 0, 5, 10, 0, 0, 7,"
                " '2026-12-01 00:00:00')"
            )
        )
        connection.execute(
            text(
                'INSERT INTO job_chunks (job_id, "index", first_line, lines, ok_lines,'
                " failed_lines, images, invalid_lines, result_key, completed_at)"
                " VALUES ('j1', 0, 0, 1, 1, 0, 1, 0, 'r/0.jsonl', '2026-12-01 00:00:00')"
            )
        )
    migrate(engine)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    store = JobStore(engine)
    admin = Principal.of(KeyStore(engine).create("root", is_admin=True).info)
    job = store.get(admin, "j1")
    assert (job.input_tokens, job.output_tokens) == (5, 0)
    [chunk] = store.done_chunks("j1")
    assert (chunk.credits, chunk.input_tokens, chunk.output_tokens) == (0, 0, 0)
    engine.dispose()


def test_a_chunk_bills_its_credits_and_adds_its_tokens_once(engine) -> None:
    keys = KeyStore(engine)
    carol = Principal.of(keys.create("carol", credits=20).info)
    store = JobStore(engine)
    job = store.create(carol, surface="native", chunk_lines=10)
    chunk = ChunkResult(0, 0, 2, 2, 0, 2, "r/0.jsonl", credits=7, input_tokens=30, output_tokens=4)
    assert store.record_chunk(job.id, chunk)
    assert not store.record_chunk(job.id, chunk)  # a redelivery bills nothing more
    after = keys.get(carol.key_id or 0)
    assert after is not None and after.credits == 20 - 7
    view = store.get(carol, job.id)
    assert (view.input_tokens, view.output_tokens) == (30, 4)
    assert store.done_chunks(job.id)[0] == chunk
