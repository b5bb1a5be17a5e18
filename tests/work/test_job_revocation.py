"""Revoking a key stops its jobs, over real HTTP against the real app: its running jobs end
`failed` with `unauthorized` within one chunk, keep the lines they finished, and bill only what
finished before the revoke; a job of a revoked key that had not started yet never runs."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from batchvision.accounts.keys import KeyStore
from batchvision.accounts.scoping import Principal
from batchvision.core.db import make_engine, migrate
from batchvision.jobs.blobs import LocalBlobs
from batchvision.jobs.chunks import input_key
from batchvision.jobs.store import JobStore
from conftest import LiveServer, coco_image, make_settings, start_server

CHUNK_LINES = 5
PARALLEL_CHUNKS = 2
JOBS, LINES = 3, 100
PHOTO = base64.b64encode(coco_image()).decode()
FINAL = ("completed", "failed", "cancelled")


def photo_lines(count: int) -> bytes:
    lines = ({"id": f"p{i}", "skill": "detect", "image": PHOTO} for i in range(count))
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def submit(client: httpx.Client, body: bytes, secret: str) -> str:
    response = client.post("/v1/jobs", content=body, headers=bearer(secret))
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def finished(job: dict[str, Any]) -> int:
    count: int = job["progress"]["completed"] + job["progress"]["failed"]
    return count


def statuses(client: httpx.Client, ids: list[str]) -> list[dict[str, Any]]:
    return [client.get(f"/v1/jobs/{job_id}").json() for job_id in ids]


def poll(client: httpx.Client, ids: list[str], until: Callable[[list[Any]], bool]) -> list[Any]:
    deadline = time.monotonic() + 120
    while not until(jobs := statuses(client, ids)):
        assert time.monotonic() < deadline, jobs
        time.sleep(0.02)
    return jobs


def result_lines(client: httpx.Client, job: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for output in job["outputs"]
        for line in client.get(output["url"]).text.splitlines()
    ]


def test_revoking_a_key_fails_its_running_jobs_within_a_chunk_and_bills_nothing_after(
    serve: Callable[..., LiveServer],
) -> None:
    live = serve(
        auth="required",
        job_chunk_lines=CHUNK_LINES,
        job_output_lines=50,
        job_parallel_chunks=PARALLEL_CHUNKS,
        job_max_lines=1000,
    )
    keys = KeyStore(make_engine(live.settings))
    admin = keys.create("admin", is_admin=True)
    user = keys.create("erin", credits=10_000)
    with live.client(headers=bearer(admin.secret)) as client:
        ids = [submit(client, photo_lines(LINES), user.secret) for _ in range(JOBS)]
        before = poll(client, ids, lambda jobs: sum(map(finished, jobs)) >= 3 * CHUNK_LINES)
        revoked = client.post(f"/v1/keys/{user.info.id}/revoke")
        asked = time.monotonic()
        after = statuses(client, ids)
        assert revoked.status_code == 200 and revoked.json()["revoked_at"], revoked.text
        done = poll(client, ids, lambda jobs: all(job["status"] in FINAL for job in jobs))
        took = time.monotonic() - asked
        outputs = [result_lines(client, job) for job in done]
    deducted = 10_000 - (keys.get(user.info.id).credits or 0)  # type: ignore[union-attr]
    usage = keys.usage(user.info.id)
    assert [job["status"] for job in done] == ["failed"] * JOBS, done
    assert {job["error"]["code"] for job in done} == {"unauthorized"}
    assert all("revoked" in job["error"]["message"] for job in done)
    # Within one chunk: after the revoke, each job finishes at most the chunks it was running.
    assert all(
        finished(end) - finished(seen) <= PARALLEL_CHUNKS * CHUNK_LINES
        for end, seen in zip(done, after, strict=True)
    ), (done, after)
    assert sum(map(finished, done)) < JOBS * LINES
    assert took < 10, took
    # Every finished line is kept, once, in order.
    for job, lines in zip(done, outputs, strict=True):
        assert len(lines) == finished(job)
        assert [line["line_index"] for line in lines] == sorted(
            {line["line_index"] for line in lines}
        )
    # Billed: what finished before the revoke (one credit a photo), nothing after it.
    assert sum(map(finished, before)) <= deducted <= sum(map(finished, after)), (before, after)
    assert sum(day["credits"] for day in usage) == deducted
    assert sum(day["images"] for day in usage) == sum(map(finished, done))


def test_a_revoked_keys_job_that_had_not_started_fails_unauthorized_on_start(
    tmp_path: Path,
) -> None:
    """A job queued when its key was revoked (here: left unstarted by a stopped server) never
    runs a line: the restarted server ends it `unauthorized` and takes no credit."""
    settings = make_settings(tmp_path, auth="required", job_chunk_lines=CHUNK_LINES)
    engine = make_engine(settings)
    migrate(engine)
    keys = KeyStore(engine)
    user = keys.create("frank", credits=100)
    admin = keys.create("admin", is_admin=True)
    job = JobStore(engine).create(Principal.of(user.info), surface="native", chunk_lines=5)
    LocalBlobs(settings.data_dir / "blobs").put_bytes(input_key(job.id), photo_lines(20))
    keys.revoke("frank")
    live = start_server(settings)
    try:
        with live.client(headers=bearer(admin.secret)) as client:
            [done] = poll(client, [job.id], lambda jobs: jobs[0]["status"] in FINAL)
    finally:
        live.stop()
    assert done["status"] == "failed"
    assert done["error"]["code"] == "unauthorized"
    assert finished(done) == 0
    assert keys.get(user.info.id).credits == 100  # type: ignore[union-attr]
    assert sum(day["credits"] for day in keys.usage(user.info.id)) == 0
    engine.dispose()
