"""The Celery application both sides share: API replicas send chunk tasks, `batchvision worker`
runs them (`work/worker.py`). One task, `run_chunk(job_id, index, attempt)`; its whole state is
in the database (the chunk's lease and the ledger), so a task may be lost, redelivered or run
twice without changing a job's results (see `jobs/leases.py`).

Settings chosen for model work: a worker takes one message per free slot (prefetch multiplier
1), acknowledges a task only once it ran (`acks_late`; `reject_on_worker_lost` requeues one whose
process died), and the broker redelivers an unacknowledged task after
`job_visibility_timeout_s`, longer than the longest chunk (the reaper re-sends a chunk whose
worker died long before that, from its lease).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from batchvision.core.settings import Settings
from batchvision.jobs.leases import Lease

if TYPE_CHECKING:
    from celery import Celery

RUN_CHUNK = "batchvision.run_chunk"
QUEUE = "batchvision-chunks"
INSTALL_HINT = "BATCHVISION_JOB_RUNNER=celery needs Celery: pip install 'batchvision[celery]'"
# A send while the broker is away fails fast: the dispatcher tries again on a later tick.
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2}


def require_celery() -> None:
    """Fail at start-up, not inside a request, when the extra is missing."""
    try:
        import celery  # noqa: F401
        import redis  # noqa: F401
    except ImportError:
        raise RuntimeError(INSTALL_HINT) from None


def celery_app(settings: Settings) -> Celery:
    require_celery()
    from celery import Celery

    assert settings.broker_url is not None  # Settings requires it with the celery runner
    app = Celery("batchvision", broker=settings.broker_url)
    app.conf.update(_config(settings))
    return app


def _config(settings: Settings) -> dict[str, Any]:
    return {
        "task_default_queue": QUEUE,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,  # results live in the ledger, never in the broker
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": {"visibility_timeout": settings.job_visibility_timeout_s},
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # a worker waits out a broker restart
        "task_publish_retry_policy": PUBLISH_RETRY,
        "worker_hijack_root_logger": False,
    }


def send_chunk(app: Celery, lease: Lease) -> None:
    """Put the chunk's task on the broker (blocking; raises when the broker is unreachable)."""
    app.send_task(RUN_CHUNK, args=[lease.job_id, lease.index, lease.attempt], queue=QUEUE)
