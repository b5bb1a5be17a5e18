"""Chunk leases and the dispatcher's leadership (`jobs/leases.py`) on a real SQLite file and a
real PostgreSQL server: who may claim, renew and resend an attempt, what the reaper and a job's
end see, and one leader at a time however holders race. No mocks.

Lapses are real: a lease taken for `SHORT` seconds is past once the test slept `PAST`; the
reaper's `expired(now)` is asked about explicit moments instead."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql
from sqlalchemy import Engine, select

from batchvision.accounts.scoping import Principal
from batchvision.core.db import make_engine, migrate, utcnow
from batchvision.core.settings import Settings
from batchvision.jobs.leases import LeaderLease, Lease, LeaseStore
from batchvision.jobs.store import ChunkResult, JobStore
from batchvision.jobs.tables import ChunkLease, LeaseState
from pg_server import PgServer, running_postgres

SHORT = 0.3  # a lease or leadership that lapses within the test (loaded CI commits take tens of ms)
PAST = 0.4  # slept to let a SHORT one lapse
LONG = 60.0  # one that holds for the whole test
ROLE = "dispatcher"
_databases = itertools.count()


@pytest.fixture(scope="module")
def postgres() -> Iterator[PgServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated database per test. PostgreSQL sessions run in a zone that is not UTC, so a
    lapse computed from a local time instead of UTC would show."""
    settings = Settings(data_dir=tmp_path)
    if request.param == "postgresql":
        server: PgServer = request.getfixturevalue("postgres")
        name = f"bv_leases_{next(_databases)}"
        url = server.create_database(name)
        with server.connect() as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET timezone TO 'Pacific/Auckland'").format(
                    sql.Identifier(name)
                )
            )
        settings = Settings(data_dir=tmp_path, database_url=url)
    engine = make_engine(settings)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def jobs(engine: Engine) -> JobStore:
    return JobStore(engine)


@pytest.fixture
def leases(engine: Engine) -> LeaseStore:
    return LeaseStore(engine)


def _job(jobs: JobStore, chunks: int = 8) -> str:
    job = jobs.create(Principal.anonymous(), surface="native", chunk_lines=10)
    jobs.start(job.id, input_key=f"in/{job.id}.jsonl", total_lines=chunks * 10)
    return job.id


def _row(engine: Engine, job_id: str, index: int) -> tuple[int, LeaseState, str | None] | None:
    """(attempt, state, holder) of the chunk's lease, None if it has none."""
    with engine.connect() as connection:
        row = connection.execute(
            select(ChunkLease.attempt, ChunkLease.state, ChunkLease.holder).where(
                ChunkLease.job_id == job_id, ChunkLease.index == index
            )
        ).one_or_none()
    return None if row is None else (row.attempt, row.state, row.holder)


def _chunk(index: int) -> ChunkResult:
    return ChunkResult(index, index * 10, 10, 10, 0, 10, f"r/{index}.jsonl")


# --- dispatch and claim ------------------------------------------------------------------------


def test_dispatch_leases_first_attempts_queued_and_leaves_out_indexes_already_leased(
    engine: Engine, jobs: JobStore, leases: LeaseStore
) -> None:
    job, other = _job(jobs), _job(jobs)
    assert leases.dispatch(job, [0, 1, 2], LONG) == [Lease(job, i, 1) for i in (0, 1, 2)]
    assert leases.dispatch(job, [1, 2, 3], LONG) == [Lease(job, 3, 1)]
    assert leases.dispatch(job, [0, 1, 2, 3], LONG) == []
    assert leases.dispatch(other, [0], LONG) == [Lease(other, 0, 1)]  # per job, not per index
    assert leases.leased_indexes(job) == {0, 1, 2, 3}
    assert leases.leased_indexes(other) == {0}
    assert _row(engine, job, 2) == (1, LeaseState.QUEUED, None)


