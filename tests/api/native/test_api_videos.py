"""Videos through `POST /v1/analyze` over real HTTP, with the real detector on the clips of
../shared/evaldata/video: sampled frames in time order, the per-video summary, a bad video
failing only itself, the byte limit while bytes arrive, and spool files gone afterwards."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from batchvision.accounts.keys import KeyStore
from batchvision.core.db import make_engine
from conftest import EVALDATA, LiveServer, coco_image, error_of, make_settings, start_server
from local_http import RouteHandler, serve_routes

VIDEOS = EVALDATA / "video"
LABELS = json.loads((VIDEOS / "labels.json").read_text())
CAR = VIDEOS / "intel_car-detection.mp4"  # 768x432, 12.5 fps, 30 s
BOTTLE = VIDEOS / "intel_bottle-detection.mp4"  # 640x360, bottles in every frame
BABOON = VIDEOS / "zamba_gorongosa_baboon_07120049.AVI"  # tiny AVI


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(
        make_settings(tmp_path_factory.mktemp("videos"), url_allow_hosts=["127.0.0.1"])
    )
    yield server
    server.stop()


def spooled(live: LiveServer) -> list[Path]:
    """Video files left in the spool folder (none once a request has ended)."""
    folder = live.settings.data_dir / "tmp" / "videos"
    return sorted(folder.iterdir()) if folder.exists() else []


def video_part(path: Path, name: str | None = None) -> tuple[str, tuple[str, bytes, str]]:
    return ("videos", (name or path.name, path.read_bytes(), "video/mp4"))


def post(live: LiveServer, files: list[Any], **fields: str) -> dict[str, Any]:
    with live.client() as client:
        response = client.post("/v1/analyze", files=files, data=fields)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def labels_seen(frames: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Each detected label's frame times, worked out from the frames themselves."""
    seen: dict[str, list[float]] = {}
    for frame in frames:
        for label in {obj["label"] for obj in frame["outputs"]["detect"]["objects"]}:
            seen.setdefault(label, []).append(frame["time_s"])
    return seen


def test_detect_at_one_fps_finds_the_car_with_first_and_last_seen(live: LiveServer) -> None:
    body = post(live, [video_part(CAR)], fps="1", tasks="detect")
    [video] = body["videos"]
    assert body["results"] == []
    assert video["status"] == "ok" and video["errors"] == []
    facts = video["video"]
    assert (facts["width"], facts["height"]) == (768, 432)
    assert facts["fps"] == pytest.approx(LABELS[CAR.name]["fps"], rel=0.01)
    assert facts["duration_s"] == pytest.approx(30.2, abs=0.5)
    assert facts["file_size"] == CAR.stat().st_size and facts["format"] == "MP4/MOV"
    frames = video["frames"]
    times = [frame["time_s"] for frame in frames]
    assert len(frames) == 31  # 0 s to 30 s, one a second
    assert all(b - a == pytest.approx(1.0, abs=0.1) for a, b in itertools.pairwise(times))
    assert [f["number"] for f in frames] == [round(t * 12.5) for t in times]
    summary = video["summary"]["skills"]["detect"]
    assert video["summary"]["frames"] == 31 and summary["frames"] == 31
    car = summary["labels"]["car"]
    seen = labels_seen(frames)
    assert (car["first_seen_s"], car["last_seen_s"]) == (min(seen["car"]), max(seen["car"]))
    assert car["frames"] == len(seen["car"])
    scores = [
        obj["score"]
        for frame in frames
        for obj in frame["outputs"]["detect"]["objects"]
        if obj["label"] == "car"
    ]
    assert car["max_score"] == max(scores)
    assert set(summary["labels"]) == set(seen)
    assert body["summary"] == {
        "images": 0,
        "succeeded": 0,
        "failed": 0,
        "videos": 1,
        "videos_failed": 0,
    }
    assert spooled(live) == []


def test_boxes_are_in_the_full_frame_and_normalised(live: LiveServer) -> None:
    body = post(live, [video_part(BOTTLE)], fps="1", max_frames="3")
    frames = body["videos"][0]["frames"]
    assert len(frames) == 3
    bottles = [
        o for f in frames for o in f["outputs"]["detect"]["objects"] if o["label"] == "bottle"
    ]
    assert bottles
    for obj in bottles:
        x1, y1, x2, y2 = obj["box"]
        assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 360
        assert obj["box_normalized"] == pytest.approx(
            [x1 / 640, y1 / 360, x2 / 640, y2 / 360], abs=1e-4
        )


