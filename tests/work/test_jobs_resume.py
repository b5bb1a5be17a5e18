"""Crash safety for real: a server subprocess killed with SIGKILL mid-job, then restarted,
finishes the job with every line in the outputs exactly once."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import httpx

from conftest import coco_image, spawn_server

LINES = 300
CHUNK_SETTINGS = {"job_chunk_lines": "10", "job_output_lines": "100"}


def _job_file() -> bytes:
    photo = base64.b64encode(coco_image()).decode()
    lines = []
    for i in range(LINES):
        if i % 50 == 7:  # a few per-line failures must survive the crash too
            lines.append(json.dumps({"id": f"r{i}", "skill": "detect", "image": "bad!"}))
        else:
            lines.append(json.dumps({"id": f"r{i}", "skill": "detect", "image": photo}))
    return ("\n".join(lines) + "\n").encode()


def _status(url: str, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()
    return job


def test_kill_9_mid_job_then_restart_gives_every_line_exactly_once(tmp_path: Path) -> None:
    first = spawn_server(tmp_path, **CHUNK_SETTINGS)
    try:
        first.wait_ready()
        submitted = httpx.post(f"{first.url}/v1/jobs", content=_job_file(), timeout=60)
        assert submitted.status_code == 202
        job_id = submitted.json()["id"]
        deadline = time.monotonic() + 120
        while (done_before := _status(first.url, job_id)["progress"]["completed"]) < 40:
            assert time.monotonic() < deadline, "the job made no progress"
            time.sleep(0.05)
        first.kill()
    finally:
        first.stop()
    assert done_before < LINES - 60, "the job finished before the kill; nothing was tested"

    second = spawn_server(tmp_path, port=first.port, **CHUNK_SETTINGS)
    try:
        second.wait_ready()
        resumed = _status(second.url, job_id)
        assert resumed["status"] == "processing"
        # Status counted lines of running chunks too; those chunks run again, but everything
        # committed survived: at most the 2 parallel chunks of 10 lines are gone.
        assert resumed["progress"]["completed"] >= done_before - 20
        deadline = time.monotonic() + 180
        while (job := _status(second.url, job_id))["status"] == "processing":
            assert time.monotonic() < deadline, "the resumed job did not finish"
            time.sleep(0.2)
        assert job["status"] == "completed"
        assert job["progress"] == {"total": LINES, "completed": LINES - 6, "failed": 6}
        lines = []
        for output in job["outputs"]:
            text = httpx.get(output["url"], timeout=30).text
            lines += [json.loads(line) for line in text.splitlines()]
    finally:
        second.stop()
    assert [line["line_index"] for line in lines] == list(range(LINES))
    assert [line["id"] for line in lines] == [f"r{i}" for i in range(LINES)]
    failed = [line["line_index"] for line in lines if line["status"] == "error"]
    assert failed == [i for i in range(LINES) if i % 50 == 7]
    assert all(line["result"]["objects"] for line in lines if line["status"] == "ok")
    assert not (tmp_path / "blobs" / "jobs" / job_id / "input.jsonl").exists()