def test_a_chunk_leased_again_after_a_resend_keeps_its_attempt(
    engine: Engine, jobs: JobStore, leases: LeaseStore
) -> None:
    job = _job(jobs)
    [first] = leases.dispatch(job, [0], SHORT)
    time.sleep(PAST)
    assert leases.resend(first, LONG) == Lease(job, 0, 2)
    assert leases.dispatch(job, [0], LONG) == []  # a second dispatcher must not reset it
    assert _row(engine, job, 0) == (2, LeaseState.QUEUED, None)


def test_a_worker_claims_only_the_attempt_it_was_sent(
    engine: Engine, jobs: JobStore, leases: LeaseStore
) -> None:
    job = _job(jobs)
    [lease] = leases.dispatch(job, [0], LONG)
    assert not leases.claim(Lease(job, 0, 2), LONG, "w1")
    assert not leases.claim(Lease(job, 1, 1), LONG, "w1")  # never dispatched
    assert _row(engine, job, 0) == (1, LeaseState.QUEUED, None)
    assert leases.claim(lease, LONG, "w1")
    assert _row(engine, job, 0) == (1, LeaseState.RUNNING, "w1")


def test_a_running_lease_is_claimed_again_only_once_it_lapsed(
    engine: Engine, jobs: JobStore, leases: LeaseStore
) -> None:
    job = _job(jobs)
    [lease] = leases.dispatch(job, [0], LONG)
    assert leases.claim(lease, SHORT, "w1")
    assert not leases.claim(lease, LONG, "w2")  # a duplicate delivery while w1 works
    assert _row(engine, job, 0) == (1, LeaseState.RUNNING, "w1")
    time.sleep(PAST)  # w1 died: it stopped renewing
    assert leases.claim(lease, LONG, "w2")
    assert _row(engine, job, 0) == (1, LeaseState.RUNNING, "w2")
    assert not leases.claim(lease, LONG, "w3")


def test_a_queued_lease_is_claimed_even_after_it_lapsed(jobs: JobStore, leases: LeaseStore) -> None:
    # The reaper has not resent it yet: the late message is still the attempt to run.
    job = _job(jobs)
    [lease] = leases.dispatch(job, [0], SHORT)
    time.sleep(PAST)
    assert leases.claim(lease, LONG, "w1")
    assert leases.expired() == []


# --- renew, release ----------------------------------------------------------------------------


def test_renew_pushes_the_expiry_forward(jobs: JobStore, leases: LeaseStore) -> None:
    job = _job(jobs)
    [lease] = leases.dispatch(job, [0], LONG)
    assert leases.claim(lease, SHORT, "w1")
    assert leases.renew(lease, LONG, "w1")
    time.sleep(PAST)  # past the claim's SHORT expiry, not past the renewal's
    assert leases.expired() == []
    assert not leases.claim(lease, LONG, "w2")
    assert leases.expired(utcnow() + dt.timedelta(seconds=2 * LONG)) == [lease]


def test_renew_fails_once_the_lease_was_sent_again(jobs: JobStore, leases: LeaseStore) -> None:
    job = _job(jobs)
    [lease] = leases.dispatch(job, [0], LONG)
    assert leases.claim(lease, SHORT, "w1")
    time.sleep(PAST)
    again = leases.resend(lease, LONG)
    assert again == Lease(job, 0, 2)
    assert not leases.renew(lease, LONG, "w1")
    assert not leases.renew(Lease(job, 1, 1), LONG, "w1")  # no lease at all
    assert not leases.renew(again, LONG, "w1")  # queued: no worker holds it yet
    assert leases.claim(again, SHORT, "w2")
    assert leases.renew(again, LONG, "w2")
    time.sleep(PAST)
    assert leases.expired() == []


