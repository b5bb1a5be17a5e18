"""Video lines in native JSONL jobs over real HTTP, with the real detector on the clips of
../shared/evaldata/video: `video` as base64 or a URL with per-line sampling, per-frame results
with their times and the per-video summary, a bad video or bad sampling failing only its line,
videos billed `credits_per_video` each (frames are not images), spool files gone afterwards."""

from __future__ import annotations

import base64
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx

from batchvision.accounts.keys import KeyStore
from batchvision.core.db import make_engine
from conftest import EVALDATA, LiveServer, coco_image
from local_http import RouteHandler, serve_routes

VIDEOS = EVALDATA / "video"
BOTTLE = VIDEOS / "intel_bottle-detection.mp4"  # 640x360, bottles in every frame
BABOON = VIDEOS / "zamba_gorongosa_baboon_07120049.AVI"  # tiny AVI
LIMITS = {"job_max_line_bytes": 1_000_000, "url_allow_hosts": ["127.0.0.1"]}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def run_job(client: httpx.Client, lines: list[dict[str, Any]]) -> tuple[dict[str, Any], list[Any]]:
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    response = client.post("/v1/jobs", content=body)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    deadline = time.monotonic() + 180
    while True:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] not in ("chunking", "processing"):
            break
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    results = client.get(f"/v1/jobs/{job_id}/results")
    assert results.status_code == 200
    return job, [json.loads(line) for line in results.text.splitlines()]


def spooled(live: LiveServer) -> list[Path]:
    folder = live.settings.data_dir / "tmp" / "videos"
    return sorted(folder.iterdir()) if folder.exists() else []


def detected(frame: dict[str, Any]) -> set[str]:
    return {obj["label"] for obj in frame["result"]["objects"]}


def test_video_lines_by_base64_and_url_beside_an_image_line(serve: Any) -> None:
    live = serve(**LIMITS)

    def clip(h: RouteHandler) -> None:
        h.send(200, BOTTLE.read_bytes(), Content_Type="video/mp4")

    with serve_routes({"/bottle.mp4": clip}) as base, live.client() as client:
        job, lines = run_job(
            client,
            [
                {"id": "baboon", "skill": "detect", "video": b64(BABOON.read_bytes())},
                {
                    "id": "bottle",
                    "skill": "detect",
                    "video": f"{base}/bottle.mp4",
                    "fps": 2,
                    "start_time": 1,
                    "max_frames": 4,
                    "threshold": 0.3,
                },
                {"id": "photo", "skill": "detect", "image": b64(coco_image())},
            ],
        )
    assert job["status"] == "completed", job
    baboon, bottle, photo = lines
    assert [line["status"] for line in lines] == ["ok", "ok", "ok"]
    assert baboon["result"]["video"]["format"] == "AVI"
    frames = bottle["result"]["frames"]
    times = [frame["time_s"] for frame in frames]
    assert len(frames) == 4 and times == sorted(times)
    assert abs(times[0] - 1.0) < 0.1
    assert all(abs(b - a - 0.5) < 0.1 for a, b in itertools.pairwise(times))
    # The line's own params reach the skill: no object below its threshold.
    scores = [obj["score"] for frame in frames for obj in frame["result"]["objects"]]
    assert scores and min(scores) >= 0.3
    summary = bottle["result"]["summary"]
    seen = [frame["time_s"] for frame in frames if "bottle" in detected(frame)]
    bottle_summary = summary["skills"]["detect"]["labels"]["bottle"]
    assert (bottle_summary["first_seen_s"], bottle_summary["last_seen_s"]) == (seen[0], seen[-1])
    assert bottle_summary["frames"] == len(seen) and summary["frames"] == 4
    assert "objects" in photo["result"]
    assert job["usage"]["videos"] == 2 and job["usage"]["images"] == 1
    assert spooled(live) == []


