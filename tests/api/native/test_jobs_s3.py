"""Native jobs end to end over real HTTP with blob_store=s3 against a real moto S3 server: a
direct submit and a multipart upload, results downloaded through the output links (every line
once, in order), every object under the configured prefix in the bucket, none on local disk, and
the retention sweep purging them from the bucket."""

from __future__ import annotations

import base64
import datetime as dt
import io
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from batchvision.jobs.s3blobs import S3Blobs
from batchvision.work.service import JobService
from conftest import LiveServer, make_settings, start_server
from s3_server import new_bucket, s3_client, s3_server

PREFIX = "site-1/bv/"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with s3_server() as url:
        yield url


@pytest.fixture
def live(tmp_path: Path, endpoint: str) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path,
        blob_store="s3",
        s3_bucket=new_bucket(endpoint),
        s3_prefix=PREFIX.rstrip("/"),
        s3_endpoint_url=endpoint,
        job_chunk_lines=5,
        job_output_lines=10,
    )
    server = start_server(settings)
    yield server
    server.stop()


def tiny_png(color: str) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), color).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def metadata_lines(count: int) -> bytes:
    colors = ("red", "green", "blue")
    lines = [
        json.dumps({"id": f"l{i}", "skill": "metadata", "image": tiny_png(colors[i % 3])})
        for i in range(count)
    ]
    return ("\n".join(lines) + "\n").encode()


