"""`batchvision.client.Client` against the real app over real HTTP: analyze on a real photo,
jobs from lines and from a file (uploaded in parts), waited for, downloaded and cancelled,
usage, and the server's errors as BatchVisionAPIError."""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from client_support import (
    PHOTO,
    KeyedServer,
    detect_lines,
    keyed_server,
    labels,
    photo_server,
    result_lines,
    stalled_photo,
    write_jsonl,
)

from batchvision.client import (
    BatchVisionAPIError,
    BatchVisionClientError,
    Client,
    Job,
    VideoSampling,
)
from conftest import EVALDATA


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyedServer]:
    keyed = keyed_server(tmp_path_factory.mktemp("client-sync"))
    yield keyed
    keyed.stop()


@pytest.fixture
def client(server: KeyedServer) -> Iterator[Client]:
    with Client(server.url, api_key=server.new_key()) as bv:
        yield bv


def test_analyze_a_path_and_bytes_finds_the_photos_objects(client: Client) -> None:
    reply = client.analyze([PHOTO, PHOTO.read_bytes()], ["detect"])
    assert [r.index for r in reply.results] == [0, 1]
    assert all(r.ok and not r.errors for r in reply.results)
    assert reply.results[0].filename == PHOTO.name
    assert reply.tasks[0]["skill"] == "detect"
    assert "threshold" in reply.tasks[0]["params"]  # the defaults, filled in by the server
    for result in reply.results:
        assert {"person", "tv"} <= labels(result.outputs["detect"]["objects"])
    assert reply.summary == {"images": 2, "succeeded": 2, "failed": 0}
    assert reply.raw["results"][0]["outputs"] == reply.results[0].outputs


def test_a_url_goes_as_json_beside_local_bytes_with_task_params(client: Client) -> None:
    with photo_server() as url:
        reply = client.analyze(
            [url, PHOTO.read_bytes()], {"skill": "detect", "params": {"threshold": 0.6}}
        )
    assert reply.tasks[0]["params"]["threshold"] == 0.6
    fetched, sent = reply.results
    assert fetched.ok and sent.ok
    assert fetched.outputs == sent.outputs  # the same photo, either way
    assert all(o["score"] >= 0.6 for o in fetched.outputs["detect"]["objects"])


def test_one_unreadable_image_fails_only_itself(client: Client) -> None:
    bad, good = client.analyze([b"not an image at all", PHOTO]).results
    assert bad.status == "error"
    assert bad.errors[0].code == "image_decode_failed"
    assert good.ok and "detect" in good.outputs  # detect is the default task


def test_server_refusals_raise_BatchVisionAPIError(server: KeyedServer, client: Client) -> None:
    with pytest.raises(BatchVisionAPIError) as unknown:
        client.analyze([PHOTO], ["detekt"])
    assert (unknown.value.status, unknown.value.code) == (400, "unknown_skill")
    assert "detekt" in unknown.value.message

    with pytest.raises(BatchVisionAPIError) as missing:
        client.jobs.status("no-such-job")
    assert (missing.value.status, missing.value.code) == (404, "not_found")

    with Client(server.url) as anonymous, pytest.raises(BatchVisionAPIError) as refused:
        anonymous.usage()
    assert (refused.value.status, refused.value.code) == (401, "unauthorized")
    assert "Authorization: Bearer <key>" in refused.value.message
    assert "BATCHVISION_API_KEY" in refused.value.message
    assert str(refused.value).startswith("unauthorized: missing API key")