def test_a_corrupt_video_fails_only_itself_beside_a_good_image_and_a_good_video(
    live: LiveServer,
) -> None:
    truncated = CAR.read_bytes()[: CAR.stat().st_size // 3]
    files = [
        ("images", ("cat.jpg", coco_image(), "image/jpeg")),
        video_part(BOTTLE),
        ("videos", ("garbage.mp4", b"this is not a video" * 500, "video/mp4")),
        ("videos", ("truncated.mp4", truncated, "video/mp4")),
    ]
    body = post(live, files, fps="0.25")  # the cut clip ends at ~10 s of its declared 30
    [image] = body["results"]
    assert image["status"] == "ok" and image["outputs"]["detect"]["objects"]
    good, garbage, cut = body["videos"]
    assert [v["filename"] for v in body["videos"]] == [
        "intel_bottle-detection.mp4",
        "garbage.mp4",
        "truncated.mp4",
    ]
    assert good["status"] == "ok" and len(good["frames"]) == 10
    assert "bottle" in good["summary"]["skills"]["detect"]["labels"]
    for bad in (garbage, cut):
        assert bad["status"] == "error" and bad["frames"] == []
        assert [e["code"] for e in bad["errors"]] == ["video_decode_failed"]
    assert body["summary"]["videos"] == 3 and body["summary"]["videos_failed"] == 2
    assert spooled(live) == []


def test_frames_come_in_time_order_at_the_rate_and_window_asked(live: LiveServer) -> None:
    fields = {"fps": "2", "start_time": "10", "end_time": "14", "max_frames": "100"}
    frames = post(live, [video_part(CAR)], **fields)["videos"][0]["frames"]
    times = [frame["time_s"] for frame in frames]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert len(frames) in (8, 9)
    assert times[0] == pytest.approx(10.0, abs=0.1) and times[-1] <= 14.0


def test_json_videos_by_base64_and_by_url(live: LiveServer) -> None:
    def clip(h: RouteHandler) -> None:
        h.send(200, BOTTLE.read_bytes(), Content_Type="video/mp4")

    with serve_routes({"/clip.mp4": clip}) as base, live.client() as client:
        videos = [
            {"video": base64.b64encode(BABOON.read_bytes()).decode(), "id": "baboon"},
            {"video": f"{base}/clip.mp4", "id": 7},
            {"video": f"{base}/missing.mp4", "id": "gone"},
        ]
        body = {"videos": videos, "tasks": ["detect"], "fps": 1, "max_frames": 2}
        response = client.post("/v1/analyze", json=body)
    assert response.status_code == 200, response.text
    baboon, bottle, gone = response.json()["videos"]
    assert (baboon["id"], bottle["id"], gone["id"]) == ("baboon", "7", "gone")
    assert baboon["status"] == "ok" and baboon["video"]["format"] == "AVI"
    assert len(baboon["frames"]) == 2
    assert bottle["status"] == "ok" and bottle["video"]["file_size"] == BOTTLE.stat().st_size
    assert "bottle" in bottle["summary"]["skills"]["detect"]["labels"]
    assert [e["code"] for e in gone["errors"]] == ["fetch_failed"]
    assert spooled(live) == []


def test_bad_sampling_is_422_and_leaves_no_file(live: LiveServer) -> None:
    with live.client() as client:
        response = client.post("/v1/analyze", files=[video_part(BABOON)], data={"fps": "0"})
    assert "fps" in error_of(response, 422, "invalid_parameter")
    assert spooled(live) == []


def test_any_skill_runs_on_frames_and_is_summarised_by_frame_count(live: LiveServer) -> None:
    body = post(live, [video_part(BABOON)], tasks="metadata", max_frames="2")
    video = body["videos"][0]
    assert len(video["frames"]) == 2
    assert all("metadata" in frame["outputs"] for frame in video["frames"])
    assert video["summary"]["skills"] == {"metadata": {"frames": 2}}


def test_a_video_over_the_duration_limit_is_its_own_error(
    serve: Callable[..., LiveServer],
) -> None:
    live = serve(video_max_duration_s=20)  # the chimp clip is 15 s long, the car's 30 s
    body = post(live, [video_part(CAR), video_part(VIDEOS / "zamba_chimp.mp4")], max_frames="2")
    long, short = body["videos"]
    assert [e["code"] for e in long["errors"]] == ["video_too_large"]
    assert short["status"] == "ok" and len(short["frames"]) == 2
    assert spooled(live) == []


def _streamed_video(megabytes: int) -> Iterator[bytes]:
    """A whole small video, then one of `megabytes` (the first file must go too)."""
    yield b'--XyZ\r\nContent-Disposition: form-data; name="videos"; filename="small.avi"\r\n\r\n'
    yield BABOON.read_bytes()
    yield b'\r\n--XyZ\r\nContent-Disposition: form-data; name="videos"; filename="big.mp4"\r\n\r\n'
    for _ in range(megabytes * 20):
        yield b"\x00" * 50_000
    yield b"\r\n--XyZ--\r\n"


def test_video_bytes_over_their_limit_are_413_while_they_arrive(
    serve: Callable[..., LiveServer],
) -> None:
    # The video limit, not the body's: its bytes count against video_max_bytes only.
    live = serve(video_max_bytes=300_000, max_request_bytes=1_000_000)
    headers = {"content-type": "multipart/form-data; boundary=XyZ"}
    with live.client() as client:
        response = client.post("/v1/analyze", content=_streamed_video(3), headers=headers)
    assert "300000" in error_of(response, 413, "video_too_large")
    assert spooled(live) == []


def test_a_video_larger_than_the_request_limit_is_taken_within_its_own(
    serve: Callable[..., LiveServer],
) -> None:
    live = serve(video_max_bytes=5_000_000, max_request_bytes=1_000_000)
    body = post(live, [video_part(CAR)], max_frames="1")
    assert body["videos"][0]["status"] == "ok"  # 2.8 MB of video in a 1 MB request limit
    assert spooled(live) == []


def test_a_video_costs_credits_per_video_and_a_failed_one_is_refunded(
    serve: Callable[..., LiveServer],
) -> None:
    live = serve(auth="required", credits_per_video=5)
    store = KeyStore(make_engine(live.settings))
    key = store.create("videos", credits=20)
    files = [
        ("images", ("cat.jpg", coco_image(), "image/jpeg")),
        video_part(BABOON),
        ("videos", ("garbage.mp4", b"not a video", "video/mp4")),
    ]
    with live.client() as client:
        response = client.post(
            "/v1/analyze",
            files=files,
            data={"tasks": "metadata", "max_frames": "3"},
            headers={"Authorization": f"Bearer {key.secret}"},
        )
    assert response.status_code == 200, response.text
    assert [v["status"] for v in response.json()["videos"]] == ["ok", "error"]
    stored = store.get(key.info.id)
    assert stored is not None and stored.credits == 20 - 1 - 5  # the image, the good video


def test_more_videos_than_allowed_are_refused_before_analysis(
    serve: Callable[..., LiveServer],
) -> None:
    live = serve(max_videos_per_request=2)
    with live.client() as client:
        form = client.post("/v1/analyze", files=[video_part(BABOON)] * 3)
        as_json = client.post("/v1/analyze", json={"videos": ["AAAA"] * 3})
    assert "videos" in error_of(form, 413, "too_many_images")
    assert "videos" in error_of(as_json, 413, "too_many_images")
    assert spooled(live) == []


def test_base64_and_url_videos_over_the_byte_limit_fail_only_themselves(
    serve: Callable[..., LiveServer],
) -> None:
    live = serve(video_max_bytes=100_000, url_allow_hosts=["127.0.0.1"])

    def clip(h: RouteHandler) -> None:  # no Content-Length: refused while it streams
        h.send_response(200)
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(CAR.read_bytes())

    small = base64.b64encode(BABOON.read_bytes()).decode()  # 37 KB
    big = base64.b64encode(BOTTLE.read_bytes()).decode()  # 505 KB
    with serve_routes({"/car.mp4": clip}) as base, live.client() as client:
        videos = [small, big, f"{base}/car.mp4"]
        response = client.post("/v1/analyze", json={"videos": videos, "max_frames": 1})
    assert response.status_code == 200, response.text
    ok, too_big, fetched = response.json()["videos"]
    assert ok["status"] == "ok" and len(ok["frames"]) == 1
    for video in (too_big, fetched):
        assert [e["code"] for e in video["errors"]] == ["video_too_large"]
        assert "100000" in video["errors"][0]["message"]
    assert spooled(live) == []


def test_openapi_documents_videos_and_sampling(live: LiveServer) -> None:
    with live.client() as client:
        spec = client.get("/openapi.json").json()
    content = spec["paths"]["/v1/analyze"]["post"]["requestBody"]["content"]
    for media_type in ("multipart/form-data", "application/json"):
        properties = content[media_type]["schema"]["properties"]
        assert {"images", "videos", "fps", "start_time", "end_time", "max_frames"} <= set(
            properties
        )


def test_a_request_refused_after_its_videos_arrived_deletes_them(live: LiveServer) -> None:
    with live.client() as client:
        response = client.post(
            "/v1/analyze", files=[video_part(BABOON)], data={"tasks": "no-such-skill"}
        )
    error_of(response, response.status_code, "unknown_skill")
    assert 400 <= response.status_code < 500
    assert spooled(live) == []
