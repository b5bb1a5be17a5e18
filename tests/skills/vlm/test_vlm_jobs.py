"""Vision-language lines in native JSONL jobs: every line answered, and a backend outage in the
middle of a job fails only the lines it hit while the job finishes."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from conftest import LiveServer
from vlm_standin import VlmStandin, square_image

IMAGE = base64.b64encode(square_image(320, 240, (40, 40, 120, 120))).decode()


def run_job(client: httpx.Client, lines: list[dict[str, Any]]) -> tuple[dict[str, Any], list[Any]]:
    body = ("\n".join(json.dumps(line) for line in lines) + "\n").encode()
    job = client.post("/v1/jobs", content=body).json()
    deadline = time.monotonic() + 120
    while (view := client.get(f"/v1/jobs/{job['id']}").json())["status"] in (
        "chunking",
        "processing",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    out = [json.loads(x) for o in view["outputs"] for x in client.get(o["url"]).text.splitlines()]
    return view, out


def test_a_job_of_the_four_skills_answers_every_line(
    serve: Callable[..., LiveServer], vlm_standin: VlmStandin
) -> None:
    live = serve(vlm_url=vlm_standin.url)
    lines = [
        {"id": "c", "skill": "caption", "image": IMAGE, "length": "short"},
        {"id": "q", "skill": "query", "image": IMAGE, "question": "what is it?"},
        {"id": "d", "skill": "detect", "image": IMAGE, "object": "red square"},
        {"id": "p", "skill": "point", "image": IMAGE, "object": "red square"},
    ]
    with live.client() as client:
        view, out = run_job(client, lines)
    assert view["status"] == "completed" and view["progress"]["failed"] == 0, view
    by_id = {line["id"]: line for line in out}
    assert by_id["c"]["status"] == "ok", by_id["c"]
    assert len(vlm_standin.requests) == 4
    assert json.dumps(by_id["q"]).count("what is it?") == 1


def test_an_outage_mid_job_fails_only_the_lines_it_hit(
    serve: Callable[..., LiveServer], vlm_standin: VlmStandin
) -> None:
    live = serve(
        vlm_url=vlm_standin.url,
        vlm_attempts=2,
        vlm_retry_base_s=0.01,
        vlm_max_concurrency=1,
        job_lines_in_flight=1,
        job_parallel_chunks=1,
    )
    vlm_standin.fail_next("", "", "500", "500", "")  # the third line's two attempts fail
    lines = [{"id": i, "skill": "caption", "image": IMAGE} for i in range(6)]
    with live.client() as client:
        view, out = run_job(client, lines)
    assert view["status"] == "completed", view
    assert view["progress"] == {"total": 6, "completed": 5, "failed": 1}
    failed = [line for line in out if line["status"] != "ok"]
    assert [line["id"] for line in failed] == [2]
    assert "after 2 attempts" in json.dumps(failed[0])


def test_readyz_reports_each_backend_without_failing_for_a_dead_one(
    serve: Callable[..., LiveServer], vlm_standin: VlmStandin
) -> None:
    with serve(vlm_url=vlm_standin.url).client() as client:
        up = client.get("/readyz")
    assert up.status_code == 200
    backend = up.json()["backends"]["vlm"]
    assert (
        backend["reachable"] is True
        and backend["latency_ms"] >= 0
        and backend["breaker"] == "closed"
    )
    with serve(vlm_url="http://127.0.0.1:9/v1").client() as client:
        down = client.get("/readyz")
    assert down.status_code == 200 and down.json()["backends"]["vlm"]["reachable"] is False
    with serve().client() as client:
        unset = client.get("/readyz").json()["backends"]["vlm"]
    assert unset["configured"] is False and "BATCHVISION_VLM_URL" in unset["detail"]
