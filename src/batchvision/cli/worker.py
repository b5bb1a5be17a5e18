"""`batchvision worker`: a Celery worker running job chunks for API replicas with
`job_runner=celery` (work/worker.py; README "Scale-out")."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Annotated, Any

import typer

from batchvision.cli.exits import CliError, ExitStatus, reported
from batchvision.cli.options import DataDir, ModelDirs, build_settings
from batchvision.cli.serve import LogLevel
from batchvision.core.settings import Settings

log = logging.getLogger(__name__)

RESTART_PAUSE_S = 1.0


def worker(
    concurrency: Annotated[
        int,
        typer.Option(
            min=1, metavar="N", help="chunks at once; they share one set of models (default 2)"
        ),
    ] = 2,
    model_dir: ModelDirs = None,
    data_dir: DataDir = None,
    log_level: Annotated[
        LogLevel, typer.Option(case_sensitive=False, help="how much the worker logs")
    ] = LogLevel.INFO,
) -> None:
    """Run job chunks sent through the broker (BATCHVISION_BROKER_URL)."""
    with reported():
        settings = build_settings(model_dirs=model_dir, data_dir=data_dir)
        if not settings.broker_url:
            raise CliError(
                "a worker needs the broker: set BATCHVISION_BROKER_URL, e.g. "
                "redis://127.0.0.1:6379/0",
                ExitStatus.USAGE,
            )
        from batchvision.work.broker import require_celery

        try:
            require_celery()
        except RuntimeError as exc:
            raise CliError(str(exc), ExitStatus.USAGE) from None
    logging.basicConfig(
        level=log_level.value.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if log_level.lower() != "debug":
        # A line per migration at every start, and two per task, bury what matters.
        for name in ("alembic", "celery.app.trace", "celery.worker.strategy"):
            logging.getLogger(name).setLevel(logging.WARNING)
    run_worker(settings, concurrency, log_level.value)


def run_worker(settings: Settings, concurrency: int, log_level: str) -> None:
    from batchvision.api.app import job_surfaces
    from batchvision.core.db import open_database
    from batchvision.jobs.blobs import make_blobs
    from batchvision.jobs.store import JobStore
    from batchvision.pipeline import Pipeline
    from batchvision.work.broker import celery_app
    from batchvision.work.chunks import ChunkWork
    from batchvision.work.worker import ChunkWorker, register_chunk_task

    database = open_database(settings)

    async def make_work() -> ChunkWork:
        # On the worker's event loop: the pipeline's batchers belong to it.
        pipeline = Pipeline(settings)
        store, blobs = JobStore(database), make_blobs(settings)
        return ChunkWork.from_settings(settings, store, blobs, pipeline, job_surfaces())

    chunks = ChunkWorker(settings, make_work)
    app = celery_app(settings)
    register_chunk_task(app, lambda: chunks)
    try:
        _run_until_asked_to_stop(app, concurrency, log_level)
    finally:
        chunks.close()
        database.dispose()


def _run_until_asked_to_stop(app: Any, concurrency: int, log_level: str) -> None:
    """Run the Celery worker; start it again, models still loaded, if it stops on its own.

    Celery gives up on "unrecoverable" errors, some of them its own: with a task unacknowledged
    when Redis goes away, kombu 5.7 fails restoring it on the closed connection. A worker must
    outlive a broker restart, so only a signal (SIGTERM, SIGINT) ends this loop."""
    from celery import signals

    from batchvision.work.broker import QUEUE

    asked = threading.Event()
    signals.worker_shutting_down.connect(lambda **_: asked.set(), weak=False)
    while True:
        celery_worker = app.Worker(
            pool_cls="threads",
            concurrency=concurrency,
            loglevel=log_level.upper(),
            queues=[QUEUE],
            # One node name per process, so that Celery's inspect/control tell workers apart.
            hostname=f"batchvision-{os.getpid()}@{socket.gethostname()}",
            without_gossip=True,  # no worker-to-worker chatter: the database coordinates
            without_mingle=True,
        )
        celery_worker.start()
        if asked.is_set():
            return
        log.warning(
            "the Celery worker stopped by itself (exit %s): starting it again",
            celery_worker.exitcode,
        )
        time.sleep(RESTART_PAUSE_S)
