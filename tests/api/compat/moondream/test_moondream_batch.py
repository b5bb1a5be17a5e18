"""Moondream Batch API (`/v1/batch`) end to end, over real HTTP against the real app.

Follows ../shared/seeds/002 (the Moondream Batch page): its Python client flow nearly verbatim
(mpu-create → parts in CHUNK_SIZE pieces → mpu-complete → poll → download every output), the
response shapes it shows, its batch-level and per-line error codes, S3-style multipart rules
(parts in any order, the last copy of a part wins, etags checked at completion, a bad partNumber
is 400), ids of any JSON type echoed unchanged, typed line fields with their messages, listing
with cursors (one a listing did not hand out is 400), and tenant isolation with
`X-Moondream-Auth` keys.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from batchvision.accounts.keys import KeyStore
from batchvision.core.db import make_engine
from batchvision.jobs.blobs import LocalBlobs
from conftest import LiveServer, coco_image, make_settings, start_server

BASE = "/v1/batch"
PART_LIMIT = 64 * 1024
CHUNKING = {"job_chunk_lines": 5, "job_output_lines": 10}
STATES = {"chunking", "processing", "completed", "failed"}
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
QUOTED_ETAG = re.compile(r'^"[0-9a-f]+"$')
OCTET = {"Content-Type": "application/octet-stream"}
NO_VLM = "vision-language model"

Headers = dict[str, str]


# --- servers ------------------------------------------------------------------------------------


def _start(tmp: Path, **overrides: Any) -> LiveServer:
    """A server from explicit settings only (a developer's BATCHVISION_* must not leak in)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("BATCHVISION_"):
                patch.delenv(name)
        settings = make_settings(tmp, **overrides)
    return start_server(settings)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Open access, outputs over several files, 64 KiB parts."""
    server = _start(
        tmp_path_factory.mktemp("moondream"),
        **CHUNKING,
        job_max_part_bytes=PART_LIMIT,
        job_max_lines=20,
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Small file limits, for the batch-level errors (no line here reaches a model)."""
    server = _start(
        tmp_path_factory.mktemp("moondream-strict"),
        **CHUNKING,
        job_max_part_bytes=PART_LIMIT,
        job_max_lines=20,
        job_max_line_bytes=256,
        job_max_file_bytes=4096,
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, KeyStore]]:
    """Keys required; each test makes its own keys, so lists hold only that test's batches."""
    server = _start(tmp_path_factory.mktemp("moondream-keyed"), **CHUNKING, auth="required")
    yield server, KeyStore(make_engine(server.settings))  # the server migrated the database
    server.stop()


@pytest.fixture
def client(live: LiveServer) -> Iterator[httpx.Client]:
    with live.client() as http:
        yield http


def auth(store: KeyStore, name: str) -> Headers:
    return {"X-Moondream-Auth": store.create(name).secret}


def bearer(headers: Headers) -> Headers:
    """The same key as the native API takes it."""
    return {"Authorization": f"Bearer {headers['X-Moondream-Auth']}"}


# --- client helpers -----------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def jsonl(*lines: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def tiny(*ids: str) -> bytes:
    """Lines that end at once without a model (unknown_skill), one per id."""
    return jsonl(*({"id": i, "skill": "segment", "image": "aGk="} for i in ids))


