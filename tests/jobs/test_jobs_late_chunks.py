"""A chunk recorded too late, on a real SQLite file: a worker that lost its lease (paused past
it, the chunk sent again or its job ended meanwhile) records after the job's outputs were
assembled or the job finished. `record_chunk` refuses it: no ledger row, no counter moved, no
credit taken, no usage recorded. Before assembly, a chunk of an ending job still records."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from batchvision.accounts.keys import KeyStore
from batchvision.accounts.scoping import Principal
from batchvision.core.db import make_engine, migrate
from batchvision.core.settings import Settings
from batchvision.jobs.store import ChunkResult, JobStore
from batchvision.jobs.tables import JobState

CREDITS = 100
COST = 7  # per chunk


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(Settings(data_dir=tmp_path))
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def keys(engine: Engine) -> KeyStore:
    return KeyStore(engine)


@pytest.fixture
def store(engine: Engine) -> JobStore:
    return JobStore(engine)


@pytest.fixture
def owner(keys: KeyStore) -> Principal:
    return Principal.of(keys.create("carol", credits=CREDITS).info)


def _job(store: JobStore, owner: Principal, chunks: int = 4) -> str:
    job = store.create(owner, surface="native", chunk_lines=10)
    store.start(job.id, input_key=f"in/{job.id}.jsonl", total_lines=chunks * 10)
    return job.id


def _chunk(index: int) -> ChunkResult:
    return ChunkResult(
        index, index * 10, 10, 9, 1, 10, f"r/{index}.jsonl", credits=COST, input_tokens=5
    )


def _balance(keys: KeyStore, owner: Principal) -> int | None:
    key = keys.get(owner.key_id or 0)
    assert key is not None
    return key.credits


def _billed(keys: KeyStore, owner: Principal) -> tuple[int, int, int]:
    """(requests, images, credits) in the owner's usage ledger, all days."""
    days: list[dict[str, Any]] = keys.usage(owner.key_id or 0)
    return (
        sum(d["requests"] for d in days),
        sum(d["images"] for d in days),
        sum(d["credits"] for d in days),
    )


def _counters(store: JobStore, owner: Principal, job_id: str) -> tuple[int, ...]:
    view = store.get(owner, job_id)
    return (view.completed_lines, view.failed_lines, view.images, view.input_tokens)


def test_an_ending_jobs_chunk_records_until_its_outputs_are_assembled(
    store: JobStore, keys: KeyStore, owner: Principal
) -> None:
    job = _job(store, owner)
    assert store.record_chunk(job, _chunk(0))
    store.decide_end(job, JobState.CANCELLED)
    # a worker stopping for the cancel records the lines it finished
    assert store.record_chunk(job, _chunk(1))
    assert _balance(keys, owner) == CREDITS - 2 * COST
    assert _billed(keys, owner) == (2, 20, 2 * COST)
    assert _counters(store, owner, job) == (18, 2, 20, 10)


def test_a_chunk_recorded_after_the_outputs_were_assembled_is_refused_and_bills_nothing(
    store: JobStore, keys: KeyStore, owner: Principal
) -> None:
    job = _job(store, owner)
    assert store.record_chunk(job, _chunk(0))
    store.decide_end(job, JobState.COMPLETED)
    store.set_outputs(job, 1)
    before = (_balance(keys, owner), _billed(keys, owner), _counters(store, owner, job))
    assert not store.record_chunk(job, _chunk(1))
    assert (_balance(keys, owner), _billed(keys, owner), _counters(store, owner, job)) == before
    assert before[0] == CREDITS - COST
    assert not store.is_recorded(job, 1)  # rolled back: the ledger holds what was assembled
    assert [c.index for c in store.done_chunks(job)] == [0]
    assert store.recorded_counts() == {job: 1}


def test_a_chunk_recorded_after_its_job_finished_is_refused_and_bills_nothing(
    store: JobStore, keys: KeyStore, owner: Principal
) -> None:
    job = _job(store, owner)
    assert store.record_chunk(job, _chunk(0))
    store.decide_end(job, JobState.FAILED)
    store.set_outputs(job, 1)
    assert store.finish(job)
    before = (_balance(keys, owner), _billed(keys, owner), _counters(store, owner, job))
    assert not store.record_chunk(job, _chunk(1))
    assert (_balance(keys, owner), _billed(keys, owner), _counters(store, owner, job)) == before
    assert not store.is_recorded(job, 1)
    assert store.recorded_counts() == {}  # a finished job is no longer the dispatcher's


def test_a_chunk_of_a_job_finished_without_assembled_outputs_is_refused(
    store: JobStore, keys: KeyStore, owner: Principal
) -> None:
    # The state alone refuses it, whatever `output_files` says.
    job = _job(store, owner)
    store.decide_end(job, JobState.CANCELLED)
    assert store.finish(job)
    assert not store.record_chunk(job, _chunk(0))
    assert _balance(keys, owner) == CREDITS
    assert _billed(keys, owner) == (0, 0, 0)
    assert _counters(store, owner, job) == (0, 0, 0, 0)


def test_a_chunk_recorded_after_an_assembly_of_zero_files_is_refused_and_bills_nothing(
    store: JobStore, keys: KeyStore, owner: Principal
) -> None:
    # Cancelled before any chunk was recorded: `_end` assembles zero output files, deletes the
    # work files, then finishes. A worker whose lease lapsed (drained) records in between.
    # RED: `output_files == 0` reads as "not assembled yet", so this chunk is billed and counted
    # though no output will ever hold it.
    job = _job(store, owner)
    store.decide_end(job, JobState.CANCELLED)
    store.set_outputs(job, 0)
    assert not store.record_chunk(job, _chunk(0))
    assert _balance(keys, owner) == CREDITS
    assert _billed(keys, owner) == (0, 0, 0)