def test_renew_fails_once_another_worker_claimed_the_lapsed_attempt(
    engine: Engine, jobs: JobStore, leases: LeaseStore
) -> None:
    # w1 froze past its lease; the broker redelivered the same attempt's message to w2.
    job = _job(jobs)
    [lease] = leases.dispatch(job, [0], LONG)
    assert leases.claim(lease, SHORT, "w1")
    time.sleep(PAST)
    assert leases.claim(lease, SHORT, "w2")
    assert not leases.renew(lease, LONG, "w1")
    assert leases.renew(lease, LONG, "w2")
    assert _row(engine, job, 0) == (1, LeaseState.RUNNING, "w2")


def test_release_deletes_only_the_attempt_named(
    engine: Engine, jobs: JobStore, leases: LeaseStore
) -> None:
    job = _job(jobs)
    leases.dispatch(job, [0, 1], LONG)
    leases.release(Lease(job, 0, 2))  # an older or newer attempt's worker: not its lease
    assert leases.leased_indexes(job) == {0, 1}
    leases.release(Lease(job, 0, 1))
    assert leases.leased_indexes(job) == {1}
    assert _row(engine, job, 0) is None


# --- the reaper: expired and resend ------------------------------------------------------------


def test_expired_lists_the_leases_lapsed_at_the_moment_asked(
    jobs: JobStore, leases: LeaseStore
) -> None:
    job, other = _job(jobs), _job(jobs)
    start = utcnow()
    leases.dispatch(job, [0], 10)
    leases.dispatch(job, [1], 100)
    [running] = leases.dispatch(other, [0], 10)
    assert leases.claim(running, 100, "w1")  # its claim replaced the queued expiry
    assert leases.expired() == []
    assert leases.expired(start + dt.timedelta(seconds=50)) == [Lease(job, 0, 1)]
    later = leases.expired(start + dt.timedelta(seconds=150))
    assert len(later) == 3
    assert set(later) == {Lease(job, 0, 1), Lease(job, 1, 1), Lease(other, 0, 1)}


def test_expired_lists_a_lease_once_its_time_really_passed(
    jobs: JobStore, leases: LeaseStore
) -> None:
    job = _job(jobs)
    [lapsing] = leases.dispatch(job, [0], SHORT)
    leases.dispatch(job, [1], LONG)
    assert leases.expired() == []
    time.sleep(PAST)
    assert leases.expired() == [lapsing]


def test_resend_queues_the_next_attempt_and_the_old_one_claims_nothing(
    engine: Engine, jobs: JobStore, leases: LeaseStore
) -> None:
    job = _job(jobs)
    [lease] = leases.dispatch(job, [0], LONG)
    assert leases.claim(lease, SHORT, "w1")
    time.sleep(PAST)  # w1 was killed mid-chunk
    again = leases.resend(lease, LONG)
    assert again == Lease(job, 0, 2)
    assert _row(engine, job, 0) == (2, LeaseState.QUEUED, None)
    assert leases.expired() == []  # queued again for LONG
    assert not leases.claim(lease, LONG, "w1")  # the broker redelivering attempt 1
    assert leases.claim(again, LONG, "w2")
    assert _row(engine, job, 0) == (2, LeaseState.RUNNING, "w2")


def test_resend_of_a_lease_that_has_not_lapsed_gives_none(
    engine: Engine, jobs: JobStore, leases: LeaseStore
) -> None:
    job = _job(jobs)
    [lease] = leases.dispatch(job, [0], LONG)
    assert leases.resend(lease, LONG) is None
    assert _row(engine, job, 0) == (1, LeaseState.QUEUED, None)