def test_the_key_comes_from_BATCHVISION_API_KEY(
    server: KeyedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCHVISION_API_KEY", server.new_key("from-env"))
    with Client(server.url) as bv:
        assert bv.usage().key["name"] == "from-env"
    with Client(server.url, api_key="bv_wrong") as bv, pytest.raises(BatchVisionAPIError) as bad:
        bv.usage()  # the argument wins over the environment
    assert bad.value.code == "unauthorized"


def test_submit_lines_wait_download_and_read_results(client: Client, tmp_path: Path) -> None:
    job = client.jobs.submit(detect_lines(5), wait=True, poll_s=0.1)
    assert job.status == "completed"
    assert (job.progress.total, job.progress.completed, job.progress.failed) == (5, 5, 0)
    assert job.usage["images"] == 5

    paths = client.jobs.download(job, tmp_path / "out")
    assert [p.name for p in paths] == ["results_0.jsonl", "results_1.jsonl"]  # 4 lines a file
    lines = result_lines(paths)
    assert [line["id"] for line in lines] == [f"x{i}" for i in range(5)]
    assert {"person", "tv"} <= labels(lines[0]["result"]["objects"])
    assert list(client.jobs.results(job.id)) == lines


def test_a_file_goes_up_in_parts_and_the_job_lists(client: Client, tmp_path: Path) -> None:
    batch = write_jsonl(tmp_path / "batch.jsonl", detect_lines(3))
    part_bytes = 100_000
    assert math.ceil(batch.stat().st_size / part_bytes) > 2
    submitted = client.jobs.submit(batch, part_bytes=part_bytes, retention_days=2)
    assert submitted.status in {"chunking", "processing", "completed"}
    assert submitted.raw["retention_days"] == 2

    job = client.jobs.wait(submitted.id, poll_s=0.1)
    assert job.status == "completed" and job.progress.done == 3
    assert [line["line_index"] for line in result_lines(client.jobs.download(job, tmp_path))] == [
        0,
        1,
        2,
    ]
    page = client.jobs.list()
    assert [j.id for j in page.jobs] == [job.id] and page.next_cursor is None


def test_list_pages_follow_the_cursor(client: Client) -> None:
    ids = {client.jobs.submit(detect_lines(1)).id for _ in range(3)}
    first = client.jobs.list(limit=2)
    assert len(first.jobs) == 2 and first.next_cursor
    rest = client.jobs.list(limit=2, cursor=first.next_cursor)
    assert {j.id for j in first.jobs + rest.jobs} == ids
    assert rest.next_cursor is None


def test_cancel_ends_a_running_job_that_download_refused(client: Client, tmp_path: Path) -> None:
    with stalled_photo() as url:
        job = client.jobs.submit([{"id": "u", "skill": "detect", "image_url": url}])
        with pytest.raises(BatchVisionClientError, match=f"job {job.id} did not end within"):
            client.jobs.wait(job, poll_s=0.05, timeout_s=0.3)
        with pytest.raises(BatchVisionClientError, match=f"job {job.id} is still "):
            client.jobs.download(job, tmp_path / "out")
        assert not (tmp_path / "out").exists()
        cancelled = client.jobs.cancel(job)
        assert isinstance(cancelled, Job) and cancelled.raw["cancel_requested"] is True
        ended = client.jobs.wait(job, poll_s=0.05, timeout_s=15)
    assert ended.status == "cancelled"


def test_usage_counts_this_keys_requests_and_images(client: Client) -> None:
    before = client.usage()
    assert before.balance == "unlimited"
    assert before.totals["images"] == 0
    client.analyze([PHOTO, PHOTO])
    after = client.usage(days=1)
    assert after.totals["images"] == 2
    assert after.totals["requests"] >= 1
    assert sum(day["images"] for day in after.days) == 2


def test_videos_come_back_as_sampled_frames_beside_the_images(client: Client) -> None:
    clip = EVALDATA / "video" / "intel_bottle-detection.mp4"  # bottles in every frame
    sampling = VideoSampling(fps=1.0, max_frames=2)
    reply = client.analyze([PHOTO], "detect", videos=[clip], sampling=sampling)
    assert [r.ok for r in reply.results] == [True]
    [video] = reply.videos
    assert video.status == "ok" and video.filename == clip.name
    assert [round(frame["time_s"]) for frame in video.frames] == [0, 1]
    assert all("bottle" in labels(f["outputs"]["detect"]["objects"]) for f in video.frames)
    assert reply.summary["videos"] == 1

    # A data: URI goes in a JSON body; the same frames come back.
    uri = "data:video/mp4;base64," + base64.b64encode(clip.read_bytes()).decode()
    as_json = client.analyze((), "detect", videos=uri, sampling=sampling)
    assert as_json.videos[0].frames == video.frames
