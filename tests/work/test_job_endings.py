"""How jobs end, over real HTTP against the real app: the final state is visible only once the
job's work files are gone (and a crash between the two steps still finishes the job on restart),
and a file whose every line is invalid ends `empty_batch` on Moondream's `/v1/batch` while a
native job completes with every line failed."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from batchvision.accounts.scoping import Principal
from batchvision.core.db import make_engine, migrate
from batchvision.core.errors import ErrorCode
from batchvision.jobs.blobs import LocalBlobs
from batchvision.jobs.chunks import chunk_key, input_key, write_index
from batchvision.jobs.store import ChunkResult, JobStore
from batchvision.jobs.tables import JobState
from batchvision.work.service import JobService
from conftest import LiveServer, coco_image, make_settings, start_server

SMALL = {"job_chunk_lines": 2, "job_output_lines": 4}
FINAL = ("completed", "failed", "cancelled", "expired")
PHOTO = base64.b64encode(coco_image()).decode()


def tiny_png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), "red").save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def service(live: LiveServer) -> JobService:
    jobs: JobService = live.server.config.app.state.services.jobs  # type: ignore[attr-defined]
    return jobs


def work_files(live: LiveServer, job_id: str) -> list[str]:
    """The job's blobs other than its result files."""
    blobs = LocalBlobs(live.settings.data_dir / "blobs")
    return [b.key for b in blobs.list_prefix(f"jobs/{job_id}/") if "/outputs/" not in b.key]


