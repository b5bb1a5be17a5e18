"""`GET /metrics` over real HTTP against the real app and real models: each test scrapes, does
something (a detect request, a job, an overload, a rate-limit refusal, a backend retry), scrapes
again and checks that the counters moved by exactly what was done.

Metrics are per process and every app in this test process records into them, so the tests
compare scrapes taken around their own work, on servers nothing else talks to meanwhile."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from starlette.responses import PlainTextResponse
from starlette.routing import Mount

from batchvision.accounts.keys import KeyStore
from batchvision.api.native.metrics import route_template
from batchvision.core.db import make_engine
from conftest import REPO, LiveServer, coco_image, error_of, spawn_server
from vlm_standin import VlmStandin

MB = 1024 * 1024
SRC = REPO / "src"
PHOTO = coco_image()


class Scrape:
    """One parsed `/metrics` answer: every sample by name and labels."""

    def __init__(self, text: str) -> None:
        self.samples = [
            (sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples named `name` whose labels include `labels` (0 when none)."""
        return sum(
            value
            for sample, sample_labels, value in self.samples
            if sample == name and labels.items() <= sample_labels.items()
        )

    def label_values(self, name: str, label: str) -> set[str]:
        return {labels[label] for sample, labels, _ in self.samples if sample == name}


def scrape(client: httpx.Client, **headers: str) -> Scrape:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return Scrape(response.text)