def test_a_bad_video_or_bad_sampling_fails_only_its_line(serve: Any) -> None:
    live = serve(video_max_bytes=100_000, **LIMITS)
    big = b64(BOTTLE.read_bytes())  # 505 kB: over this server's video_max_bytes
    baboon = b64(BABOON.read_bytes())
    corrupt = b64(b"\x00\x00\x00\x18ftypmp42" * 50)
    with live.client() as client:
        job, lines = run_job(
            client,
            [
                {
                    "id": "corrupt",
                    "skill": "detect",
                    "video": corrupt,
                },
                {"id": "truncated", "skill": "detect", "video": b64(BABOON.read_bytes()[:9000])},
                {"id": "big", "skill": "detect", "video": big},
                {"id": "fps", "skill": "detect", "video": baboon, "fps": "fast"},
                {
                    "id": "window",
                    "skill": "detect",
                    "video": b64(BABOON.read_bytes()),
                    "end_time": 0,
                },
                {"id": "typed", "skill": "detect", "video": 42},
                {"id": "both", "skill": "detect", "video": baboon, "image": "x"},
                {"id": "ok", "skill": "detect", "video": baboon, "max_frames": 1},
            ],
        )
    assert job["status"] == "completed"
    codes = {line["id"]: line["error"]["code"] for line in lines if line["status"] == "error"}
    assert codes == {
        "corrupt": "video_decode_failed",
        "truncated": "video_decode_failed",
        "big": "video_too_large",
        "fps": "invalid_parameter",
        "window": "invalid_parameter",
        "typed": "invalid_request",
        "both": "invalid_request",
    }
    messages = {line["id"]: line["error"]["message"] for line in lines if line["status"] == "error"}
    assert "'fps' must be a number (got a string)" in messages["fps"]
    assert "'video' must be" in messages["typed"]
    [ok] = [line for line in lines if line["id"] == "ok"]
    assert len(ok["result"]["frames"]) == 1
    assert job["usage"]["videos"] == 1
    assert spooled(live) == []


def test_videos_are_billed_per_video_with_frames_not_counted_as_images(serve: Any) -> None:
    live = serve(auth="required", credits_per_image=1, credits_per_video=5, **LIMITS)
    keys = KeyStore(make_engine(live.settings))
    created = keys.create("dana", credits=100)
    headers = {"Authorization": f"Bearer {created.secret}"}
    with live.client(headers=headers) as client:
        job, lines = run_job(
            client,
            [
                {"skill": "detect", "video": b64(BABOON.read_bytes()), "max_frames": 3},
                {"skill": "detect", "video": b64(b"not a video at all")},
                {"skill": "detect", "image": b64(coco_image())},
            ],
        )
    assert [line["status"] for line in lines] == ["ok", "error", "ok"]
    assert len(lines[0]["result"]["frames"]) == 3
    assert job["usage"]["videos"] == 1 and job["usage"]["images"] == 1
    # One video (5) and one image (1); the undecodable video costs nothing.
    assert keys.by_name("dana").credits == 100 - 6
    usage = keys.usage(created.info.id)
    assert sum(day["credits"] for day in usage) == 6
    assert sum(day["images"] for day in usage) == 2  # a video counts as one item, as on sync


def test_spool_files_a_crash_left_behind_are_swept_at_start_up(serve: Any, tmp_path: Path) -> None:
    """A process killed mid-request leaves its spooled video behind; the next server deletes
    spool files older than video_spool_max_age_s as it starts, and leaves younger ones (they
    may be another process's, live)."""
    folder = tmp_path / "data" / "tmp" / "videos"
    folder.mkdir(parents=True)
    stale, fresh = folder / "video-stale.part", folder / "video-fresh.part"
    for path in (stale, fresh):
        path.write_bytes(b"left behind")
    hours_ago = time.time() - 7 * 3600
    os.utime(stale, (hours_ago, hours_ago))
    live = serve(video_spool_max_age_s=6 * 3600)  # its data_dir is tmp_path / "data"
    with live.client() as client:
        assert client.get("/healthz").status_code == 200
    deadline = time.monotonic() + 10
    while stale.exists():  # the sweep runs on a worker thread right after start-up
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert fresh.exists()