def wait(client: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] not in ("chunking", "processing"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end")


def downloaded_ids(client: httpx.Client, job: dict[str, Any]) -> list[str]:
    ids = []
    for output in job["outputs"]:
        response = client.get(output["url"])
        assert response.status_code == 200, response.text
        ids += [json.loads(line)["id"] for line in response.text.splitlines()]
    return ids


def bucket_keys(live: LiveServer, under: str) -> list[str]:
    settings = live.settings
    assert settings.s3_endpoint_url is not None
    answer = s3_client(settings.s3_endpoint_url).list_objects_v2(
        Bucket=settings.s3_bucket, Prefix=PREFIX + under
    )
    return [str(entry["Key"]) for entry in answer.get("Contents", [])]


def app_jobs(live: LiveServer) -> JobService:
    service: JobService = live.server.config.app.state.services.jobs  # type: ignore[attr-defined]
    return service


def test_a_direct_job_keeps_its_blobs_in_the_bucket_and_retention_purges_them(
    live: LiveServer,
) -> None:
    assert isinstance(app_jobs(live).blobs, S3Blobs)
    with live.client() as client:
        response = client.post("/v1/jobs", content=metadata_lines(23))
        assert response.status_code == 202, response.text
        done = wait(client, response.json()["id"])
        assert done["status"] == "completed", done
        assert done["progress"] == {"total": 23, "completed": 23, "failed": 0}
        assert len(done["outputs"]) == 3  # 10 + 10 + 3 lines
        assert downloaded_ids(client, done) == [f"l{i}" for i in range(23)]
        results = client.get(f"/v1/jobs/{done['id']}/results").text.splitlines()
        assert [json.loads(line)["id"] for line in results] == [f"l{i}" for i in range(23)]

        stored = bucket_keys(live, f"jobs/{done['id']}/")
        assert len(stored) == 3
        assert all(key.startswith(f"{PREFIX}jobs/{done['id']}/") for key in stored)
        assert not (live.settings.data_dir / "blobs").exists()  # nothing on local disk

        now = dt.datetime.now(dt.UTC)
        assert app_jobs(live).runner.sweep(now + dt.timedelta(days=7, minutes=1)) == (1, 0)
        assert bucket_keys(live, f"jobs/{done['id']}/") == []
        assert client.get(done["outputs"][0]["url"]).status_code == 404


def test_a_multipart_upload_becomes_one_job_input_in_the_bucket(live: LiveServer) -> None:
    body = metadata_lines(12)
    with live.client() as client:
        upload = client.post("/v1/uploads").json()
        file_id, upload_id = upload["fileId"], upload["uploadId"]
        pieces = [body[:100], body[100:1000], body[1000:]]
        sent = {}
        for number in (3, 1, 2, 1):  # out of order, part 1 twice
            response = client.put(
                f"/v1/uploads/{file_id}/parts/{number}",
                params={"uploadId": upload_id},
                content=pieces[number - 1],
            )
            assert response.status_code == 200, response.text
            sent[number] = response.json()
        assert bucket_keys(live, f"uploads/{file_id}/") != []  # parts are objects meanwhile
        # The etags are S3's: the md5 of each part, quoted.
        stored = app_jobs(live).blobs.info(f"uploads/{file_id}/parts/00002")
        assert stored is not None
        assert sent[2]["etag"] == f'"{stored.etag}"'
        listed = [{"partNumber": n, "etag": sent[n]["etag"]} for n in (1, 2, 3)]
        complete = client.post(
            f"/v1/uploads/{file_id}/complete",
            params={"uploadId": upload_id},
            json={"parts": listed},
        )
        assert complete.status_code == 202, complete.text
        assert complete.json()["size"] == len(body)
        done = wait(client, complete.json()["id"])
        assert done["status"] == "completed", done
        assert downloaded_ids(client, done) == [f"l{i}" for i in range(12)]
        assert bucket_keys(live, f"uploads/{file_id}/") == []  # parts removed at completion

        aborted = client.post("/v1/uploads").json()
        part = client.put(
            f"/v1/uploads/{aborted['fileId']}/parts/1",
            params={"uploadId": aborted["uploadId"]},
            content=b"{}\n",
        )
        assert part.status_code == 200
        gone = client.delete(
            f"/v1/uploads/{aborted['fileId']}", params={"uploadId": aborted["uploadId"]}
        )
        assert gone.status_code in (200, 204)
        assert bucket_keys(live, f"uploads/{aborted['fileId']}/") == []


def test_parts_over_s3s_minimum_are_composed_in_the_bucket_in_order(live: LiveServer) -> None:
    # Parts of 6 MiB (copied inside S3) and of a few bytes (re-uploaded through the part
    # buffer), cut anywhere, even inside a line.
    mib = 1024 * 1024
    lines = [
        json.dumps({"id": (f"l{i}-" + "p" * 6 * mib) if i in (0, 6) else f"l{i}",
                    "skill": "metadata", "image": tiny_png("red")})
        for i in range(10)
    ]  # fmt: skip
    body = ("\n".join(lines) + "\n").encode()
    cuts = [0, 6 * mib, 6 * mib + 100, 12 * mib + 100, len(body)]
    pieces = [body[a:b] for a, b in itertools.pairwise(cuts)]
    with live.client() as client:
        upload = client.post("/v1/uploads").json()
        listed = []
        for number, piece in enumerate(pieces, start=1):
            response = client.put(
                f"/v1/uploads/{upload['fileId']}/parts/{number}",
                params={"uploadId": upload["uploadId"]},
                content=piece,
            )
            assert response.status_code == 200, response.text
            listed.append({"partNumber": number, "etag": response.json()["etag"]})
        complete = client.post(
            f"/v1/uploads/{upload['fileId']}/complete",
            params={"uploadId": upload["uploadId"]},
            json={"parts": listed},
        )
        assert complete.status_code == 202, complete.text
        job_id = complete.json()["id"]
        done = wait(client, job_id)
        assert done["progress"]["total"] == 10, done
        results = [
            json.loads(line)
            for output in done["outputs"]
            for line in client.get(output["url"]).text.splitlines()
        ]
        assert [r["line_index"] for r in results] == list(range(10))
        # The two 6 MiB lines arrive whole, so they fail only for their over-long ids.
        assert [r["id"] for r in results] == [None if i in (0, 6) else f"l{i}" for i in range(10)]
        assert "longer than 256" in results[0]["error"]["message"]
        assert "longer than 256" in results[6]["error"]["message"]
