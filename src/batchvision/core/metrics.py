"""Prometheus metrics: every definition in one place, low in the layers, so that the api, the
engine, the models, the jobs and the accounts all record into it with one line each.

Values live in the process (prometheus_client's default registry). When several server
processes run on one machine, set `PROMETHEUS_MULTIPROC_DIR` to an empty directory before they
start: prometheus_client then keeps each process's values in files there (it decides when it is
first imported, hence an environment variable and not a setting), and `render` merges the
directory, so whichever process answers `/metrics` reports them all. Counters and histograms
add up across processes; the gauges of things in progress are `livesum` (the sum over
processes still alive: a process manager calls `prometheus_client.multiprocess.
mark_process_dead(pid)` when one exits).

Label values are bounded: routes are templates, models and backends are installed cards, skills
and reasons are fixed sets.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # what generate_latest writes
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The directory prometheus_client keeps every process's values in, when it is set."""
    return os.environ.get(MULTIPROC_ENV) or None


def _check_multiprocess_dir() -> None:
    """prometheus_client writes there as soon as the first metric below is made; a directory
    that is not there would fail with a bare FileNotFoundError from deep inside it."""
    directory = multiprocess_dir()
    if directory is not None and not os.path.isdir(directory):
        raise RuntimeError(
            f"{MULTIPROC_ENV}={directory} is not a directory: create it (empty) before starting "
            "batchvision, or unset it"
        )


_check_multiprocess_dir()
# A `_created` timestamp beside every counter and histogram doubles the series in the text
# format for nothing Prometheus needs (it detects counter resets itself).
disable_created_metrics()  # type: ignore[no-untyped-call]

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_SHORT_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_REMOTE_SECONDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

# HTTP (api/app.py)
HTTP_REQUESTS = Counter(
    "batchvision_http_requests",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "batchvision_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response, by method and route template",
    ["method", "route"],
    buckets=_SECONDS,
)

# Skills (pipeline.py)
SKILL_IMAGES = Counter(
    "batchvision_skill_images",
    "Images a skill was run on, by skill and outcome (ok or error)",
    ["skill", "outcome"],
)

# Engine (engine/)
BATCH_SIZE = Histogram(
    "batchvision_model_batch_size",
    "Items in each batch a model ran, by model",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
INFERENCE_SECONDS = Histogram(
    "batchvision_model_inference_duration_seconds",
    "Time a model took over one batch, by model",
    ["model"],
    buckets=_SECONDS,
)
BATCHER_WAIT_SECONDS = Histogram(
    "batchvision_batcher_wait_seconds",
    "Time an item waited in a model's batcher before its batch started, by model",
    ["model"],
    buckets=_SHORT_SECONDS,
)
IMAGES_IN_FLIGHT = Gauge(
    "batchvision_images_in_flight",
    "Images admitted and not yet done (the queue that max_queued_images bounds)",
    multiprocess_mode="livesum",
)
MODEL_QUEUED = Gauge(
    "batchvision_model_queued_images",
    "Images queued or in flight at a model whose queue is bounded (vision-language backends)",
    ["model"],
    multiprocess_mode="livesum",
)
ADMISSION_REFUSALS = Counter(
    "batchvision_admission_refusals",
    "Work refused as overloaded (503 or an item's overloaded error), by the limit that was full:"
    " images_in_flight, model_queue or decoded_budget",
    ["reason"],
)
DECODED_BYTES_IN_USE = Gauge(
    "batchvision_decoded_bytes_in_use",
    "Bytes of the server's decoded-pixel budget (max_decoded_mb) reserved now",
    multiprocess_mode="livesum",
)
DECODED_BYTES_CAPACITY = Gauge(
    "batchvision_decoded_bytes_capacity",
    "Size of the server's decoded-pixel budget (max_decoded_mb)",
    multiprocess_mode="livesum",
)

# Vision-language backends (models/vlm/transport.py)
VLM_CALLS = Counter(
    "batchvision_vlm_calls", "Calls made to a vision-language backend, by backend", ["backend"]
)
VLM_SECONDS = Histogram(
    "batchvision_vlm_request_duration_seconds",
    "Time one HTTP attempt to a vision-language backend took, failed ones included, by backend",
    ["backend"],
    buckets=_REMOTE_SECONDS,
)
VLM_RETRIES = Counter(
    "batchvision_vlm_retries",
    "Attempts repeated after a transient failure, by backend",
    ["backend"],
)
VLM_ERRORS = Counter(
    "batchvision_vlm_errors",
    "Calls to a vision-language backend that failed, by backend and reason: retries_exhausted,"
    " circuit_open, bad_answer or stream_broken",
    ["backend", "reason"],
)

# Jobs and accounts (jobs/store.py, accounts/)
JOB_LINES = Counter(
    "batchvision_job_lines",
    "Job lines finished and recorded, by status (ok or error); rate() gives lines per second",
    ["status"],
)
CREDITS_CHARGED = Counter(
    "batchvision_credits_charged",
    "Credits taken from keys' balances, by source (request or job)",
    ["source"],
)
RATE_LIMIT_REFUSALS = Counter(
    "batchvision_rate_limit_refusals",
    "Requests refused by a key's rate limit, by kind (requests or images) and reason"
    " (rate_limited: retry later; exceeds_limit: larger than the limit itself)",
    ["kind", "reason"],
)


def render(collected_now: Iterable[Collector] = ()) -> bytes:
    """The text exposition: this process's metrics (every process's, in multiprocess mode),
    then those of `collected_now`, which read shared state at scrape time (job counts from the
    database: one reading, never summed over processes)."""
    directory = multiprocess_dir()
    if directory is None:
        recorded = generate_latest(REGISTRY)
    else:
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=directory)  # type: ignore[no-untyped-call]
        recorded = generate_latest(merged)
    extra = CollectorRegistry()
    for collector in collected_now:
        extra.register(collector)
    return recorded + generate_latest(extra)
