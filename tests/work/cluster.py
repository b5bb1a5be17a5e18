"""A scale-out deployment for tests, every part real and on 127.0.0.1: PostgreSQL, Redis (the
Celery broker and the rate-limit store), moto's S3 server, API replicas (`batchvision serve`
with job_runner=celery) and Celery workers (`batchvision worker`), as subprocesses that a test
may kill with SIGKILL and start again."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, create_engine, text

from conftest import MODELS, PULLED_MODELS, ServerProcess, spawn_server
from pg_server import running_postgres
from redis_server import RedisServer, start_redis
from s3_server import new_bucket, s3_server

WORKER_READY_S = 90.0
# Short leases, so a killed worker's chunks go out again within seconds (defaults: 30 s, 300 s).
SETTINGS = {
    "job_runner": "celery",
    "rate_limit_store": "redis",
    "blob_store": "s3",
    "s3_region": "us-east-1",
    "auth": "required",
    "job_chunk_lines": "10",
    "job_output_lines": "200",
    "job_parallel_chunks": "4",
    "job_chunks_in_flight": "8",
    "job_lease_s": "3",
    "job_queue_lease_s": "6",
    "job_lines_in_flight": "16",
}


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[str]

    def kill(self) -> None:
        """SIGKILL to the worker and anything it started, like a machine losing power."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=15)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Cluster:
    root: Path
    settings: dict[str, str]
    redis: RedisServer
    engine: Engine
    apis: dict[str, ServerProcess] = field(default_factory=dict)
    workers: dict[str, Worker] = field(default_factory=dict)

    def start_api(self, name: str, port: int | None = None) -> ServerProcess:
        server = spawn_server(self.root / name, port=port, **self.settings)
        server.wait_ready()
        self.apis[name] = server
        return server

    def start_worker(self, name: str) -> Worker:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHVISION_")}
        env.update({f"BATCHVISION_{k.upper()}": v for k, v in self.settings.items()})
        env.update(
            BATCHVISION_MODEL_DIRS=os.pathsep.join(map(str, (MODELS, PULLED_MODELS))),
            BATCHVISION_DATA_DIR=str(self.root / name),
        )
        log = (self.root / f"{name}.log").open("a")
        process = subprocess.Popen(
            [sys.executable, "-m", "batchvision.cli", "worker", "--concurrency", "2"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, so kill() reaches all of it
        )
        worker = Worker(name, process)
        self.workers[name] = worker
        self._wait_connected(worker)
        return worker

    def _wait_connected(self, worker: Worker) -> None:
        deadline = time.monotonic() + WORKER_READY_S
        log = self.root / f"{worker.name}.log"
        while "ready." not in log.read_text(errors="replace"):
            if worker.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {worker.name} did not start: {log.read_text()}")
            time.sleep(0.2)

    def running_leases(self, worker: Worker) -> int:
        with self.engine.connect() as connection:
            count = connection.scalar(
                text(
                    "SELECT count(*) FROM chunk_leases WHERE state = 'running' AND holder LIKE :h"
                ),
                {"h": f"%:{worker.process.pid}"},
            )
        return int(count or 0)

    def running_leases_of(self, job_id: str) -> int:
        with self.engine.connect() as connection:
            count = connection.scalar(
                text("SELECT count(*) FROM chunk_leases WHERE state = 'running' AND job_id = :j"),
                {"j": job_id},
            )
        return int(count or 0)

    def describe_leases(self) -> str:
        """The lease table and the workers' pids, for a failure message."""
        with self.engine.connect() as connection:
            rows = connection.execute(text("SELECT * FROM chunk_leases")).all()
        pids = {name: worker.process.pid for name, worker in self.workers.items()}
        return f"leases {[tuple(row) for row in rows]}, workers {pids}"

    def result_keys(self, job_id: str) -> list[str]:
        with self.engine.connect() as connection:
            rows = connection.scalars(
                text("SELECT result_key FROM job_chunks WHERE job_id = :j ORDER BY index"),
                {"j": job_id},
            )
            return list(rows)

    def stop(self) -> None:
        for worker in self.workers.values():
            worker.stop()
        for server in self.apis.values():
            server.stop()


@contextmanager
def running_cluster(root: Path) -> Iterator[Cluster]:
    """The shared services; the test starts the replicas and workers it needs."""
    with ExitStack() as stack:
        postgres = stack.enter_context(running_postgres())
        database_url = postgres.create_database("cluster")
        redis = start_redis()
        stack.callback(redis.stop)
        endpoint = stack.enter_context(s3_server())
        settings = {
            **SETTINGS,
            "database_url": database_url,
            "broker_url": redis.url,
            "s3_endpoint_url": endpoint,
            "s3_bucket": new_bucket(endpoint),
            "url_signing_secret": secrets.token_hex(32),
        }
        engine = create_engine(database_url)
        stack.callback(engine.dispose)
        cluster = Cluster(root, settings, redis, engine)
        stack.callback(cluster.stop)
        yield cluster


def restart_redis(redis: RedisServer, down_s: float) -> None:
    """Stop the broker (its queued messages are lost: no persistence), start it again."""
    redis.stop()
    time.sleep(down_s)
    redis.start()


def wait_for(url: str, job_id: str, headers: dict[str, str], timeout_s: float) -> dict[str, Any]:
    """Poll until the job ends; its final status."""
    deadline = time.monotonic() + timeout_s
    while True:
        job: dict[str, Any] = httpx.get(
            f"{url}/v1/jobs/{job_id}", headers=headers, timeout=10
        ).json()
        if job["status"] not in ("chunking", "processing"):
            return job
        assert time.monotonic() < deadline, f"job still {job['status']}: {job['progress']}"
        time.sleep(0.2)
