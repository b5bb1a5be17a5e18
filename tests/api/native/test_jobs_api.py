"""The native job API over real HTTP: submit, poll, outputs, per-line and batch-level errors,
paging, cancel, timeout, retention, callbacks, credits and tenant isolation."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from batchvision.accounts.keys import KeyStore
from batchvision.accounts.scoping import Principal
from batchvision.core.db import make_engine, migrate
from batchvision.jobs.callbacks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_callback
from batchvision.jobs.store import JobStore
from batchvision.work.service import JobService
from conftest import LiveServer, coco_image, make_settings, start_server
from local_http import RouteHandler, serve_routes

SMALL = {"job_chunk_lines": 5, "job_output_lines": 10}
PHOTO = base64.b64encode(coco_image()).decode()


def tiny_png(color: str = "red") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), color).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def jsonl(*lines: dict[str, Any] | str) -> bytes:
    text = [line if isinstance(line, str) else json.dumps(line) for line in lines]
    return ("\n".join(text) + "\n").encode()


def submit(client: httpx.Client, body: bytes, **params: Any) -> dict[str, Any]:
    response = client.post("/v1/jobs", content=body, params=params)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def wait(client: httpx.Client, job_id: str, timeout_s: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] not in ("chunking", "processing"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end")


def output_lines(client: httpx.Client, job: dict[str, Any]) -> list[dict[str, Any]]:
    lines = []
    for output in job["outputs"]:
        response = client.get(output["url"])
        assert response.status_code == 200
        lines += [json.loads(line) for line in response.text.splitlines()]
    return lines


def app_jobs(live: LiveServer) -> JobService:
    service: JobService = live.server.config.app.state.services.jobs  # type: ignore[attr-defined]
    return service


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("jobs"),
        job_max_lines=30,
        job_max_line_bytes=400_000,
        job_max_file_bytes=3_000_000,
        **SMALL,
    )
    live = start_server(settings)
    yield live
    live.stop()


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def test_a_job_runs_every_line_once_in_order_with_per_line_errors(client: httpx.Client) -> None:
    lines: list[dict[str, Any] | str] = [
        {"id": "photo", "skill": "detect", "image": PHOTO, "threshold": 0.3},
        {"id": 7, "skill": "metadata", "image": tiny_png()},
        {"id": "bad-b64", "skill": "detect", "image": "not base64!"},
        {"id": "not-an-image", "skill": "detect", "image": base64.b64encode(b"x" * 64).decode()},
        {"id": "unknown", "skill": "teleport", "image": tiny_png()},
        {"id": "no-image", "skill": "detect"},
        {"id": "bad-param", "skill": "detect", "image": tiny_png(), "threshold": "high"},
        {"id": "private-url", "skill": "detect", "image_url": "http://127.0.0.1:1/x.jpg"},
        {"skill": "metadata", "images": [tiny_png("blue"), tiny_png("green")]},
        {"id": "barcode", "skill": "barcode", "image": tiny_png()},
    ]
    job = submit(client, jsonl(*lines))
    assert job["status"] in ("chunking", "processing")
    assert job["size"] == len(jsonl(*lines))
    done = wait(client, job["id"])
    assert done["status"] == "completed", done
    assert done["progress"] == {"total": 10, "completed": 4, "failed": 6}
    assert done["usage"]["images"] == 5  # the photo, the tiny PNGs that decoded (metadata x3)
    assert len(done["outputs"]) == 1 + (10 > 10)
    results = output_lines(client, done)
    assert [r["line_index"] for r in results] == list(range(10))
    by_id = {r["id"]: r for r in results}
    assert by_id["photo"]["status"] == "ok"
    labels = {o["label"] for o in by_id["photo"]["result"]["objects"]}
    assert {"person", "tv"} <= labels
    assert by_id[7]["result"]["width"] == 32  # an integer id comes back as sent
    codes = {r["id"]: r["error"]["code"] for r in results if r["status"] == "error"}
    assert codes == {
        "bad-b64": "invalid_request",
        "not-an-image": "image_decode_failed",
        "unknown": "unknown_skill",
        "no-image": "invalid_request",
        "bad-param": "invalid_parameter",
        "private-url": "url_not_allowed",
    }
    several = results[8]
    assert several["id"] is None
    assert [item["width"] for item in several["result"]["images"]] == [32, 32]
    assert by_id["barcode"]["result"]["barcodes"] == []


def test_outputs_span_files_of_at_most_n_lines_and_results_stream_all(
    client: httpx.Client,
) -> None:
    body = jsonl(*({"id": f"l{i}", "skill": "metadata", "image": tiny_png()} for i in range(23)))
    done = wait(client, submit(client, body)["id"])
    assert [o["index"] for o in done["outputs"]] == [0, 1, 2]
    sizes = [len(client.get(o["url"]).text.splitlines()) for o in done["outputs"]]
    assert sizes == [10, 10, 3]
    streamed = client.get(f"/v1/jobs/{done['id']}/results")
    assert streamed.headers["content-type"].startswith("application/jsonl")
    lines = [json.loads(line) for line in streamed.text.splitlines()]
    assert [line["id"] for line in lines] == [f"l{i}" for i in range(23)]
    assert lines == output_lines(client, done)


def test_output_links_are_signed_and_expire_with_tampering_refused(client: httpx.Client) -> None:
    body = jsonl({"skill": "metadata", "image": tiny_png()})
    done = wait(client, submit(client, body)["id"])
    url = httpx.URL(done["outputs"][0]["url"])
    assert client.get(url).status_code == 200
    signature = url.params["signature"]
    forged = url.copy_set_param("signature", ("0" if signature[0] != "0" else "1") + signature[1:])
    assert client.get(forged).status_code == 403
    later = url.copy_set_param("expires", str(int(url.params["expires"]) + 1))
    assert client.get(later).status_code == 403
    other_file = str(url).replace("/outputs/0?", "/outputs/1?")
    assert client.get(other_file).status_code == 403
    assert client.get(url.copy_with(query=None)).status_code == 403
    expires = dt.datetime.fromtimestamp(int(url.params["expires"]), dt.UTC)
    completed = dt.datetime.fromisoformat(done["completed_at"].replace("Z", "+00:00"))
    assert dt.timedelta(hours=23) < expires - completed <= dt.timedelta(days=1, seconds=5)


@pytest.mark.parametrize(
    ("body", "code", "needle"),
    [
        (
            jsonl({"skill": "metadata", "image": "x"}, "", {"skill": "metadata"}),
            "validation_error",
            "line 2",
        ),
        (b'{"skill": "metadata"}\n{"skill": "\xff"}\n', "validation_error", "line 2"),
        (b'{"skill": "metadata"}\n[1, 2]\n', "validation_error", "line 2"),
        (b'{"skill": "metadata"}\n{"skill": \n', "validation_error", "line 2"),
        (jsonl(*({"skill": "metadata"} for _ in range(31))), "limit_exceeded", "30"),
        (jsonl({"skill": "metadata", "image": "A" * 400_001}), "limit_exceeded", "line 1"),
        (b"", "empty_batch", ""),
    ],
    ids=["blank", "utf8", "not-object", "bad-json", "lines", "line-size", "empty"],
)
def test_a_bad_file_fails_the_batch_with_its_code(
    client: httpx.Client, body: bytes, code: str, needle: str
) -> None:
    done = wait(client, submit(client, body)["id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == code
    assert needle in done["error"]["message"]
    assert done["outputs"] == []
    assert done["progress"]["completed"] == 0


def test_a_file_over_the_size_limit_fails_limit_exceeded_while_streaming(
    client: httpx.Client,
) -> None:
    chunk = jsonl(*({"skill": "metadata", "image": "A" * 300_000} for _ in range(2)))
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(20):  # 12 MB offered against a 3 MB limit
            sent += len(chunk)
            yield chunk

    response = client.post("/v1/jobs", content=body())
    assert response.status_code == 202
    job = response.json()
    assert job["status"] == "failed"
    assert job["error"]["code"] == "limit_exceeded"


def test_listing_pages_with_a_cursor_newest_first(serve: Any) -> None:
    with serve(**SMALL).client() as client:
        ids = [submit(client, jsonl({"skill": "metadata", "image": tiny_png()}))["id"]]
        for _ in range(4):
            ids.append(submit(client, jsonl({"skill": "metadata", "image": tiny_png()}))["id"])
        seen: list[str] = []
        pages, cursor = [], None
        while True:
            params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = client.get("/v1/jobs", params=params).json()
            pages.append((len(page["jobs"]), page["has_more"]))
            seen += [job["id"] for job in page["jobs"]]
            cursor = page["next_cursor"]
            if not page["has_more"]:
                assert cursor is None
                break
        assert pages == [(2, True), (2, True), (1, False)]
        assert seen == list(reversed(ids))
        assert len(client.get("/v1/jobs").json()["jobs"]) == 5
        for bad in ("0", "101", "many"):
            response = client.get("/v1/jobs", params={"limit": bad})
            assert response.status_code == 400
            assert response.json()["error"]["code"] == "invalid_request"


def photo_lines(count: int) -> bytes:
    return jsonl(*({"id": f"p{i}", "skill": "detect", "image": PHOTO} for i in range(count)))


def assert_each_line_once(lines: list[dict[str, Any]], job: dict[str, Any]) -> None:
    indexes = [line["line_index"] for line in lines]
    assert len(indexes) == len(set(indexes))
    assert indexes == sorted(indexes)
    finished = job["progress"]["completed"] + job["progress"]["failed"]
    assert len(lines) == finished
    assert all(line["id"] == f"p{line['line_index']}" for line in lines)


def test_cancel_stops_promptly_and_keeps_the_finished_lines(serve: Any) -> None:
    with serve(**SMALL, job_max_lines=1000).client() as client:
        job = submit(client, photo_lines(400))
        while (seen := client.get(f"/v1/jobs/{job['id']}").json()["progress"]["completed"]) < 15:
            time.sleep(0.05)
        asked = time.monotonic()
        response = client.post(f"/v1/jobs/{job['id']}/cancel")
        assert response.status_code == 200
        assert response.json()["cancel_requested"] is True
        done = wait(client, job["id"])
        assert time.monotonic() - asked < 5.0
        assert done["status"] == "cancelled"
        assert seen <= done["progress"]["completed"] < 400
        assert_each_line_once(output_lines(client, done), done)
        again = client.post(f"/v1/jobs/{job['id']}/cancel").json()
        assert again["status"] == "cancelled"


def test_a_cancel_mid_chunk_keeps_the_lines_that_chunk_finished_and_bills_only_them(
    serve: Any,
) -> None:
    """Chunks of 100 lines, 8 in flight: a cancel after 10 lines lands long before a chunk could
    be recorded whole, so the kept lines come from chunks that were still running."""
    live, keys = keyed_server(
        serve, job_chunk_lines=100, job_output_lines=200, job_lines_in_flight=8, job_max_lines=1000
    )
    created = keys.create("dave", credits=1000)
    with live.client(headers={"Authorization": f"Bearer {created.secret}"}) as client:
        job = submit(client, photo_lines(240))
        progress: list[int] = []
        while not progress or progress[-1] < 10:
            status = client.get(f"/v1/jobs/{job['id']}").json()
            progress.append(status["progress"]["completed"] + status["progress"]["failed"])
            time.sleep(0.02)
        assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
        while (status := client.get(f"/v1/jobs/{job['id']}").json())["status"] == "processing":
            progress.append(status["progress"]["completed"] + status["progress"]["failed"])
            time.sleep(0.01)
        done = status
        lines = output_lines(client, done)
    finished = done["progress"]["completed"] + done["progress"]["failed"]
    assert done["status"] == "cancelled"
    assert progress == sorted(progress), progress  # never backwards, the cancel included
    assert progress[-1] <= finished < 240
    assert_each_line_once(lines, done)  # each line once, in line order, as many as counted
    assert all(line["status"] == "ok" for line in lines)
    # Billed: the photos of the kept lines, not those cancelled in flight.
    assert done["usage"]["images"] == finished
    assert keys.by_name("dave").credits == 1000 - finished


def test_a_job_past_its_time_limit_fails_with_timeout_keeping_finished_lines(serve: Any) -> None:
    with serve(**SMALL, job_max_lines=1000, job_max_seconds=1.5).client() as client:
        done = wait(client, submit(client, photo_lines(600))["id"])
        assert done["status"] == "failed"
        assert done["error"]["code"] == "timeout"
        assert 0 < done["progress"]["completed"] < 600
        assert_each_line_once(output_lines(client, done), done)


def test_retention_sweep_purges_results_and_stale_uploads(serve: Any) -> None:
    live = serve(**SMALL)
    with live.client() as client:
        done = wait(client, submit(client, jsonl({"skill": "metadata", "image": tiny_png()}))["id"])
        url = done["outputs"][0]["url"]
        assert client.get(url).status_code == 200
        upload = client.post("/v1/uploads").json()
        runner = app_jobs(live).runner
        now = dt.datetime.now(dt.UTC)
        assert runner.sweep(now + dt.timedelta(hours=23)) == (0, 0)
        assert runner.sweep(now + dt.timedelta(days=6)) == (0, 1)  # uploads live 24 h
        assert client.get(url).status_code == 200
        assert runner.sweep(now + dt.timedelta(days=7, minutes=1)) == (1, 0)
        expired = client.get(f"/v1/jobs/{done['id']}").json()
        assert expired["status"] == "expired"
        assert expired["outputs"] == []
        assert client.get(url).status_code == 404
        assert client.get(f"/v1/jobs/{done['id']}/results").text == ""
        part = client.put(
            f"/v1/uploads/{upload['fileId']}/parts/1",
            params={"uploadId": upload["uploadId"]},
            content=b"{}\n",
        )
        assert part.status_code == 404
        blobs = app_jobs(live).blobs
        assert blobs.list_prefix(f"jobs/{done['id']}/") == []
        assert blobs.list_prefix(f"uploads/{upload['fileId']}/") == []


def test_native_multipart_upload_builds_the_file_from_its_parts(client: httpx.Client) -> None:
    body = jsonl(*({"id": f"m{i}", "skill": "metadata", "image": tiny_png()} for i in range(12)))
    upload = client.post("/v1/uploads")
    assert upload.status_code == 201
    file_id, upload_id = upload.json()["fileId"], upload.json()["uploadId"]
    pieces = [body[:100], body[100:1000], body[1000:]]
    parts = []
    for number in (3, 1, 2, 1):  # out of order, part 1 sent twice
        response = client.put(
            f"/v1/uploads/{file_id}/parts/{number}",
            params={"uploadId": upload_id},
            content=pieces[number - 1],
        )
        assert response.status_code == 200
        parts.append(response.json())
    listed = sorted({p["partNumber"]: p for p in parts}.values(), key=lambda p: p["partNumber"])
    complete = client.post(
        f"/v1/uploads/{file_id}/complete",
        params={"uploadId": upload_id},
        json={"parts": [{"partNumber": p["partNumber"], "etag": p["etag"]} for p in listed]},
    )
    assert complete.status_code == 202
    assert complete.json()["size"] == len(body)
    done = wait(client, complete.json()["id"])
    assert [line["id"] for line in output_lines(client, done)] == [f"m{i}" for i in range(12)]
    gone = client.post(
        f"/v1/uploads/{file_id}/complete", params={"uploadId": upload_id}, json={"parts": listed}
    )
    assert gone.status_code == 404


def test_options_are_checked_at_submit(client: httpx.Client) -> None:
    body = jsonl({"skill": "metadata", "image": tiny_png()})
    for params in (
        {"retention_days": "0"},
        {"retention_days": "366"},
        {"callback_url": "ftp://example.com/hook"},
        {"callback_url": "http://user:pw@example.com/hook"},
        {"callback_url": "https://example.com/hook", "callback_secret": "short"},
    ):
        response = client.post("/v1/jobs", content=body, params=params)
        assert response.status_code == 422, params
        assert response.json()["error"]["code"] == "invalid_parameter"
    job = submit(client, body, retention_days=2)
    done = wait(client, job["id"])
    completed = dt.datetime.fromisoformat(done["completed_at"].replace("Z", "+00:00"))
    expires = dt.datetime.fromisoformat(done["expires_at"].replace("Z", "+00:00"))
    assert expires - completed == dt.timedelta(days=2)


class Receiver:
    """A callback endpoint on 127.0.0.1 that records what arrives."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.arrived = threading.Event()

    def __call__(self, handler: RouteHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        self.calls.append((dict(handler.headers.items()), body))
        handler.send(200, b"ok")
        self.arrived.set()


def test_callback_posts_the_final_status_signed(serve: Any) -> None:
    receiver = Receiver()
    with serve_routes({"/hook": receiver}) as base:
        live = serve(**SMALL, callback_allow_hosts=["127.0.0.1"])
        with live.client() as client:
            body = jsonl({"id": "a", "skill": "metadata", "image": tiny_png()})
            job = submit(client, body, callback_url=f"{base}/hook")
            secret = job["callback_secret"]
            assert len(secret) == 64
            assert "callback_secret" not in client.get(f"/v1/jobs/{job['id']}").json()
            assert receiver.arrived.wait(30)
    headers, payload = receiver.calls[0]
    assert verify_callback(
        secret.encode(), headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER], payload
    )
    assert not verify_callback(
        b"another secret!!", headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER], payload
    )
    status = json.loads(payload)
    assert status["id"] == job["id"]
    assert status["status"] == "completed"
    assert status["progress"]["completed"] == 1
    assert len(receiver.calls) == 1