def native_submit(client: httpx.Client, body: bytes) -> str:
    response = client.post("/v1/jobs", content=body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def poll(client: httpx.Client, path: str, until: Callable[[dict[str, Any]], bool]) -> Any:
    deadline = time.monotonic() + 60
    while not until(status := client.get(path).json()):
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    return status


def result_lines(client: httpx.Client, status: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for output in status["outputs"]
        for line in client.get(output["url"]).text.splitlines()
    ]


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    server = start_server(make_settings(tmp_path, **SMALL))
    yield server
    server.stop()


# --- the final state comes after the clean-up ---------------------------------------------------


def test_the_final_state_is_committed_only_after_the_work_files_are_deleted(
    live: LiveServer,
) -> None:
    """In-process: at the very moment each job's final state is committed, its input, index and
    chunk blobs are already gone (a spy on the store's `finish`, the real one still runs)."""
    store = service(live).store
    real_finish = store.finish
    left_at_finish: dict[str, list[str]] = {}

    def finish(job_id: str) -> bool:
        left_at_finish[job_id] = work_files(live, job_id)
        return real_finish(job_id)

    store.finish = finish  # type: ignore[method-assign]
    try:
        with live.client() as client:
            ids = [
                native_submit(client, jsonl([{"skill": "metadata", "image": tiny_png()}] * n))
                for n in (1, 3, 5, 8)
            ]
            for job_id in ids:
                poll(client, f"/v1/jobs/{job_id}", lambda s: s["status"] in FINAL)
    finally:
        del store.finish
    assert sorted(left_at_finish) == sorted(ids)
    assert all(left == [] for left in left_at_finish.values()), left_at_finish


def test_a_client_that_sees_a_final_state_never_sees_the_input(live: LiveServer) -> None:
    """Over HTTP: poll tightly; every time a job reads final, its work files are gone."""
    body = jsonl([{"skill": "metadata", "image": tiny_png()}] * 3)
    finals = 0
    with live.client() as client:
        for _ in range(12):
            job_id = native_submit(client, body)
            deadline = time.monotonic() + 60
            while client.get(f"/v1/jobs/{job_id}").json()["status"] not in FINAL:
                assert time.monotonic() < deadline
            assert work_files(live, job_id) == [], job_id
            finals += 1
            assert client.get(f"/v1/jobs/{job_id}/results").text.count("\n") == 3
    assert finals == 12


def _crashed_while_ending(tmp_path: Path, *, assembled: bool) -> tuple[Any, str]:
    """The store and blobs a server leaves when killed inside `_end`: two chunks recorded, the
    end decided (cancelled); either the outputs were not assembled yet, or they were and the
    work files are already deleted. Built with the job machinery's own store and blob calls."""
    settings = make_settings(tmp_path, **SMALL)
    engine = make_engine(settings)
    migrate(engine)
    store, blobs = JobStore(engine), LocalBlobs(settings.data_dir / "blobs")
    job = store.create(Principal.anonymous(), surface="native", chunk_lines=2)
    lines = [{"line_index": i, "id": f"l{i}", "status": "ok", "result": {}} for i in range(4)]
    blobs.put_bytes(input_key(job.id), jsonl([{"skill": "metadata"}] * 6))
    write_index(blobs, job.id, 2, [0, 44, 88])
    store.start(job.id, input_key=input_key(job.id), total_lines=6)
    for index in (0, 1):
        blobs.put_bytes(chunk_key(job.id, index), jsonl(lines[2 * index : 2 * index + 2]))
        chunk = ChunkResult(index, 2 * index, 2, 2, 0, 0, chunk_key(job.id, index))
        assert store.record_chunk(job.id, chunk)
    store.decide_end(job.id, JobState.CANCELLED, error_message="cancelled by the client")
    if assembled:
        blobs.concat(
            f"jobs/{job.id}/outputs/00000.jsonl", [chunk_key(job.id, 0), chunk_key(job.id, 1)]
        )
        store.set_outputs(job.id, 1)
        blobs.delete(input_key(job.id))
        blobs.delete_prefix(f"jobs/{job.id}/chunks/")  # the index is still there
    engine.dispose()
    return settings, job.id


@pytest.mark.parametrize("assembled", [False, True], ids=["before-outputs", "after-deletions"])
def test_a_crash_inside_the_end_finishes_the_job_as_decided_on_restart(
    tmp_path: Path, assembled: bool
) -> None:
    settings, job_id = _crashed_while_ending(tmp_path, assembled=assembled)
    live = start_server(settings)
    try:
        with live.client() as client:
            status = poll(client, f"/v1/jobs/{job_id}", lambda s: s["status"] in FINAL)
            lines = result_lines(client, status)
        left = work_files(live, job_id)
    finally:
        live.stop()
    assert status["status"] == "cancelled"
    assert status["progress"] == {"total": 6, "completed": 4, "failed": 0}
    assert [line["id"] for line in lines] == ["l0", "l1", "l2", "l3"]
    assert left == []


# --- a file of invalid lines ----------------------------------------------------------------------

# Each refused for what it says, before any inference: unknown skill, bad base64, a missing field,
# bytes that are no image (refused by the image intake).
INVALID = [
    {"id": "a", "skill": "segment", "image": PHOTO},
    {"id": "b", "skill": "detect", "image": "@@not*base64@@", "object": "person"},
    {"id": "c", "skill": "detect", "image": PHOTO},
    {
        "id": "d",
        "skill": "detect",
        "image": base64.b64encode(b"not an image").decode(),
        "object": "tv",
    },
    {"id": "e", "skill": "point"},
]


def moondream_batch(client: httpx.Client, body: bytes) -> dict[str, Any]:
    """Moondream's flow: mpu-create, one part, mpu-complete, then poll to the end."""
    created = client.post("/v1/batch?action=mpu-create").json()
    file_id, upload_id = created["fileId"], created["uploadId"]
    part = client.put(
        f"/v1/batch/{file_id}?action=mpu-uploadpart&uploadId={upload_id}&partNumber=1",
        content=body,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert part.status_code == 200, part.text
    done = client.post(
        f"/v1/batch/{file_id}?action=mpu-complete&uploadId={upload_id}",
        json={"parts": [{"partNumber": 1, "etag": part.json()["etag"]}]},
    )
    assert done.status_code == 200, done.text
    path = f"/v1/batch/{done.json()['id']}"
    return poll(client, path, lambda s: s["status"] in ("completed", "failed"))


def test_a_moondream_file_of_only_invalid_lines_fails_empty_batch(live: LiveServer) -> None:
    with live.client() as client:
        status = moondream_batch(client, jsonl(INVALID))
        lines = result_lines(client, status)
    assert status["status"] == "failed"
    assert status["error"]["code"] == "empty_batch"
    assert "no valid lines" in status["error"]["message"].lower()
    assert status["progress"] == {"total": 5, "completed": 0, "failed": 5}
    # The result files stay: each line says why it was refused.
    assert [line["error"]["code"] for line in lines] == [
        "unknown_skill",
        "image_decode_failed",
        "invalid_request",
        "image_decode_failed",
        "invalid_request",
    ]


def test_one_line_that_failed_in_processing_is_a_valid_line(live: LiveServer) -> None:
    # A caption line is a valid Moondream request this server cannot run (no VLM): the batch
    # completes, with every line failed.
    caption = {"id": "f", "skill": "caption", "image": PHOTO, "length": "short"}
    with live.client() as client:
        status = moondream_batch(client, jsonl([*INVALID, caption]))
        lines = result_lines(client, status)
    assert status["status"] == "completed", status
    assert "error" not in status
    assert status["progress"] == {"total": 6, "completed": 0, "failed": 6}
    assert lines[-1]["error"]["code"] == "processing_error"


def test_a_native_file_of_only_invalid_lines_completes_with_every_line_failed(
    live: LiveServer,
) -> None:
    native = [
        {"id": "a", "skill": "teleport", "image": tiny_png()},
        {"id": "b", "skill": "detect", "image": "not base64!"},
        {"id": "c", "skill": "metadata"},
    ]
    with live.client() as client:
        job_id = native_submit(client, jsonl(native))
        status = poll(client, f"/v1/jobs/{job_id}", lambda s: s["status"] in FINAL)
        lines = result_lines(client, status)
    assert status["status"] == "completed"
    assert status["error"] is None
    assert status["progress"] == {"total": 3, "completed": 0, "failed": 3}
    assert [line["error"]["code"] for line in lines] == [
        ErrorCode.UNKNOWN_SKILL,
        ErrorCode.INVALID_REQUEST,
        ErrorCode.INVALID_REQUEST,
    ]