def moved(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.total(name, **labels) - before.total(name, **labels)


def png(size: tuple[int, int] = (32, 24)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, "red").save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def detect_body(images: int) -> dict[str, Any]:
    photo = base64.b64encode(PHOTO).decode()
    return {"images": [{"data": photo}] * images, "tasks": ["detect"]}


# --- requests, skills, models, the engine ----------------------------------------------------


def test_a_detect_request_moves_request_skill_batch_and_inference_metrics(
    serve: Callable[..., LiveServer],
) -> None:
    live = serve(max_decoded_mb=300)
    with live.client() as client:
        before = scrape(client)
        response = client.post("/v1/analyze", json=detect_body(2))
        assert response.status_code == 200, response.text
        model = response.json()["results"][0]["outputs"]["detect"]["model"]
        after = scrape(client)

    request = {"method": "POST", "route": "/v1/analyze"}
    assert moved(before, after, "batchvision_http_requests_total", **request, status="200") == 1
    assert moved(before, after, "batchvision_http_request_duration_seconds_count", **request) == 1
    assert moved(before, after, "batchvision_skill_images_total", skill="detect", outcome="ok") == 2
    # Two images through the detector: two items batched (in one batch or two), each waited.
    assert moved(before, after, "batchvision_model_batch_size_sum", model=model) == 2
    batches = moved(before, after, "batchvision_model_batch_size_count", model=model)
    assert 1 <= batches <= 2
    inference_runs = "batchvision_model_inference_duration_seconds_count"
    assert moved(before, after, inference_runs, model=model) == batches
    assert moved(before, after, "batchvision_model_inference_duration_seconds_sum", model=model) > 0
    assert moved(before, after, "batchvision_batcher_wait_seconds_count", model=model) == 2
    # Work done, nothing held; the budget is the server's setting.
    assert after.total("batchvision_images_in_flight") == 0
    assert after.total("batchvision_decoded_bytes_in_use") == 0
    assert after.total("batchvision_decoded_bytes_capacity") == 300 * MB


def test_routes_are_counted_by_template_and_unmatched_paths_under_one_label(
    serve: Callable[..., LiveServer],
) -> None:
    live = serve()
    with live.client() as client:
        before = scrape(client)
        for job_id in ("a" * 12, "b" * 12, "c" * 12):
            assert client.get(f"/v1/jobs/{job_id}").status_code == 404
        assert client.get("/no/such/page").status_code == 404
        assert client.get("/another/missing/page").status_code == 404
        after = scrape(client)

    job = {"method": "GET", "route": "/v1/jobs/{job_id}", "status": "404"}
    assert moved(before, after, "batchvision_http_requests_total", **job) == 3
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert moved(before, after, "batchvision_http_requests_total", **unmatched) == 2
    routes = after.label_values("batchvision_http_requests_total", "route")
    assert not any(route.startswith(("/v1/jobs/a", "/no/")) for route in routes), routes


def test_an_overload_counts_each_503_as_an_admission_refusal(
    serve: Callable[..., LiveServer],
) -> None:
    """Eight clients at once against room for two images: every 503 is one refusal."""
    live = serve(max_queued_images=2, retry_after_s=3)
    callers = 8
    barrier = threading.Barrier(callers)

    def request(_: int) -> httpx.Response:
        with live.client() as own:
            own.get("/healthz")  # connect first so the barrier lines up the POSTs themselves
            barrier.wait(timeout=30)
            return own.post("/v1/analyze", json=detect_body(2))

    with live.client() as client:
        before = scrape(client)
        with ThreadPoolExecutor(callers) as pool:
            responses = list(pool.map(request, range(callers)))
        after = scrape(client)

    refused = [r for r in responses if r.status_code == 503]
    assert refused and len(refused) < callers, [r.status_code for r in responses]
    for response in refused:
        error_of(response, 503, "overloaded")
    refusals = moved(
        before, after, "batchvision_admission_refusals_total", reason="images_in_flight"
    )
    assert refusals == len(refused)
    answered = {"method": "POST", "route": "/v1/analyze", "status": "503"}
    assert moved(before, after, "batchvision_http_requests_total", **answered) == len(refused)
    assert after.total("batchvision_images_in_flight") == 0


def noise_png(side: int) -> str:
    pixels = np.random.default_rng(side).integers(0, 255, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_images_refused_by_the_full_decoded_budget_are_counted_and_the_budget_returns(
    serve: Callable[..., LiveServer],
) -> None:
    """Room for one decoded 1200² image at a time and almost no wait for room: of three read
    at once, those that found the budget full are overloaded, each one refusal."""
    live = serve(max_decoded_mb=16, decoded_wait_s=0.001)
    body = {"images": [{"data": noise_png(1200)}] * 3, "tasks": ["barcode"]}
    with live.client() as client:
        before = scrape(client)
        response = client.post("/v1/analyze", json=body)
        assert response.status_code == 200, response.text
        after = scrape(client)

    results = response.json()["results"]
    overloaded = [r for r in results if r["status"] == "error"]
    assert overloaded and len(overloaded) < 3, results
    assert {e["code"] for r in overloaded for e in r["errors"]} == {"overloaded"}
    full = {"reason": "decoded_budget"}
    assert moved(before, after, "batchvision_admission_refusals_total", **full) == len(overloaded)
    assert after.total("batchvision_decoded_bytes_in_use") == 0
    assert after.total("batchvision_decoded_bytes_capacity") == 16 * MB


# --- jobs ------------------------------------------------------------------------------------


def wait_for_job(client: httpx.Client, job_id: str, timeout_s: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] not in ("chunking", "processing"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end")


def test_a_job_counts_its_finished_lines_its_credits_and_shows_in_jobs_by_state(
    serve: Callable[..., LiveServer],
) -> None:
    live = serve(auth="required", job_chunk_lines=2)
    keys = KeyStore(make_engine(live.settings))
    auth = {"Authorization": f"Bearer {keys.create('jobs', credits=10).secret}"}
    lines = [
        {"id": "a", "skill": "metadata", "image": png()},
        {"id": "b", "skill": "metadata", "image": png()},
        {"id": "bad", "skill": "metadata", "image": "not base64!"},
    ]
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    with live.client(headers=auth) as client:
        before = scrape(client)
        assert before.total("batchvision_jobs", state="completed") == 0
        submitted = client.post("/v1/jobs", content=body)
        assert submitted.status_code == 202, submitted.text
        job = wait_for_job(client, submitted.json()["id"])
        assert job["status"] == "completed", job
        after = scrape(client)

    assert moved(before, after, "batchvision_job_lines_total", status="ok") == 2
    assert moved(before, after, "batchvision_job_lines_total", status="error") == 1
    # Two images read, one credit each; the invalid line costs nothing.
    assert moved(before, after, "batchvision_credits_charged_total", source="job") == 2
    assert keys.by_name("jobs").credits == 8
    assert after.total("batchvision_jobs", state="completed") == 1
    assert after.total("batchvision_jobs", state="processing") == 0
    assert after.label_values("batchvision_jobs", "state") >= {"chunking", "failed", "expired"}


# --- accounts --------------------------------------------------------------------------------


def test_credits_charged_and_rate_limit_refusals_are_counted(
    serve: Callable[..., LiveServer],
) -> None:
    live = serve(auth="required")
    keys = KeyStore(make_engine(live.settings))
    secret = keys.create("metered", credits=10, images_per_minute=3).secret
    auth = {"Authorization": f"Bearer {secret}"}
    small = {"images": [{"data": png()}] * 2, "tasks": ["metadata"]}
    with live.client() as client:
        before = scrape(client)  # open: /metrics is not behind API-key auth
        assert client.post("/v1/analyze", json=small, headers=auth).status_code == 200
        error_of(client.post("/v1/analyze", json=small, headers=auth), 429, "rate_limited")
        too_many = {"images": [{"data": png()}] * 4, "tasks": ["metadata"]}
        error_of(client.post("/v1/analyze", json=too_many, headers=auth), 422, "exceeds_rate_limit")
        after = scrape(client)

    assert moved(before, after, "batchvision_credits_charged_total", source="request") == 2
    assert keys.by_name("metered").credits == 8
    limited = {"kind": "images", "reason": "rate_limited"}
    assert moved(before, after, "batchvision_rate_limit_refusals_total", **limited) == 1
    exceeded = {"kind": "images", "reason": "exceeds_limit"}
    assert moved(before, after, "batchvision_rate_limit_refusals_total", **exceeded) == 1


# --- the vision-language backend -------------------------------------------------------------


def test_a_backend_retry_counts_one_call_two_attempts_and_one_retry(
    serve: Callable[..., LiveServer], vlm_standin: VlmStandin
) -> None:
    live = serve(vlm_url=vlm_standin.url, vlm_model="qwen2.5vl:7b", vlm_retry_base_s=0.01)
    vlm_standin.fail_next("500")
    body = {"images": [{"data": png((64, 48))}], "tasks": ["caption"]}
    with live.client() as client:
        before = scrape(client)
        response = client.post("/v1/analyze", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["results"][0]["status"] == "ok"
        vlm_standin.fail_next("malformed")
        failed = client.post("/v1/analyze", json=body).json()["results"][0]
        assert failed["status"] == "error"
        after = scrape(client)

    backend = {"backend": "vlm"}
    assert moved(before, after, "batchvision_vlm_calls_total", **backend) == 2
    assert moved(before, after, "batchvision_vlm_retries_total", **backend) == 1
    assert moved(before, after, "batchvision_vlm_request_duration_seconds_count", **backend) == 3
    bad = {"backend": "vlm", "reason": "bad_answer"}
    assert moved(before, after, "batchvision_vlm_errors_total", **bad) == 1
    assert moved(before, after, "batchvision_vlm_errors_total", **backend) == 1
    assert moved(before, after, "batchvision_skill_images_total", skill="caption") == 2
    assert after.label_values("batchvision_model_queued_images", "model") == {"vlm"}
    assert after.total("batchvision_model_queued_images") == 0


# --- the token -------------------------------------------------------------------------------


def test_with_a_metrics_token_only_its_bearer_may_scrape(serve: Callable[..., LiveServer]) -> None:
    """The token, not an API key, opens /metrics; the API keeps its own auth."""
    live = serve(auth="required", metrics_token="scrape-me")
    with live.client() as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "scrape-me"}):
            refused = client.get("/metrics", headers=headers)
            assert "BATCHVISION_METRICS_TOKEN" in error_of(refused, 401, "unauthorized")
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert "batchvision_" not in refused.text
        scraped = scrape(client, Authorization="Bearer scrape-me")
        assert scraped.total("batchvision_http_requests_total", route="/metrics", status="401") == 3
        error_of(
            client.get("/v1/skills", headers={"Authorization": "Bearer scrape-me"}),
            401,
            "unauthorized",
        )


def test_without_a_token_metrics_are_open(serve: Callable[..., LiveServer]) -> None:
    live = serve(auth="required")
    with live.client() as client:
        scraped = scrape(client)
    names = {name for name, _, _ in scraped.samples}
    assert "batchvision_decoded_bytes_capacity" in names
    assert not [name for name in names if name.endswith("_created")]  # no doubled series


# --- several processes -----------------------------------------------------------------------


def test_two_server_processes_sharing_a_multiproc_dir_report_each_others_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two `batchvision serve` processes on one data dir and one PROMETHEUS_MULTIPROC_DIR:
    requests answered by both show in either one's /metrics."""
    shared = tmp_path / "prometheus"
    shared.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(shared))
    first = spawn_server(tmp_path / "data")
    servers = [first]
    try:
        first.wait_ready()
        second = spawn_server(tmp_path / "data")
        servers.append(second)
        second.wait_ready()
        before = Scrape(httpx.get(f"{first.url}/metrics", timeout=10).text)
        for server, count in ((first, 3), (second, 2)):
            for _ in range(count):
                assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
        answer = httpx.get(f"{second.url}/metrics", timeout=10)
    finally:
        for server in servers:
            server.stop()

    assert answer.status_code == 200
    after = Scrape(answer.text)
    health = {"method": "GET", "route": "/healthz", "status": "200"}
    assert moved(before, after, "batchvision_http_requests_total", **health) == 5
    assert moved(before, after, "batchvision_http_requests_total", route="/metrics") == 1
    # Each process wrote its own files; per-process collectors are not merged.
    assert len({p.name.rsplit("_", 1)[1] for p in shared.glob("counter_*.db")}) == 2
    assert "process_cpu_seconds_total" not in answer.text


def test_a_mounted_app_is_labelled_by_its_prefix_never_by_the_file_asked_for() -> None:
    assets = Mount("/assets", app=PlainTextResponse("x"))
    assert route_template({"route": assets, "path": "/assets/app.js"}) == "/assets/{path}"
    assert route_template({"path": "/favicon.ico"}) == "unmatched"


def test_a_multiproc_dir_that_is_not_there_is_named_at_start_up(tmp_path: Path) -> None:
    missing = tmp_path / "never-made"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(missing), "PYTHONPATH": str(SRC)}
    started = subprocess.run(
        [sys.executable, "-c", "import batchvision.api.app"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode != 0
    assert f"PROMETHEUS_MULTIPROC_DIR={missing} is not a directory" in started.stderr
    assert not missing.exists()