def test_callback_to_a_private_address_is_refused_by_default(serve: Any) -> None:
    receiver = Receiver()
    with serve_routes({"/hook": receiver}) as base:
        live = serve(**SMALL, callback_attempts=1)
        with live.client() as client:
            body = jsonl({"skill": "metadata", "image": tiny_png()})
            job = submit(client, body, callback_url=f"{base}/hook", callback_secret="s" * 32)
            assert "callback_secret" not in job  # the client chose it
            assert wait(client, job["id"])["status"] == "completed"
            store = app_jobs(live).store
            deadline = time.monotonic() + 10
            while store.view(job["id"]).callback_state == "pending":  # type: ignore[union-attr]
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert store.view(job["id"]).callback_state == "failed"  # type: ignore[union-attr]
    assert receiver.calls == []


def keyed_server(serve: Any, **overrides: Any) -> tuple[LiveServer, KeyStore]:
    live = serve(auth="required", **(SMALL | overrides))
    return live, KeyStore(make_engine(live.settings))


def test_another_key_cannot_see_or_touch_a_job(serve: Any) -> None:
    live, keys = keyed_server(serve)
    alice = {"Authorization": f"Bearer {keys.create('alice').secret}"}
    bob = {"Authorization": f"Bearer {keys.create('bob').secret}"}
    with live.client() as client:
        assert client.post("/v1/jobs", content=b"{}\n").status_code == 401
        body = jsonl({"skill": "metadata", "image": tiny_png()})
        job = client.post("/v1/jobs", content=body, headers=alice).json()
        upload = client.post("/v1/uploads", headers=alice).json()
        for method, path in (
            ("GET", f"/v1/jobs/{job['id']}"),
            ("GET", f"/v1/jobs/{job['id']}/results"),
            ("POST", f"/v1/jobs/{job['id']}/cancel"),
            ("PUT", f"/v1/uploads/{upload['fileId']}/parts/1?uploadId={upload['uploadId']}"),
            ("POST", f"/v1/uploads/{upload['fileId']}/complete?uploadId={upload['uploadId']}"),
            ("DELETE", f"/v1/uploads/{upload['fileId']}?uploadId={upload['uploadId']}"),
        ):
            response = client.request(method, path, headers=bob, content=b'{"parts": []}')
            assert response.status_code == 404, (method, path)
        assert client.get("/v1/jobs", headers=bob).json()["jobs"] == []
        deadline = time.monotonic() + 30
        while client.get(f"/v1/jobs/{job['id']}", headers=alice).json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert [j["id"] for j in client.get("/v1/jobs", headers=alice).json()["jobs"]] == [
            job["id"]
        ]
        assert client.get(f"/v1/jobs/{job['id']}/results", headers=alice).text.count("\n") == 1


