"""One tick of the Celery dispatcher (`CeleryRunner._tick`) on a real SQLite store and a real
Redis broker: which chunks it leases and sends, given the jobs and the leases already out.
No worker runs here; a claimed lease stands for a chunk a worker is running."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from batchvision.accounts.keys import KeyStore
from batchvision.accounts.scoping import Principal
from batchvision.core.db import make_engine, migrate
from batchvision.jobs.leases import LeaderLease, LeaseStore
from batchvision.pipeline import Pipeline
from batchvision.work.broker import QUEUE
from batchvision.work.dispatch import LEADER_TTL_S, ROLE, CeleryRunner
from batchvision.work.service import JobService
from conftest import make_settings
from redis_server import RedisServer, start_redis

CHUNK_LINES = 10


@pytest.fixture(scope="module")
def broker() -> Iterator[RedisServer]:
    server = start_redis()
    try:
        yield server
    finally:
        server.stop()


class Cluster:
    """The store, the broker and one API replica's dispatcher (not started: ticked by hand)."""

    def __init__(self, tmp_path: Path, broker: RedisServer, **settings: Any) -> None:
        self.settings = make_settings(
            tmp_path, job_runner="celery", broker_url=broker.url, **settings
        )
        self.engine = make_engine(self.settings)
        migrate(self.engine)
        self.service = JobService(self.settings, self.engine, Pipeline(self.settings), {})
        assert isinstance(self.service.runner, CeleryRunner)
        self.runner = self.service.runner
        self.store = self.service.store
        self.leases = LeaseStore(self.engine)
        self.keys = KeyStore(self.engine)
        self.broker = redis.Redis.from_url(broker.url)
        self.broker.flushdb()

    def job(self, owner: str, chunks: int) -> str:
        principal = Principal.of(self.keys.create(owner).info)
        job = self.store.create(principal, surface="native", chunk_lines=CHUNK_LINES)
        self.store.start(job.id, input_key=f"in/{job.id}", total_lines=chunks * CHUNK_LINES)
        return job.id

    def running(self, job_id: str, index: int) -> None:
        """A worker holds the chunk."""
        [lease] = self.leases.dispatch(job_id, [index], 60)
        assert self.leases.claim(lease, 60, "worker-1")

    def tick(self) -> None:
        asyncio.run(self.runner._tick())

    def sent(self) -> int:
        return int(self.broker.llen(QUEUE))

    def close(self) -> None:
        asyncio.run(self.service.close())
        self.broker.close()
        self.engine.dispose()


@pytest.fixture
def cluster(tmp_path: Path, broker: RedisServer) -> Iterator[Any]:
    made: list[Cluster] = []

    def make(**settings: Any) -> Cluster:
        made.append(Cluster(tmp_path, broker, **settings))
        return made[-1]

    yield make
    for one in made:
        one.close()


def test_a_tick_sends_one_chunk_per_key_in_turn_within_the_capacity(cluster: Any) -> None:
    c = cluster(job_chunks_in_flight=3, job_parallel_chunks=2)
    first, second = c.job("alice", 4), c.job("bob", 4)
    c.tick()
    assert c.leases.leased_indexes(first) == {0, 1}
    assert c.leases.leased_indexes(second) == {0}
    assert c.sent() == 3
    c.tick()  # nothing free: nothing more
    assert c.leases.in_flight() == {first: 2, second: 1}
    assert c.sent() == 3


def test_a_replica_that_does_not_lead_sends_nothing(cluster: Any) -> None:
    c = cluster()
    job = c.job("alice", 2)
    assert LeaderLease(c.engine, ROLE, "another-replica", LEADER_TTL_S).hold()
    c.tick()
    assert c.leases.leased_indexes(job) == set()
    assert c.sent() == 0


def test_a_job_with_every_chunk_out_leaves_the_free_slots_to_the_others(cluster: Any) -> None:
    # The older job's last chunk runs: it has room under job_parallel_chunks but nothing left to
    # send. Were its room parallel - in flight, it would take the one free slot every tick (its
    # key's turn comes first) and waste it, and the newer job would wait for the older one.
    c = cluster(job_chunks_in_flight=2, job_parallel_chunks=2)
    older = c.job("alice", 1)
    c.running(older, 0)
    newer = c.job("bob", 3)
    for _ in range(3):
        c.tick()
    assert c.leases.leased_indexes(newer) == {0}
    assert c.sent() == 1