def test_resend_gives_none_when_the_lease_changed_since_it_was_listed(
    engine: Engine, jobs: JobStore, leases: LeaseStore
) -> None:
    job = _job(jobs)
    renewed, claimed, released, resent = leases.dispatch(job, [0, 1, 2, 3], SHORT)
    assert leases.claim(renewed, SHORT, "w1")
    time.sleep(PAST)
    assert len(leases.expired()) == 4
    # between the reaper's listing and its resend:
    assert leases.renew(renewed, LONG, "w1")  # w1 was only slow
    assert leases.claim(claimed, LONG, "w2")  # the late message reached a worker
    leases.release(released)  # its chunk was recorded
    assert leases.resend(resent, LONG) is not None  # another reaper got there first
    assert leases.resend(renewed, LONG) is None
    assert leases.resend(claimed, LONG) is None
    assert leases.resend(released, LONG) is None
    assert leases.resend(resent, LONG) is None
    assert _row(engine, job, 0) == (1, LeaseState.RUNNING, "w1")
    assert _row(engine, job, 1) == (1, LeaseState.RUNNING, "w2")
    assert _row(engine, job, 2) is None  # not brought back
    assert _row(engine, job, 3) == (2, LeaseState.QUEUED, None)


def test_resend_of_a_chunk_already_in_the_ledger_drops_its_lease(
    engine: Engine, jobs: JobStore, leases: LeaseStore
) -> None:
    # The worker recorded the chunk and died before releasing the lease.
    job = _job(jobs)
    [lease, other] = leases.dispatch(job, [0, 1], SHORT)
    assert jobs.record_chunk(job, _chunk(0))
    time.sleep(PAST)
    assert leases.resend(lease, LONG) is None
    assert _row(engine, job, 0) is None
    assert leases.leased_indexes(job) == {1}
    assert leases.resend(other, LONG) == Lease(job, 1, 2)  # its neighbour is not recorded


# --- a job's end: drain, in_flight -------------------------------------------------------------


def test_drain_drops_queued_and_lapsed_leases_and_counts_the_running_ones_left(
    jobs: JobStore, leases: LeaseStore
) -> None:
    job, other = _job(jobs), _job(jobs)
    queued, running, lapsed, _ = leases.dispatch(job, [0, 1, 2, 3], LONG)
    leases.dispatch(other, [0, 1], LONG)
    assert leases.claim(running, LONG, "w1")
    assert leases.claim(lapsed, SHORT, "w2")
    time.sleep(PAST)  # w2 died
    assert leases.drain(job) == 1
    assert leases.leased_indexes(job) == {1}
    assert leases.leased_indexes(other) == {0, 1}  # another job's leases stay
    assert not leases.claim(queued, LONG, "w3")  # its message arrives after the end
    assert leases.drain(job) == 1  # until w1 stops and releases
    leases.release(running)
    assert leases.drain(job) == 0


def test_drain_of_a_job_without_leases_is_zero(jobs: JobStore, leases: LeaseStore) -> None:
    assert leases.drain(_job(jobs)) == 0


def test_in_flight_counts_the_leased_chunks_of_each_job(jobs: JobStore, leases: LeaseStore) -> None:
    assert leases.in_flight() == {}
    job, other, idle = _job(jobs), _job(jobs), _job(jobs)
    first, *_ = leases.dispatch(job, [0, 1, 2], LONG)
    [running] = leases.dispatch(other, [5], LONG)
    assert leases.claim(running, LONG, "w1")
    assert leases.in_flight() == {job: 3, other: 1}
    leases.release(first)
    assert leases.in_flight() == {job: 2, other: 1}
    assert idle not in leases.in_flight()


# Leases go with their job (ON DELETE CASCADE in 0011_chunk_leases), but no store deletes a job
# row (the retention sweep marks it expired), so there is no path of the code to test that on.


# --- leadership --------------------------------------------------------------------------------


def test_the_first_holder_leads_and_a_second_waits_until_it_lapses(engine: Engine) -> None:
    first = LeaderLease(engine, ROLE, "replica-a", SHORT)
    second = LeaderLease(engine, ROLE, "replica-b", LONG)
    assert first.hold()
    assert not second.hold()
    assert first.hold()  # renewed
    time.sleep(PAST)  # the first froze past its expiry
    assert second.hold()
    assert not first.hold()  # it learns it lost the role
    assert second.hold()
    assert not LeaderLease(engine, ROLE, "replica-c", LONG).hold()