def test_jobs_bill_processed_images_and_stop_when_credits_run_out(serve: Any) -> None:
    live, keys = keyed_server(serve, job_chunk_lines=1, job_output_lines=10, job_parallel_chunks=1)
    created = keys.create("carol", credits=2)
    headers = {"Authorization": f"Bearer {created.secret}"}
    lines = [{"id": f"c{i}", "skill": "metadata", "image": tiny_png()} for i in range(5)]
    lines.insert(1, {"id": "broken", "skill": "metadata", "image": "not base64!"})
    with live.client(headers=headers) as client:
        done = wait(client, submit(client, jsonl(*lines))["id"])
        assert done["status"] == "failed"
        assert done["error"]["code"] == "insufficient_credits"
        assert done["progress"] == {"total": 6, "completed": 2, "failed": 1}
        assert done["usage"]["images"] == 2
        assert [line["id"] for line in output_lines(client, done)] == ["c0", "broken", "c1"]
    assert keys.by_name("carol").credits == 0
    usage = keys.usage(created.info.id)
    assert sum(day["images"] for day in usage) == 2
    assert sum(day["credits"] for day in usage) == 2


def test_a_job_whose_input_is_lost_fails_processing_failed_on_resume(tmp_path: Any) -> None:
    settings = make_settings(tmp_path, **SMALL)
    engine = make_engine(settings)
    migrate(engine)
    job = JobStore(engine).create(Principal.anonymous(), surface="native", chunk_lines=5)
    engine.dispose()
    live = start_server(settings)  # resumes the job; its input file was never written
    try:
        with live.client() as client:
            done = wait(client, job.id)
    finally:
        live.stop()
    assert done["status"] == "failed"
    assert done["error"] == {"code": "processing_failed", "message": "internal processing error"}