def create(client: httpx.Client, headers: Headers | None = None) -> tuple[str, str]:
    response = client.post(f"{BASE}?action=mpu-create", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    return body["fileId"], body["uploadId"]


def put_part(
    client: httpx.Client,
    file_id: str,
    upload_id: str,
    number: int,
    content: Any,
    headers: Headers | None = None,
) -> httpx.Response:
    return client.put(
        f"{BASE}/{file_id}?action=mpu-uploadpart&uploadId={upload_id}&partNumber={number}",
        headers={**(headers or {}), **OCTET},
        content=content,
    )


def etag_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    etag: str = response.json()["etag"]
    return etag


def complete(
    client: httpx.Client,
    file_id: str,
    upload_id: str,
    parts: Any,
    headers: Headers | None = None,
) -> httpx.Response:
    return client.post(
        f"{BASE}/{file_id}?action=mpu-complete&uploadId={upload_id}",
        headers=headers,
        json={"parts": parts},
    )


def abort(
    client: httpx.Client, file_id: str, upload_id: str, headers: Headers | None = None
) -> httpx.Response:
    return client.delete(f"{BASE}/{file_id}?action=mpu-abort&uploadId={upload_id}", headers=headers)


def submit(client: httpx.Client, data: bytes, headers: Headers | None = None) -> dict[str, Any]:
    """A whole file as one part; the mpu-complete body."""
    file_id, upload_id = create(client, headers)
    etag = etag_of(put_part(client, file_id, upload_id, 1, data, headers))
    response = complete(client, file_id, upload_id, [{"partNumber": 1, "etag": etag}], headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def submit_in_parts(
    client: httpx.Client, data: bytes, headers: Headers | None = None
) -> dict[str, Any]:
    """A file of any size, in parts of the largest size the server takes (as the page does)."""
    file_id, upload_id = create(client, headers)
    parts = []
    for number, start in enumerate(range(0, len(data), PART_LIMIT), start=1):
        piece = data[start : start + PART_LIMIT]
        etag = etag_of(put_part(client, file_id, upload_id, number, piece, headers))
        parts.append({"partNumber": number, "etag": etag})
    response = complete(client, file_id, upload_id, parts, headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def strict_lines(client: httpx.Client, status: dict[str, Any]) -> list[dict[str, Any]]:
    """Every result line, parsed as strict JSON: `Infinity` / `NaN` would fail the test."""

    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} in a result line is not JSON")

    lines = []
    for output in status["outputs"]:
        response = client.get(output["url"])
        assert response.status_code == 200, response.text
        lines += [json.loads(line, parse_constant=refuse) for line in response.text.splitlines()]
    return lines


def wait_done(
    client: httpx.Client,
    batch_id: str,
    headers: Headers | None = None,
) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        response = client.get(f"{BASE}/{batch_id}", headers=headers)
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        if status["status"] in ("completed", "failed"):
            return status
        assert time.monotonic() < deadline, f"batch {batch_id} still {status['status']}"
        time.sleep(0.05)


def download(client: httpx.Client, status: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Every output file's result lines, by output index (the URL is the only credential)."""
    files = []
    for output in status["outputs"]:
        response = client.get(output["url"], headers={})
        assert response.status_code == 200, response.text
        files.append([json.loads(line) for line in response.text.splitlines()])
    return files


def run_batch(
    client: httpx.Client, data: bytes, headers: Headers | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Submit, wait, and return (final status, all result lines in file order)."""
    status = wait_done(client, submit(client, data, headers)["id"], headers)
    return status, [line for file in download(client, status) for line in file]


def error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    found: dict[str, Any] = body["error"]
    return found


def parse_iso(text: str) -> dt.datetime:
    assert ISO_Z.match(text), text
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


# --- 1. the seed page's flow over a mixed file --------------------------------------------------

IMAGE = b64(coco_image())

MIXED: list[dict[str, Any]] = [
    {"id": "img_000", "skill": "detect", "image": IMAGE, "object": "person"},
    {"id": "img_001", "skill": "detect", "image": IMAGE, "object": "people"},
    {"id": "img_002", "skill": "detect", "image": IMAGE, "object": "tv"},
    {"id": "img_003", "skill": "point", "image": IMAGE, "object": "person"},
    {"id": "img_004", "skill": "caption", "image": IMAGE, "length": "normal"},
    {"id": "img_005", "skill": "query", "image": IMAGE, "question": "What is on the TV?"},
    {"id": "img_006", "skill": "detect", "image": IMAGE, "object": "door handle"},
    {"id": "img_007", "skill": "detect", "image": "@@not*base64@@", "object": "person"},
    {"id": "img_008", "skill": "segment", "image": IMAGE, "object": "person"},
    {"id": "img_009", "skill": "detect", "image": IMAGE},
    {"id": "img_010", "skill": "query", "image": IMAGE},
    {"id": "img_011", "skill": "point", "image": IMAGE, "object": "door handle"},
    {"skill": "caption", "image": IMAGE, "length": "short"},  # no id: optional
    {"id": 42, "skill": "detect", "image": IMAGE, "object": "a person"},
    {"id": "img_014", "skill": "detect", "image": b64(b"not an image at all"), "object": "tv"},
]
OK_LINES = {0, 1, 2, 3, 13}
ERROR_CODES = {
    4: "processing_error",
    5: "processing_error",
    6: "processing_error",
    7: "image_decode_failed",  # the page: "Corrupt or invalid image data"
    8: "unknown_skill",
    9: "invalid_request",
    10: "invalid_request",
    11: "processing_error",
    12: "processing_error",
    14: "image_decode_failed",
}


@pytest.fixture(scope="module")
def seed_flow(live: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The page's Python client, nearly verbatim (httpx for requests, a short poll interval)."""
    path = tmp_path_factory.mktemp("seed") / "batch_input.jsonl"
    path.write_bytes(jsonl(*MIXED))
    polled: list[dict[str, Any]] = []
    part_responses: list[dict[str, Any]] = []

    with live.client() as requests:
        base_url = f"{live.url}/v1/batch"
        headers = {"X-Moondream-Auth": "ignored-when-auth-is-disabled"}
        chunk_size = PART_LIMIT  # the largest part the server takes

        init = requests.post(f"{base_url}?action=mpu-create", headers=headers).json()
        file_id = init["fileId"]
        upload_id = init["uploadId"]

        parts = []
        chunks = []
        with open(path, "rb") as f:
            part_number = 1
            while chunk := f.read(chunk_size):
                query = f"uploadId={upload_id}&partNumber={part_number}"
                part = requests.put(
                    f"{base_url}/{file_id}?action=mpu-uploadpart&{query}",
                    headers={**headers, "Content-Type": "application/octet-stream"},
                    content=chunk,
                ).json()
                part_responses.append(part)
                chunks.append(chunk)
                parts.append({"partNumber": part_number, "etag": part["etag"]})
                part_number += 1

        batch = requests.post(
            f"{base_url}/{file_id}?action=mpu-complete&uploadId={upload_id}",
            headers=headers,
            json={"parts": parts},
        ).json()

        deadline = time.monotonic() + 60
        while True:
            status = requests.get(f"{base_url}/{batch['id']}", headers=headers).json()
            polled.append(status)
            if status["status"] in ["completed", "failed"]:
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.05)

        files = download(requests, status)

    return {
        "data": path.read_bytes(),
        "init": init,
        "chunks": chunks,
        "part_responses": part_responses,
        "batch": batch,
        "polled": polled,
        "status": status,
        "files": files,
        "lines": [line for file in files for line in file],
    }


def test_seed_flow_upload_responses_have_the_page_shapes(seed_flow: dict[str, Any]) -> None:
    init = seed_flow["init"]
    assert set(init) == {"fileId", "uploadId", "key"}
    assert all(isinstance(init[k], str) and init[k] for k in init)
    assert re.fullmatch(rf"requests/[^/]+/{re.escape(init['fileId'])}\.jsonl", init["key"])

    chunks, responses = seed_flow["chunks"], seed_flow["part_responses"]
    assert len(chunks) > 1 and all(len(c) <= PART_LIMIT for c in chunks)
    assert len(chunks[0]) == PART_LIMIT  # a part exactly at the limit is taken
    for number, (chunk, part) in enumerate(zip(chunks, responses, strict=True), start=1):
        assert set(part) == {"etag", "partNumber"}
        assert part["partNumber"] == number
        assert QUOTED_ETAG.match(part["etag"]), part
        assert part["etag"] == f'"{hashlib.md5(chunk).hexdigest()}"'  # S3's etag of a part

    batch = seed_flow["batch"]
    assert batch == {"id": batch["id"], "status": "chunking", "size": len(seed_flow["data"])}


def test_seed_flow_status_object(seed_flow: dict[str, Any], live: LiveServer) -> None:
    for polled in seed_flow["polled"]:
        assert polled["id"] == seed_flow["batch"]["id"]
        assert polled["status"] in STATES
        assert {"id", "status", "model", "progress", "created_at"} <= set(polled)

    status = seed_flow["status"]
    assert status["status"] == "completed"
    assert {
        "id",
        "status",
        "model",
        "progress",
        "usage",
        "outputs",
        "created_at",
        "completed_at",
        "expires_at",
    } <= set(status)
    assert "error" not in status
    assert isinstance(status["model"], str) and status["model"]
    assert status["progress"] == {
        "total": len(MIXED),
        "completed": len(OK_LINES),
        "failed": len(MIXED) - len(OK_LINES),
    }
    assert set(status["usage"]) == {"input_tokens", "output_tokens"}
    assert all(isinstance(v, int) and v >= 0 for v in status["usage"].values())

    created = parse_iso(status["created_at"])
    completed = parse_iso(status["completed_at"])
    expires = parse_iso(status["expires_at"])
    assert created <= completed <= dt.datetime.now(dt.UTC)
    assert expires - completed == dt.timedelta(days=7)

    # 15 lines, 10 per output file: two files, links to this server
    assert [o["index"] for o in status["outputs"]] == [0, 1]
    for output in status["outputs"]:
        assert set(output) == {"index", "url"}
        assert output["url"].startswith(f"{live.url}/")
    assert [len(file) for file in seed_flow["files"]] == [10, 5]


def test_seed_flow_result_lines_in_order_with_ids(seed_flow: dict[str, Any]) -> None:
    lines = seed_flow["lines"]
    assert [line["line_index"] for line in lines] == list(range(len(MIXED)))
    for line, sent in zip(lines, MIXED, strict=True):
        if isinstance(sent.get("id"), str):
            assert line["id"] == sent["id"]
    assert lines[12]["id"] is None  # a line without an id
    for index, line in enumerate(lines):
        if index in OK_LINES:
            assert line["status"] == "ok", line
            assert {"line_index", "id", "status", "result"} <= set(line)
            assert "error" not in line
        else:
            assert line["status"] == "error", line
            assert set(line) == {"line_index", "id", "status", "error"}
            assert set(line["error"]) == {"code", "message"}


def test_seed_flow_integer_id_comes_back_as_sent(seed_flow: dict[str, Any]) -> None:
    # The page: `id` is "any", "returned in results".
    assert seed_flow["lines"][13]["id"] == 42


def test_seed_flow_ok_lines_carry_usage(seed_flow: dict[str, Any]) -> None:
    # The page's "Successful result" has "usage": {"input_tokens", "output_tokens"}.
    for index in sorted(OK_LINES):
        usage = seed_flow["lines"][index].get("usage")
        assert isinstance(usage, dict), seed_flow["lines"][index]
        assert {"input_tokens", "output_tokens"} <= set(usage)


@pytest.mark.parametrize("index", sorted(ERROR_CODES))
def test_seed_flow_per_line_error_codes(seed_flow: dict[str, Any], index: int) -> None:
    line = seed_flow["lines"][index]
    assert line["status"] == "error"
    assert line["error"]["code"] == ERROR_CODES[index], line["error"]


def test_seed_flow_error_messages_say_why(seed_flow: dict[str, Any]) -> None:
    message = {i: seed_flow["lines"][i]["error"]["message"] for i in ERROR_CODES}
    for index in (4, 5, 6, 11, 12):  # caption, query, non-COCO objects: no VLM here
        assert NO_VLM in message[index], message[index]
    assert "door handle" in message[6]
    assert "segment" in message[8]
    assert "object" in message[9]
    assert "question" in message[10]


def _boxes(line: dict[str, Any]) -> list[dict[str, float]]:
    assert line["status"] == "ok", line
    assert set(line["result"]) == {"objects"}
    boxes: list[dict[str, float]] = line["result"]["objects"]
    for box in boxes:
        assert set(box) == {"x_min", "y_min", "x_max", "y_max"}
        assert 0.0 <= box["x_min"] < box["x_max"] <= 1.0, box
        assert 0.0 <= box["y_min"] < box["y_max"] <= 1.0, box
    return boxes


def test_seed_flow_detect_gives_normalised_boxes(seed_flow: dict[str, Any]) -> None:
    lines = seed_flow["lines"]
    people = _boxes(lines[0])
    assert people, "the COCO photo shows people"
    # "people" and "a person" are the same COCO class as "person"
    for index in (1, 13):
        same = _boxes(lines[index])
        assert len(same) == len(people)
        for a, b in zip(same, people, strict=True):
            assert a == pytest.approx(b, abs=1e-3)
    assert _boxes(lines[2]), "the COCO photo shows a tv"


def test_seed_flow_points_fall_inside_the_people(seed_flow: dict[str, Any]) -> None:
    lines = seed_flow["lines"]
    people = _boxes(lines[0])
    assert set(lines[3]["result"]) == {"points"}
    points = lines[3]["result"]["points"]
    assert len(points) == len(people)
    for point in points:
        assert set(point) == {"x", "y"}
        assert any(
            b["x_min"] <= point["x"] <= b["x_max"] and b["y_min"] <= point["y"] <= b["y_max"]
            for b in people
        ), point


def test_seed_flow_input_is_deleted_once_done(seed_flow: dict[str, Any], live: LiveServer) -> None:
    # The page: "Input files are deleted immediately after processing completes".
    blobs = LocalBlobs(live.settings.data_dir / "blobs")
    batch_id, file_id = seed_flow["batch"]["id"], seed_flow["init"]["fileId"]
    assert blobs.list_prefix(f"uploads/{file_id}/") == []
    left = [blob.key for blob in blobs.list_prefix(f"jobs/{batch_id}/")]
    assert left and all("/outputs/" in key for key in left), left


def test_output_links_are_signed(seed_flow: dict[str, Any], live: LiveServer) -> None:
    url = seed_flow["status"]["outputs"][0]["url"]
    with live.client() as client:
        assert client.get(url).status_code == 200
        forged = re.sub(r"signature=[0-9a-f]", "signature=z", url)
        assert forged != url
        assert client.get(forged).status_code == 403
        other = url.replace("/outputs/0?", "/outputs/1?")
        assert client.get(other).status_code == 403  # a link signs one file only


# --- 1b. ids are "any" ---------------------------------------------------------------------------


def small_png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (10, 120, 200)).save(buffer, format="PNG")
    return b64(buffer.getvalue())


def big_nested_id() -> dict[str, Any]:
    """About 1 MB of nested JSON: well inside the 10 MB line limit."""
    rows = [{"i": i, "tags": ["t", i % 7 == 0, None, {"x": [i, [i / 8]]}]} for i in range(20_000)]
    return {"dataset": "coco", "rows": rows, "deep": [[[[[{"leaf": True}]]]]]}


# Every JSON type, edge values of each, and a ~1 MB nested object (the page: `id` is "any").
ANY_IDS: list[Any] = [
    "img_001",
    "",
    "ünïcødé €",
    0,
    -7,
    12345678901234567890123456789,  # beyond 64-bit integers
    1.5,
    -0.25,
    6.02e23,
    True,
    False,
    [],
    {},
    [1, "a", None, {"b": [True, 2.5]}],
    {"file": "a.jpg", "meta": {"frame": 3, "ok": False}},
    big_nested_id(),
]


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON text: True is not 1, 1.0 is not 1, key order counts."""
    return json.dumps(a, ensure_ascii=False) == json.dumps(b, ensure_ascii=False)


@pytest.mark.parametrize("line_kind", ["ok", "invalid_request", "unknown_skill"])
def test_any_json_id_comes_back_unchanged(client: httpx.Client, line_kind: str) -> None:
    png = small_png()
    body = {
        "ok": {"skill": "detect", "image": png, "object": "person"},
        "invalid_request": {"skill": "detect", "image": png},  # no object
        "unknown_skill": {"skill": "segment", "image": png},
    }[line_kind]
    data = jsonl(*({"id": sent, **body} for sent in ANY_IDS))
    assert len(data) > 10 * PART_LIMIT  # the big id needs many parts
    status = wait_done(client, submit_in_parts(client, data)["id"])
    if line_kind == "ok":
        assert status["status"] == "completed", status
    else:  # every line refused: the page's empty_batch, result lines kept
        assert (status["status"], status["error"]["code"]) == ("failed", "empty_batch"), status
    lines = strict_lines(client, status)
    assert [line["line_index"] for line in lines] == list(range(len(ANY_IDS)))
    for line, sent in zip(lines, ANY_IDS, strict=True):
        assert same_json(line["id"], sent), (line["id"], sent)
        if line_kind == "ok":
            assert line["status"] == "ok" and line["result"] == {"objects": []}, line
        else:
            assert line["error"]["code"] == line_kind, line


def test_a_null_id_is_no_id_and_an_infinite_number_is_refused(client: httpx.Client) -> None:
    png = small_png()
    data = (
        jsonl({"id": None, "skill": "detect", "image": png, "object": "car"})
        + b'{"id": 1e400, "skill": "detect", "image": "'
        + png.encode()
        + b'", "object": "car"}\n'
        + b'{"id": [1, {"x": -1e999}], "skill": "detect", "image": "'
        + png.encode()
        + b'"}\n'
        + jsonl({"id": 1e300, "skill": "detect", "image": png, "object": "car"})
    )
    status, _ = run_batch(client, data)
    lines = strict_lines(client, status)
    assert lines[0]["id"] is None and lines[0]["status"] == "ok", lines[0]
    for refused in lines[1:3]:
        # 1e400 parses as infinity, which JSON cannot echo: the line is refused, not mangled
        assert refused["id"] is None
        assert refused["error"]["code"] == "invalid_request", refused
        assert "'id'" in refused["error"]["message"]
    assert lines[3]["id"] == 1e300 and lines[3]["status"] == "ok", lines[3]


def test_native_jobs_keep_the_string_or_integer_id_rule(client: httpx.Client) -> None:
    png = small_png()
    data = jsonl(
        {"id": {"a": 1}, "skill": "metadata", "image": png},
        {"id": 7, "skill": "metadata", "image": png},
    )
    response = client.post("/v1/jobs", content=data)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    deadline = time.monotonic() + 60
    while client.get(f"/v1/jobs/{job_id}").json()["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    lines = [json.loads(line) for line in client.get(f"/v1/jobs/{job_id}/results").iter_lines()]
    assert lines[0]["status"] == "error" and lines[0]["id"] is None
    assert "string or an integer" in lines[0]["error"]["message"]
    assert lines[1]["status"] == "ok" and lines[1]["id"] == 7


# --- 1c. typed lines ----------------------------------------------------------------------------

# (line fields besides id and image, expected code, fragments its message must hold)
TYPED_LINES: list[tuple[dict[str, Any], str, list[str]]] = [
    (
        {"skill": "caption", "length": "huge", "settings": {"temperature": "hot", "max_tokens": 0}},
        "invalid_request",
        [
            "caption: ",
            "'length' must be one of 'short', 'normal', 'long'",
            "'settings.temperature' must be a number from 0 to 2 (got a string)",
            "'settings.max_tokens' must be an integer from 1 to 4096",
        ],
    ),
    (
        {"skill": "query", "question": None, "reasoning": "yes"},
        "invalid_request",
        ["missing required field 'question'", "'reasoning' must be true or false (got a string)"],
    ),
    (
        {"skill": "query", "question": "?", "settings": [0.7]},
        "invalid_request",
        ["'settings' must be an object"],
    ),
    (
        {"skill": "detect", "object": "car", "settings": {"temperature": 0.5}},
        "invalid_request",
        ["'settings' is only supported by caption and query"],
    ),
    ({"skill": "point", "object": "x" * 501}, "invalid_request", ["longer than 500 characters"]),
    ({"skill": "detect", "object": 5}, "invalid_request", ["'object' must be a non-empty string"]),
    ({"skill": "Caption"}, "unknown_skill", ["'Caption'", "caption, detect, point, query"]),
    # valid lines: null fields are absent, unknown keys and settings keys are ignored
    ({"skill": "detect", "object": "person", "settings": None, "length": 5}, "ok", []),
    ({"skill": "caption", "length": None, "settings": {"seed": 1}, "extra": []}, NO_VLM, []),
    ({"skill": "query", "question": "?", "settings": {"top_p": 1, "temperature": 2}}, NO_VLM, []),
]  # fmt: skip


def test_typed_lines_over_http(client: httpx.Client) -> None:
    png = small_png()
    data = jsonl(
        *({"id": n, "image": png, **fields} for n, (fields, _, _) in enumerate(TYPED_LINES))
    )
    status, lines = run_batch(client, data)
    assert status["status"] == "completed", status
    for line, (fields, expected, fragments) in zip(lines, TYPED_LINES, strict=True):
        if expected == "ok":
            assert line["status"] == "ok", (fields, line)
            continue
        code, message = line["error"]["code"], line["error"]["message"]
        if expected == NO_VLM:
            assert code == "processing_error" and NO_VLM in message, (fields, line)
            continue
        assert code == expected, (fields, line)
        for fragment in fragments:
            assert fragment in message, (fields, message)


# --- 2. multipart rules -------------------------------------------------------------------------


def test_parts_out_of_order_join_by_part_number(client: httpx.Client) -> None:
    first, second = tiny("a", "b"), tiny("c")
    file_id, upload_id = create(client)
    etag2 = etag_of(put_part(client, file_id, upload_id, 2, second))
    etag1 = etag_of(put_part(client, file_id, upload_id, 1, first))
    parts = [{"partNumber": 1, "etag": etag1}, {"partNumber": 2, "etag": etag2}]
    response = complete(client, file_id, upload_id, parts)
    assert response.status_code == 200, response.text
    assert response.json()["size"] == len(first) + len(second)
    status = wait_done(client, response.json()["id"])
    lines = [line for file in download(client, status) for line in file]
    assert [line["id"] for line in lines] == ["a", "b", "c"]
    assert [line["error"]["code"] for line in lines] == ["unknown_skill"] * 3


def test_parts_may_skip_numbers(client: httpx.Client) -> None:
    file_id, upload_id = create(client)
    etag1 = etag_of(put_part(client, file_id, upload_id, 1, tiny("a")))
    etag5 = etag_of(put_part(client, file_id, upload_id, 5, tiny("e")))
    parts = [{"partNumber": 1, "etag": etag1}, {"partNumber": 5, "etag": etag5}]
    response = complete(client, file_id, upload_id, parts)
    assert response.status_code == 200, response.text
    status = wait_done(client, response.json()["id"])
    assert [line["id"] for file in download(client, status) for line in file] == ["a", "e"]


def test_resent_part_second_copy_wins(client: httpx.Client) -> None:
    file_id, upload_id = create(client)
    old = etag_of(put_part(client, file_id, upload_id, 1, tiny("first")))
    new = etag_of(put_part(client, file_id, upload_id, 1, tiny("second")))
    assert old != new

    stale = complete(client, file_id, upload_id, [{"partNumber": 1, "etag": old}])
    assert stale.is_client_error and stale.status_code != 404, stale.text
    assert "part 1" in error(stale)["message"]

    # the refused completion left the upload open; the etag may come without its quotes
    response = complete(client, file_id, upload_id, [{"partNumber": 1, "etag": new.strip('"')}])
    assert response.status_code == 200, response.text
    status = wait_done(client, response.json()["id"])
    assert [line["id"] for file in download(client, status) for line in file] == ["second"]


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
def test_part_over_the_limit_is_413_and_keeps_the_earlier_copy(
    client: httpx.Client, streamed: bool
) -> None:
    file_id, upload_id = create(client)
    good = tiny("kept")
    etag = etag_of(put_part(client, file_id, upload_id, 1, good))

    oversize = b"x" * (PART_LIMIT + 1)

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(oversize), 16 * 1024):
            yield oversize[start : start + 16 * 1024]

    response = put_part(client, file_id, upload_id, 1, pieces() if streamed else oversize)
    assert response.status_code == 413, response.text
    if streamed:
        assert "content-length" not in response.request.headers
    else:
        assert response.request.headers["content-length"] == str(PART_LIMIT + 1)
    assert error(response)["code"] == "payload_too_large"

    done = complete(client, file_id, upload_id, [{"partNumber": 1, "etag": etag}])
    assert done.status_code == 200, done.text
    assert done.json()["size"] == len(good)
    status = wait_done(client, done.json()["id"])
    assert [line["id"] for file in download(client, status) for line in file] == ["kept"]


def test_complete_refuses_bad_part_lists(client: httpx.Client) -> None:
    file_id, upload_id = create(client)
    etag1 = etag_of(put_part(client, file_id, upload_id, 1, tiny("a")))
    etag2 = etag_of(put_part(client, file_id, upload_id, 2, tiny("b")))
    one, two = {"partNumber": 1, "etag": etag1}, {"partNumber": 2, "etag": etag2}
    cases: list[tuple[Any, str]] = [
        ([one, two, {"partNumber": 3, "etag": etag2}], "part 3"),  # never uploaded
        ([one, {"partNumber": 2, "etag": etag1}], "part 2"),  # wrong etag
        ([two, one], "ascending"),
        ([one, one], "ascending"),
        ([], "parts"),
    ]
    for parts, fragment in cases:
        response = complete(client, file_id, upload_id, parts)
        assert response.status_code == 400, (parts, response.status_code, response.text)
        assert fragment in error(response)["message"], response.text
    # none of the refusals closed the upload
    response = complete(client, file_id, upload_id, [one, two])
    assert response.status_code == 200, response.text


def test_wrong_upload_id_is_404(client: httpx.Client) -> None:
    file_id, upload_id = create(client)
    etag = etag_of(put_part(client, file_id, upload_id, 1, tiny("a")))
    wrong = upload_id + "x"
    assert put_part(client, file_id, wrong, 1, tiny("b")).status_code == 404
    parts = [{"partNumber": 1, "etag": etag}]
    assert complete(client, file_id, wrong, parts).status_code == 404
    assert abort(client, file_id, wrong).status_code == 404
    missing = client.put(
        f"{BASE}/{file_id}?action=mpu-uploadpart&partNumber=1", content=b"x", headers=OCTET
    )
    assert missing.status_code == 404
    assert error(missing)["code"] == "not_found"
    other_file, _ = create(client)
    assert put_part(client, other_file, upload_id, 1, tiny("c")).status_code == 404
    # the right id still works: nothing above touched the upload
    assert complete(client, file_id, upload_id, parts).status_code == 200


def test_complete_twice_is_404(client: httpx.Client) -> None:
    file_id, upload_id = create(client)
    etag = etag_of(put_part(client, file_id, upload_id, 1, tiny("a")))
    parts = [{"partNumber": 1, "etag": etag}]
    first = complete(client, file_id, upload_id, parts)
    assert first.status_code == 200, first.text
    again = complete(client, file_id, upload_id, parts)
    assert again.status_code == 404
    assert error(again)["code"] == "not_found"
    assert put_part(client, file_id, upload_id, 2, tiny("b")).status_code == 404
    assert abort(client, file_id, upload_id).status_code == 404
    wait_done(client, first.json()["id"])


def test_abort_then_everything_is_404(client: httpx.Client) -> None:
    file_id, upload_id = create(client)
    etag = etag_of(put_part(client, file_id, upload_id, 1, tiny("a")))
    response = abort(client, file_id, upload_id)
    assert response.status_code == 204
    assert response.content == b""
    assert put_part(client, file_id, upload_id, 2, tiny("b")).status_code == 404
    parts = [{"partNumber": 1, "etag": etag}]
    assert complete(client, file_id, upload_id, parts).status_code == 404
    assert abort(client, file_id, upload_id).status_code == 404


BAD_PART_NUMBERS = ["0", "-1", "10001", "99999", "abc", "1.5", "1e3", "", " 1", "+1", "٣", "²"]


@pytest.mark.parametrize("number", [*BAD_PART_NUMBERS, "9" * 5000, None])
def test_a_bad_part_number_is_400_and_leaves_the_upload_open(
    client: httpx.Client, number: str | None
) -> None:
    # S3 answers a missing or malformed partNumber with 400 InvalidArgument, not 422.
    file_id, upload_id = create(client)
    etag = etag_of(put_part(client, file_id, upload_id, 1, tiny("kept")))
    query = f"uploadId={upload_id}" + ("" if number is None else f"&partNumber={number}")
    response = client.put(
        f"{BASE}/{file_id}?action=mpu-uploadpart&{query}", headers=OCTET, content=tiny("no")
    )
    assert response.status_code == 400, response.text
    assert error(response)["code"] == "invalid_request"
    assert "partNumber" in error(response)["message"]
    assert "10000" in error(response)["message"]
    done = complete(client, file_id, upload_id, [{"partNumber": 1, "etag": etag}])
    assert done.status_code == 200, done.text
    status = wait_done(client, done.json()["id"])
    assert [line["id"] for file in download(client, status) for line in file] == ["kept"]


def test_part_numbers_1_and_10000_and_leading_zeros_are_taken(client: httpx.Client) -> None:
    file_id, upload_id = create(client)
    first = etag_of(put_part(client, file_id, upload_id, 1, tiny("a")))
    last = client.put(
        f"{BASE}/{file_id}?action=mpu-uploadpart&uploadId={upload_id}&partNumber=010000",
        headers=OCTET,
        content=tiny("z"),
    )
    assert last.json()["partNumber"] == 10000, last.text
    parts = [{"partNumber": 1, "etag": first}, {"partNumber": 10000, "etag": etag_of(last)}]
    done = complete(client, file_id, upload_id, parts)
    assert done.status_code == 200, done.text
    status = wait_done(client, done.json()["id"])
    assert [line["id"] for file in download(client, status) for line in file] == ["a", "z"]


@pytest.mark.parametrize("number", [0, -1, 10001, "1", 1.0, True, None])
def test_a_bad_part_number_at_completion_is_400(client: httpx.Client, number: Any) -> None:
    file_id, upload_id = create(client)
    etag = etag_of(put_part(client, file_id, upload_id, 1, tiny("a")))
    response = complete(client, file_id, upload_id, [{"partNumber": number, "etag": etag}])
    assert response.status_code == 400, response.text
    assert error(response)["code"] == "invalid_request"
    assert "partNumber" in error(response)["message"]
    assert complete(client, file_id, upload_id, [{"partNumber": 1, "etag": etag}]).is_success


# --- 3. batch-level errors ----------------------------------------------------------------------


def _failed(client: httpx.Client, data: bytes) -> dict[str, Any]:
    batch = submit(client, data)
    assert batch["size"] == len(data)
    assert batch["status"] in ("chunking", "failed")
    status = wait_done(client, batch["id"])
    assert status["status"] == "failed", status
    assert set(status["error"]) == {"code", "message"}
    assert status["outputs"] == []
    parse_iso(status["completed_at"])
    found: dict[str, Any] = status["error"]
    return found


@pytest.mark.parametrize(
    ("data", "code", "fragment"),
    [
        (tiny("a") + b"\n" + tiny("c"), "validation_error", "line 2"),
        (tiny("a", "b") + b"   \n", "validation_error", "line 3"),
        (tiny("a") + b'{"id": "b\xff", "skill": "caption"}\n', "validation_error", "line 2"),
        (tiny("a") + b"{not json\n", "validation_error", "line 2"),
        (tiny("a") + b"[1, 2]\n", "validation_error", "line 2"),
        (tiny(*map(str, range(21))), "limit_exceeded", "line 21"),
        (
            tiny("a") + jsonl({"id": "b", "skill": "detect", "object": "x" * 300}),
            "limit_exceeded",
            "line 2",
        ),
        (b"", "empty_batch", ""),
    ],
    ids=["blank", "whitespace", "utf8", "json", "array", "lines", "line-bytes", "empty"],
)
def test_batch_level_errors(strict: LiveServer, data: bytes, code: str, fragment: str) -> None:
    with strict.client() as client:
        failure = _failed(client, data)
    assert failure["code"] == code, failure
    assert fragment in failure["message"], failure


def test_file_over_the_limit(strict: LiveServer) -> None:
    limit = strict.settings.job_max_file_bytes  # 4096: 16 lines of 256 bytes
    line = tiny("x" * (256 - len(tiny(""))))
    assert len(line) == 256 and limit % len(line) == 0
    one_part = line * (limit // len(line) + 1)
    half = line * (limit // len(line) // 2 + 1)
    with strict.client() as client:
        failure = _failed(client, one_part)
        assert failure["code"] == "limit_exceeded"
        assert str(limit) in failure["message"]

        # two parts, each under the limit, together over it
        file_id, upload_id = create(client)
        parts = [
            {"partNumber": n, "etag": etag_of(put_part(client, file_id, upload_id, n, half))}
            for n in (1, 2)
        ]
        response = complete(client, file_id, upload_id, parts)
        assert response.status_code == 200, response.text
        assert response.json()["size"] == 2 * len(half) > limit
        status = wait_done(client, response.json()["id"])
        assert status["status"] == "failed"
        assert status["error"]["code"] == "limit_exceeded"

        # at the limit exactly, the file is taken (its lines are all unknown_skill, so the
        # batch then ends empty_batch, with every line's result kept)
        fits = line * (limit // len(line))
        status, lines = run_batch(client, fits)
        assert (status["status"], status["error"]["code"]) == ("failed", "empty_batch"), status
        assert len(lines) == limit // len(line)


def test_the_page_flow_on_an_empty_file_sends_no_parts(strict: LiveServer) -> None:
    # An empty file read in CHUNK_SIZE pieces gives no parts at all.
    with strict.client() as client:
        file_id, upload_id = create(client)
        response = complete(client, file_id, upload_id, [])
        assert response.status_code == 400
        assert error(response)["code"] == "invalid_request"


# --- 4. listing ---------------------------------------------------------------------------------


def test_list_pages_newest_first(keyed: tuple[LiveServer, KeyStore]) -> None:
    live, store = keyed
    headers = auth(store, "lister")
    with live.client() as client:
        made = [submit(client, tiny(f"b{n}"), headers)["id"] for n in range(5)]
        for batch_id in made:
            wait_done(client, batch_id, headers)

        pages: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(4):
            params: dict[str, Any] = {"limit": 2}
            if cursor is not None:
                params["cursor"] = cursor
            response = client.get(BASE, params=params, headers=headers)
            assert response.status_code == 200, response.text
            page = response.json()
            assert set(page) == {"batches", "next_cursor", "has_more"}
            pages.append(page)
            cursor = page["next_cursor"]
            if not page["has_more"]:
                break

        assert [len(p["batches"]) for p in pages] == [2, 2, 1]
        assert [p["has_more"] for p in pages] == [True, True, False]
        assert all(isinstance(p["next_cursor"], str) for p in pages[:2])
        assert pages[-1]["next_cursor"] is None
        listed = [b["id"] for p in pages for b in p["batches"]]
        assert listed == made[::-1]  # newest first, no duplicates, none missing
        for page in pages:
            for batch in page["batches"]:
                assert batch["status"] == "failed"  # tiny() lines are all invalid: empty_batch
                assert {"id", "status", "model", "progress", "outputs", "created_at"} <= set(batch)

        everything = client.get(BASE, headers=headers).json()  # default limit 50
        assert [b["id"] for b in everything["batches"]] == made[::-1]
        assert everything["has_more"] is False


@pytest.mark.parametrize("limit", ["0", "101", "abc", "-1", "2.5", "", "٣", "²", "9" * 5000])
def test_list_limit_out_of_range_is_400(client: httpx.Client, limit: str) -> None:
    response = client.get(BASE, params={"limit": limit})
    assert response.status_code == 400, response.text
    assert "limit" in error(response)["message"]


def test_list_limit_bounds_are_taken(client: httpx.Client) -> None:
    for limit in ("1", "100"):
        assert client.get(BASE, params={"limit": limit}).status_code == 200


UNKNOWN_CURSORS = ["nope", "0" * 32, "\x00", "ü" * 40, "x" * 5000]


def _list(client: httpx.Client, path: str, headers: Headers, **params: Any) -> httpx.Response:
    return client.get(path, params=params, headers=headers)


@pytest.mark.parametrize("surface", ["moondream", "native"])
def test_a_cursor_no_listing_handed_out_is_400(
    keyed: tuple[LiveServer, KeyStore], surface: str
) -> None:
    """Unknown ids, another key's job and a job of the other surface are all refused with the
    same body, so a cursor never tells whether an id exists; an empty cursor is the first page."""
    live, store = keyed
    mine, theirs = auth(store, f"{surface}-me"), auth(store, f"{surface}-them")
    my_bearer, their_bearer = bearer(mine), bearer(theirs)
    path, field, headers = (
        (BASE, "batches", mine) if surface == "moondream" else ("/v1/jobs", "jobs", my_bearer)
    )
    with live.client() as client:
        my_batch = submit(client, tiny("a"), mine)["id"]
        their_batch = submit(client, tiny("b"), theirs)["id"]
        my_job = client.post("/v1/jobs", content=tiny("c"), headers=my_bearer).json()["id"]
        their_job = client.post("/v1/jobs", content=tiny("d"), headers=their_bearer).json()["id"]
        other_surface = my_job if surface == "moondream" else my_batch
        other_key = their_batch if surface == "moondream" else their_job

        refusals = [
            _list(client, path, headers, cursor=cursor)
            for cursor in [*UNKNOWN_CURSORS, other_key, other_surface]
        ]
        for response in refusals:
            assert response.status_code == 400, response.text
            assert error(response)["code"] == "invalid_request"
            assert "cursor is not valid" in error(response)["message"]
            assert error(response) == error(refusals[0])  # one answer for every unknown cursor

        first = _list(client, path, headers, cursor="")
        assert first.status_code == 200, first.text
        assert [item["id"] for item in first.json()[field]] == [
            my_batch if surface == "moondream" else my_job
        ]
        own = first.json()[field][0]["id"]
        after = _list(client, path, headers, cursor=own)  # a real cursor still pages
        assert after.status_code == 200 and after.json()[field] == [], after.text
        for batch in (my_batch, their_batch):
            wait_done(client, batch, mine if batch == my_batch else theirs)


# --- 5. tenants ---------------------------------------------------------------------------------


def test_tenants_see_only_their_own(keyed: tuple[LiveServer, KeyStore]) -> None:
    live, store = keyed
    alice, bob = auth(store, "alice"), auth(store, "bob")
    with live.client() as client:
        file_id, upload_id = create(client, alice)
        etag = etag_of(put_part(client, file_id, upload_id, 1, tiny("hers"), alice))
        parts = [{"partNumber": 1, "etag": etag}]

        # bob knows alice's ids and still finds nothing
        assert put_part(client, file_id, upload_id, 1, tiny("his"), bob).status_code == 404
        assert put_part(client, file_id, upload_id, 2, tiny("his"), bob).status_code == 404
        assert complete(client, file_id, upload_id, parts, bob).status_code == 404
        assert abort(client, file_id, upload_id, bob).status_code == 404

        response = complete(client, file_id, upload_id, parts, alice)
        assert response.status_code == 200, response.text
        batch_id = response.json()["id"]
        status = wait_done(client, batch_id, alice)
        assert [line["id"] for file in download(client, status) for line in file] == ["hers"]

        hidden = client.get(f"{BASE}/{batch_id}", headers=bob)
        assert hidden.status_code == 404
        assert error(hidden)["code"] == "not_found"
        mine = submit(client, tiny("his"), bob)["id"]
        listed = client.get(BASE, headers=bob).json()
        assert [b["id"] for b in listed["batches"]] == [mine]
        # alice's batch id as bob's cursor shows him nothing of hers either: it is refused
        # exactly as an id that never existed, so bob cannot even learn that it exists
        paged = client.get(BASE, params={"cursor": batch_id}, headers=bob)
        never = client.get(BASE, params={"cursor": "0" * 32}, headers=bob)
        assert paged.status_code == never.status_code == 400, paged.text
        assert error(paged) == error(never)
        assert batch_id not in paged.text
        assert batch_id in [b["id"] for b in client.get(BASE, headers=alice).json()["batches"]]
        wait_done(client, mine, bob)


def test_native_job_routes_do_not_serve_a_batch(keyed: tuple[LiveServer, KeyStore]) -> None:
    """A batch belongs to this surface: the native status, results and cancel routes answer
    404 for it, even to its own key (the same secret works on both surfaces)."""
    live, store = keyed
    headers = auth(store, "dave")
    bearer = {"Authorization": f"Bearer {headers['X-Moondream-Auth']}"}
    with live.client() as client:
        batch_id = submit(client, tiny("a", "b"), headers)["id"]
        wait_done(client, batch_id, headers)
        for method, path in (
            ("GET", f"/v1/jobs/{batch_id}"),
            ("GET", f"/v1/jobs/{batch_id}/results"),
            ("POST", f"/v1/jobs/{batch_id}/cancel"),
        ):
            response = client.request(method, path, headers=bearer)
            assert response.status_code == 404, (method, path, response.text)
            assert error(response)["code"] == "not_found"
        assert client.get(f"{BASE}/{batch_id}", headers=headers).status_code == 200


def test_a_key_is_required(keyed: tuple[LiveServer, KeyStore]) -> None:
    live, store = keyed
    headers = auth(store, "carol")
    with live.client() as client:
        file_id, upload_id = create(client, headers)
        batch_id = submit(client, tiny("a"), headers)["id"]
        requests = [
            ("POST", f"{BASE}?action=mpu-create"),
            ("PUT", f"{BASE}/{file_id}?action=mpu-uploadpart&uploadId={upload_id}&partNumber=1"),
            ("POST", f"{BASE}/{file_id}?action=mpu-complete&uploadId={upload_id}"),
            ("DELETE", f"{BASE}/{file_id}?action=mpu-abort&uploadId={upload_id}"),
            ("GET", BASE),
            ("GET", f"{BASE}/{batch_id}"),
        ]
        for wrong in ({}, {"X-Moondream-Auth": "bv_nope_nope"}, {"X-Moondream-Auth": ""}):
            for method, url in requests:
                response = client.request(method, url, headers=wrong, content=b"{}")
                assert response.status_code == 401, (method, url, wrong, response.text)
                assert error(response)["code"] == "unauthorized"
        # the native header is not Moondream's
        bearer = {"Authorization": f"Bearer {headers['X-Moondream-Auth']}"}
        assert client.get(BASE, headers=bearer).status_code == 401
        # and none of the refused calls touched carol's upload
        assert abort(client, file_id, upload_id, headers).status_code == 204
        wait_done(client, batch_id, headers)


# --- 6. actions ---------------------------------------------------------------------------------


def test_missing_or_unknown_action_is_400(client: httpx.Client) -> None:
    file_id, upload_id = create(client)
    query = f"uploadId={upload_id}&partNumber=1"
    requests = [
        ("POST", BASE),
        ("POST", f"{BASE}?action=mpu-nope"),
        ("POST", f"{BASE}?action=mpu-complete"),
        ("PUT", f"{BASE}/{file_id}?{query}"),
        ("PUT", f"{BASE}/{file_id}?action=mpu-upload&{query}"),
        ("PUT", f"{BASE}/{file_id}?action=mpu-complete&{query}"),
        ("POST", f"{BASE}/{file_id}?uploadId={upload_id}"),
        ("POST", f"{BASE}/{file_id}?action=mpu-uploadpart&uploadId={upload_id}"),
        ("DELETE", f"{BASE}/{file_id}?uploadId={upload_id}"),
        ("DELETE", f"{BASE}/{file_id}?action=MPU-ABORT&uploadId={upload_id}"),
    ]
    for method, url in requests:
        response = client.request(method, url, content=b"{}")
        assert response.status_code == 400, (method, url, response.text)
        assert error(response)["code"] == "invalid_request"
        assert "action=" in error(response)["message"]
    # the upload is untouched by all of that
    assert abort(client, file_id, upload_id).status_code == 204
