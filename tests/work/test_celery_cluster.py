"""The Celery runner for real: two API replicas and two workers over PostgreSQL, Redis and an S3
server, every one a process a test kills with SIGKILL (tests/work/cluster.py).

Each job's results are checked line by line: every line exactly once, in order, the failed ones
where the input put them; and its owner billed exactly once per image."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cluster import Cluster, restart_redis, running_cluster, wait_for
from PIL import Image

from batchvision.accounts.keys import KeyStore
from conftest import coco_image

JOB_TIMEOUT_S = 240.0
BAD_EVERY = 37  # every 37th line carries an image that cannot be decoded


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as running:
        running.start_api("a")  # first up: the dispatcher until it is killed
        running.start_api("b")
        running.start_worker("w1")
        running.start_worker("w2")
        yield running


def _small_photo() -> str:
    """A COCO photo at 320 px: detections still, at a fraction of the decode cost."""
    image = Image.open(io.BytesIO(coco_image()))
    image.thumbnail((320, 320))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return base64.b64encode(buffer.getvalue()).decode()


def _job_file(lines: int) -> bytes:
    photo = _small_photo()
    rows = [
        {"id": f"r{i}", "skill": "detect", "image": "bad!" if i % BAD_EVERY == 5 else photo}
        for i in range(lines)
    ]
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def _bad_lines(lines: int) -> list[int]:
    return [i for i in range(lines) if i % BAD_EVERY == 5]


def _key(cluster: Cluster, name: str, **limits: Any) -> tuple[int, dict[str, str]]:
    new = KeyStore(cluster.engine).create(name, **limits)
    return new.info.id, {"Authorization": f"Bearer {new.secret}"}


def _submit(url: str, headers: dict[str, str], lines: int) -> str:
    response = httpx.post(f"{url}/v1/jobs", content=_job_file(lines), headers=headers, timeout=60)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def _progress(url: str, job_id: str, headers: dict[str, str]) -> dict[str, int]:
    job = httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers, timeout=10).json()
    progress: dict[str, int] = job["progress"]
    return progress


def _wait_progress(url: str, job_id: str, headers: dict[str, str], at_least: int) -> int:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while (done := _progress(url, job_id, headers)["completed"]) < at_least:
        assert time.monotonic() < deadline, f"the job stalled at {done} lines"
        time.sleep(0.1)
    return done


def _result_lines(job: dict[str, Any]) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for output in job["outputs"]:
        response = httpx.get(output["url"], timeout=30)
        assert response.status_code == 200, response.text
        lines += [json.loads(line) for line in response.text.splitlines()]
    return lines


def _check_every_line_once(job: dict[str, Any], lines: int) -> None:
    assert job["status"] == "completed", job
    bad = _bad_lines(lines)
    assert job["progress"] == {"total": lines, "completed": lines - len(bad), "failed": len(bad)}
    results = _result_lines(job)
    assert [line["line_index"] for line in results] == list(range(lines))
    assert [line["id"] for line in results] == [f"r{i}" for i in range(lines)]
    assert [line["line_index"] for line in results if line["status"] == "error"] == bad
    assert all(line["result"]["objects"] for line in results if line["status"] == "ok")


def _credits_left(cluster: Cluster, key_id: int) -> int | None:
    info = KeyStore(cluster.engine).get(key_id)
    assert info is not None
    return info.credits


def _wait_running_chunk(cluster: Cluster, worker_name: str) -> None:
    worker = cluster.workers[worker_name]
    deadline = time.monotonic() + 60
    while cluster.running_leases(worker) == 0:
        assert time.monotonic() < deadline, (
            f"{worker_name} ran no chunk: {cluster.describe_leases()}"
        )
        time.sleep(0.02)


def test_a_job_sent_to_one_replica_is_followed_and_read_on_the_other(cluster: Cluster) -> None:
    lines = 600
    _, headers = _key(cluster, "replicas")
    a, b = cluster.apis["a"].url, cluster.apis["b"].url
    job_id = _submit(a, headers, lines)
    seen = [_wait_progress(b, job_id, headers, 1)]
    job = wait_for(b, job_id, headers, JOB_TIMEOUT_S)
    _check_every_line_once(job, lines)
    assert len(job["outputs"]) == 3  # 200 lines a file
    assert all(output["url"].startswith(b) for output in job["outputs"])
    assert seen[0] < lines, "replica B saw the job only once it had ended"
    assert len(cluster.result_keys(job_id)) == lines // 10  # one ledger row a chunk


def test_workers_killed_mid_chunk_lose_nothing_and_bill_once(cluster: Cluster) -> None:
    lines = 400
    key_id, headers = _key(cluster, "killed workers", credits=10_000)
    url = cluster.apis["b"].url
    job_id = _submit(url, headers, lines)
    for victim in ("w1", "w2"):
        _wait_running_chunk(cluster, victim)
        cluster.workers[victim].kill()
        cluster.start_worker(victim)
    job = wait_for(url, job_id, headers, JOB_TIMEOUT_S)
    _check_every_line_once(job, lines)
    images = lines - len(_bad_lines(lines))
    assert _credits_left(cluster, key_id) == 10_000 - images
    resent = [key for key in cluster.result_keys(job_id) if not key.endswith(".1.jsonl")]
    assert resent, "no chunk was sent again: the kills hit no running chunk"


def test_redis_restarting_mid_job_loses_no_chunk(cluster: Cluster) -> None:
    lines = 300
    _, headers = _key(cluster, "broker restart")
    url = cluster.apis["a"].url
    job_id = _submit(url, headers, lines)
    before = _wait_progress(url, job_id, headers, 30)
    restart_redis(cluster.redis, down_s=2.0)
    job = wait_for(url, job_id, headers, JOB_TIMEOUT_S)
    assert before < lines, "the job ended before the broker went away"
    _check_every_line_once(job, lines)
    # Both workers came back to the broker: each runs chunks of the next job.
    next_job = _submit(url, headers, 300)
    for name in ("w1", "w2"):
        _wait_running_chunk(cluster, name)
    _check_every_line_once(wait_for(url, next_job, headers, JOB_TIMEOUT_S), 300)


def test_a_cancel_reaches_running_chunks_within_a_second(cluster: Cluster) -> None:
    _, headers = _key(cluster, "cancel")
    a, b = cluster.apis["a"].url, cluster.apis["b"].url
    job_id = _submit(a, headers, 600)
    _wait_progress(a, job_id, headers, 20)
    response = httpx.post(f"{b}/v1/jobs/{job_id}/cancel", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    cancelled_at = time.monotonic()
    # Reached: each worker stopped its lines (the lease says `stopping` until what finished is
    # recorded, then goes).
    while cluster.running_leases_of(job_id):
        assert time.monotonic() - cancelled_at < 1.0, (
            f"running chunks went on after the cancel: {cluster.describe_leases()}"
        )
        time.sleep(0.02)
    job = wait_for(a, job_id, headers, 10)
    assert job["status"] == "cancelled"
    progress = job["progress"]
    indexes = [line["line_index"] for line in _result_lines(job)]
    assert len(indexes) == len(set(indexes)) == progress["completed"] + progress["failed"]
    assert len(indexes) < 600


def test_one_rate_limit_across_both_replicas(cluster: Cluster) -> None:
    _, headers = _key(cluster, "limited", requests_per_minute=6)
    body = {"images": [{"data": _small_photo()}], "tasks": ["metadata"]}
    statuses = []
    for i in range(12):
        url = cluster.apis["a" if i % 2 else "b"].url
        response = httpx.post(f"{url}/v1/analyze", json=body, headers=headers, timeout=30)
        statuses.append(response.status_code)
    assert statuses.count(200) == 6, statuses
    assert statuses.count(429) == 6, statuses


def test_killing_the_dispatching_replica_hands_its_jobs_to_the_other(cluster: Cluster) -> None:
    lines = 300
    _, headers = _key(cluster, "replica killed")
    a, b = cluster.apis["a"].url, cluster.apis["b"].url
    job_id = _submit(a, headers, lines)
    cluster.apis["a"].kill()
    job = wait_for(b, job_id, headers, JOB_TIMEOUT_S)
    _check_every_line_once(job, lines)
