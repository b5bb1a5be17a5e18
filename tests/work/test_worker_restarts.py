"""`batchvision worker` outlives Celery giving up: when the Celery worker stops on an error of its
own (kombu 5.7 fails so, restoring unacknowledged tasks, when Redis goes away under load), it is
started again in the same process, models kept; only a signal ends it. Real Celery, real Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from redis_server import RedisServer, start_redis

# The consumer's first start fails as kombu's does; SIGTERM arrives once the second one is up.
SCRIPT = textwrap.dedent(
    """
    import logging, os, signal, sys
    from celery import signals
    from celery.worker.consumer import consumer
    from batchvision.cli.worker import _run_until_asked_to_stop
    from batchvision.core.settings import Settings
    from batchvision.work.broker import celery_app

    logging.basicConfig(level="INFO", stream=sys.stderr)
    starts = []
    original = consumer.Consumer.start

    def failing_once(self):
        starts.append(1)
        if len(starts) == 1:
            raise AttributeError("'NoneType' object has no attribute 'hostname'")
        return original(self)

    consumer.Consumer.start = failing_once
    signals.worker_ready.connect(lambda **_: os.kill(os.getpid(), signal.SIGTERM), weak=False)
    _run_until_asked_to_stop(celery_app(Settings()), 1, "info")
    sys.__stderr__.write(f"consumer starts: {len(starts)}\\n")
    """
)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    server.stop()


def test_a_worker_that_celery_gave_up_on_starts_again(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHVISION_")}
    env.update(
        BATCHVISION_JOB_RUNNER="celery",
        BATCHVISION_BROKER_URL=redis_server.url,
        BATCHVISION_DATA_DIR=str(tmp_path),
    )
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )
    log = done.stderr
    assert done.returncode == 0, log
    assert "Unrecoverable error" in log
    assert "the Celery worker stopped by itself (exit 1): starting it again" in log
    assert "consumer starts: 2" in log  # started again once, then the signal ended it