def test_progress_moves_line_by_line_and_never_backwards(serve: Any) -> None:
    with serve(job_chunk_lines=20, job_output_lines=20, job_max_lines=1000).client() as client:
        job = submit(client, photo_lines(60))
        seen: list[int] = []
        while True:
            status = client.get(f"/v1/jobs/{job['id']}").json()
            seen.append(status["progress"]["completed"] + status["progress"]["failed"])
            if status["status"] not in ("chunking", "processing"):
                break
            time.sleep(0.01)
    assert seen == sorted(seen)  # never backwards, never counted twice
    assert seen[-1] == 60 and max(seen) == 60
    # Counts between chunk commits (not multiples of 20) show the per-line updates.
    assert any(count % 20 for count in seen), seen


def test_a_job_that_runs_a_key_dry_records_only_the_credits_it_took(serve: Any) -> None:
    """One 20-line chunk on 5 credits: the chunk is billed after its work, the balance stops at
    0, and the usage ledger says 5 credits (what was taken) for 20 images, not 20 credits; the
    other 15 are recorded as uncharged, on the job and in the usage ledger."""
    live, keys = keyed_server(serve, job_chunk_lines=20, job_output_lines=20)
    created = keys.create("gail", credits=5)
    headers = {"Authorization": f"Bearer {created.secret}"}
    lines = [{"id": f"g{i}", "skill": "metadata", "image": tiny_png()} for i in range(20)]
    with live.client(headers=headers) as client:
        done = wait(client, submit(client, jsonl(*lines))["id"])
        report = client.get("/v1/usage").json()
    assert done["status"] == "completed"
    assert done["usage"]["images"] == 20
    assert done["usage"]["uncharged_credits"] == 15
    assert keys.by_name("gail").credits == 0
    assert report["totals"]["images"] == 20
    assert report["totals"]["credits"] == 5
    assert report["totals"]["uncharged_credits"] == 15
    assert [day["uncharged_credits"] for day in report["days"]] == [15]
    assert sum(day["credits"] for day in keys.usage(created.info.id)) == 5


def test_a_job_within_its_balance_records_nothing_uncharged(serve: Any) -> None:
    live, keys = keyed_server(serve, job_chunk_lines=5, job_output_lines=20)
    created = keys.create("hal", credits=50)
    headers = {"Authorization": f"Bearer {created.secret}"}
    lines = [{"id": f"h{i}", "skill": "metadata", "image": tiny_png()} for i in range(10)]
    with live.client(headers=headers) as client:
        done = wait(client, submit(client, jsonl(*lines))["id"])
        report = client.get("/v1/usage").json()
    assert done["status"] == "completed"
    assert done["usage"] == {
        "images": 10,
        "videos": 0,
        "uncharged_credits": 0,
        "input_tokens": 0,
        "output_tokens": 0,
    }
    assert keys.by_name("hal").credits == 40
    assert report["totals"]["credits"] == 10 and report["totals"]["uncharged_credits"] == 0
