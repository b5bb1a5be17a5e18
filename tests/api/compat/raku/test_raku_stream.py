"""Raku Sight streaming over real HTTP: lines read with timestamps as they arrive show each
file's `processing` and `done` events as its work happens (early files before late ones
finish); per-file failures stream as `error` lines; a client that goes away stops the rest of
the work and is charged only for what ran."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from raku_support import detail, images_base, multipart

from batchvision.accounts.keys import KeyStore
from batchvision.core.db import make_engine
from conftest import LiveServer, coco_image
from vlm_standin import VlmStandin, run_standin

__all__ = ["images_base"]
STREAM = "/api/v1/inference/predict/stream"
STREAM_V2 = "/api/v1/inference/predict/stream/v2"
LLM = json.dumps({"is_yolo": False, "is_llm": True})
YOLO = json.dumps({"is_yolo": True, "is_llm": False})
PHOTO = coco_image("000000000724.jpg")
LATENCY_S = 0.5


@pytest.fixture
def slow_vlm() -> Iterator[VlmStandin]:
    with run_standin(latency_s=LATENCY_S) as standin:
        yield standin


def timed_lines(response: httpx.Response) -> list[tuple[float, dict[str, Any]]]:
    start = time.monotonic()
    return [(time.monotonic() - start, json.loads(line)) for line in response.iter_lines() if line]


def test_lines_arrive_as_each_file_starts_and_finishes_not_all_at_the_end(
    serve: Callable[..., LiveServer], slow_vlm: VlmStandin
) -> None:
    # 12 questions, 4 at a time on the backend, 0.5 s each: three waves of answers
    live = serve(vlm_url=slow_vlm.url, vlm_model="q", vlm_max_concurrency=4)
    files = [(f"f{i}.jpg", PHOTO) for i in range(12)]
    form = multipart(files, [LLM] * 12, api_key="k", query="what is here?")
    with live.client() as client, client.stream("POST", STREAM, **form) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = timed_lines(response)
    events = [event for _, event in lines]
    assert len(events) == 24
    for i in range(12):
        mine = [e["status"] for e in events if e["filename"] == f"f{i}.jpg"]
        assert mine == ["processing", "done"]
    done = sorted(t for t, e in lines if e["status"] == "done")
    started = sorted(t for t, e in lines if e["status"] == "processing")
    assert done[0] < started[-1]  # a file finished before the last one had even started
    assert done[-1] - done[0] > 1.5 * LATENCY_S  # and the first answers did not wait for the last
    result = next(e["result"] for e in events if e["status"] == "done")
    assert "what is here?" in result["llm"]["answer"] and result["yolo"] is None


def test_a_failing_file_streams_an_error_line_and_the_others_done(
    serve: Callable[..., LiveServer], images_base: str
) -> None:
    live = serve(url_allow_hosts=["127.0.0.1"])
    data = [
        {"image_url": "http://10.0.0.1/a.jpg", "filename": "private.jpg", "is_yolo": True},
        {"image_url": f"{images_base}/img1.jpg", "filename": "room.jpg", "is_yolo": True},
    ]
    with live.client() as client:
        response = client.post(STREAM_V2, json={"api_key": "k", "data": data})
    events = [json.loads(line) for line in response.text.splitlines()]
    error = next(
        e for e in events if e["filename"] == "private.jpg" and e["status"] != "processing"
    )
    assert error["status"] == "error" and error["error"]["code"] == "url_not_allowed"
    done = next(e for e in events if e["filename"] == "room.jpg" and e["status"] != "processing")
    assert done["status"] == "done"
    assert "person" in {o["label"] for o in done["result"]["yolo"]["objects"]}


def test_a_bad_request_is_a_plain_error_before_any_line(serve: Callable[..., LiveServer]) -> None:
    live = serve()
    with live.client() as client:
        response = client.post(STREAM, **multipart([("a.jpg", PHOTO)], [YOLO, YOLO], api_key="k"))
    detail(response, 400, "invalid_request")


def _balance(store: KeyStore, settled_for_s: float = 1.0) -> int:
    """The key's credits once they have stopped changing."""
    last, since = store.by_name("stream").credits, time.monotonic()
    while time.monotonic() - since < settled_for_s:
        time.sleep(0.1)
        now = store.by_name("stream").credits
        if now != last:
            last, since = now, time.monotonic()
    assert last is not None
    return last


def test_a_client_that_goes_away_stops_the_work_and_pays_only_for_what_ran(
    serve: Callable[..., LiveServer], slow_vlm: VlmStandin
) -> None:
    live = serve(auth="required", vlm_url=slow_vlm.url, vlm_model="q", vlm_max_concurrency=4)
    store = KeyStore(make_engine(live.settings))
    key = store.create("stream", credits=100)
    files = [(f"f{i}.jpg", PHOTO) for i in range(24)]
    form = multipart(files, [LLM] * 24, api_key=key.secret, query="what?")
    with live.client() as client, client.stream("POST", STREAM, **form) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if json.loads(line)["status"] == "done":
                break  # leave after the first answer: the connection closes here
    charged = 100 - _balance(store, settled_for_s=3 * LATENCY_S)
    asked = len(slow_vlm.requests)
    assert asked < 24  # the remaining files never went to the backend
    assert 1 <= charged <= asked  # the files that were answered, not those never run
    time.sleep(3 * LATENCY_S)
    assert len(slow_vlm.requests) == asked  # and nothing more started since