def test_a_holder_that_keeps_renewing_keeps_the_role(engine: Engine) -> None:
    first = LeaderLease(engine, ROLE, "replica-a", 0.3)
    second = LeaderLease(engine, ROLE, "replica-b", LONG)
    assert first.hold()
    for _ in range(4):  # 0.4 s in all, past one ttl: only the renewals keep it
        time.sleep(0.1)
        assert first.hold()
        assert not second.hold()


def test_roles_are_led_independently(engine: Engine) -> None:
    assert LeaderLease(engine, ROLE, "replica-a", LONG).hold()
    assert LeaderLease(engine, "sweeper", "replica-b", LONG).hold()
    assert not LeaderLease(engine, "sweeper", "replica-a", LONG).hold()


def test_give_up_lets_another_take_the_role_at_once(engine: Engine) -> None:
    first = LeaderLease(engine, ROLE, "replica-a", LONG)
    second = LeaderLease(engine, ROLE, "replica-b", LONG)
    assert first.hold()
    assert not second.hold()
    first.give_up()
    assert second.hold()
    first.give_up()  # no longer its role: it must not hand back another's
    assert not LeaderLease(engine, ROLE, "replica-c", LONG).hold()
    assert not first.hold()


def _race(engine: Engine, role: str, names: list[str]) -> list[str]:
    """Every holder calls `hold` at once; the names of those told they lead."""
    barrier = threading.Barrier(len(names))
    winners: list[str] = []
    errors: list[BaseException] = []

    def contend(name: str) -> None:
        lease = LeaderLease(engine, role, name, LONG)
        barrier.wait()
        try:
            if lease.hold():
                winners.append(name)
        except BaseException as exc:  # a race must decide, never raise
            errors.append(exc)

    threads = [threading.Thread(target=contend, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return winners


def test_holders_racing_for_a_free_role_elect_exactly_one(engine: Engine) -> None:
    for round_ in range(3):
        role = f"role-{round_}"
        winners = _race(engine, role, [f"replica-{i}" for i in range(8)])
        assert len(winners) == 1
        assert LeaderLease(engine, role, winners[0], LONG).hold()


def test_holders_racing_for_a_lapsed_role_elect_exactly_one(engine: Engine) -> None:
    assert LeaderLease(engine, ROLE, "old", SHORT).hold()
    time.sleep(PAST)
    winners = _race(engine, ROLE, [f"replica-{i}" for i in range(8)])
    assert len(winners) == 1
    assert not LeaderLease(engine, ROLE, "old", LONG).hold()


def test_holders_named_after_the_longest_hostnames_fit(
    engine: Engine, jobs: JobStore, leases: LeaseStore
) -> None:
    # The names the dispatcher and the workers give themselves: host:pid:token and host:pid.
    host = "h" * 64  # HOST_NAME_MAX on Linux
    assert LeaderLease(engine, ROLE, f"{host}:4194304:deadbeef", LONG).hold()
    [lease] = leases.dispatch(_job(jobs), [0], LONG)
    assert leases.claim(lease, LONG, f"{host}:4194304")
    assert leases.renew(lease, LONG, f"{host}:4194304")


def test_a_stopping_chunk_is_marked_by_its_holder_only_and_still_counts(
    engine: Engine, jobs: JobStore, leases: LeaseStore
) -> None:
    job = _job(jobs)
    [lease] = leases.dispatch(job, [0], LONG)
    assert leases.claim(lease, LONG, "w1")
    leases.stopping(lease, "w2")  # not its holder: nothing changes
    assert _row(engine, job, 0) == (1, LeaseState.RUNNING, "w1")
    leases.stopping(lease, "w1")
    assert _row(engine, job, 0) == (1, LeaseState.STOPPING, "w1")
    assert leases.drain(job) == 1  # still held until what finished is recorded
    assert leases.renew(lease, LONG, "w1")
