"""Moondream Batch lines that a vision-language backend answers, over real HTTP against the real
app and the stand-in backend (tests/vlm_standin.py): the page's flow with caption, query, detect
and point lines, every answer traced to what the stand-in received, per-line usage as the backend
reported it and the batch's usage their sum, one call for a query over several images, the
reasoning when asked for, credits per vision-language call, and lines without a backend."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from test_moondream_batch import jsonl, run_batch

from batchvision.accounts.keys import KeyStore
from batchvision.core.db import make_engine
from conftest import LiveServer, coco_image, make_settings, start_server
from vlm_standin import VlmStandin, run_standin, square_image


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# Each image its own size and square, so that every answer names the image it came from.
SQUARES = {
    "wide": (320, 240, (40, 40, 120, 120)),
    "tall": (200, 300, (100, 150, 180, 290)),
    "small": (160, 120, (10, 70, 50, 110)),
}
IMAGES = {name: b64(square_image(w, h, box)) for name, (w, h, box) in SQUARES.items()}
COCO = b64(coco_image())

LINES: list[dict[str, Any]] = [
    {"id": "cap", "skill": "caption", "image": IMAGES["wide"]},
    {
        "id": "cap-short",
        "skill": "caption",
        "image": IMAGES["tall"],
        "length": "short",
        "settings": {"temperature": 0.5, "max_tokens": 40, "seed": 7},
    },
    {"id": "ask", "skill": "query", "image": IMAGES["small"], "question": "What colour?"},
    {
        "id": "ask-plain",
        "skill": "query",
        "image": IMAGES["wide"],
        "question": "How big?",
        "reasoning": False,
    },
    {
        "id": "ask-both",
        "skill": "query",
        "images": [IMAGES["wide"], IMAGES["tall"]],
        "question": "Are these the same?",
    },
    {"id": "box", "skill": "detect", "image": IMAGES["tall"], "object": "red square"},
    {"id": "dot", "skill": "point", "image": IMAGES["small"], "object": "red square"},
    {"id": "person", "skill": "detect", "image": COCO, "object": "people"},
]
# Moondream's REST protocol takes one image per call: there a query over several images is
# that line's error, the rest unchanged.
SEVERAL = "ask-both"


def expected_ok(protocol: str) -> set[str]:
    ids = {line["id"] for line in LINES}
    return ids - {SEVERAL} if protocol == "moondream" else ids


def _line_map(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {line["id"]: line for line in lines}


@pytest.fixture(scope="module", params=["openai", "moondream"])
def flow(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, VlmStandin, dict[str, Any], dict[str, dict[str, Any]]]]:
    """The page's flow (test_moondream_batch.run_batch) against each protocol of the stand-in."""

    protocol: str = request.param
    with run_standin() as standin:
        settings = make_settings(
            tmp_path_factory.mktemp(f"moondream-vlm-{protocol}"),
            vlm_url=standin.url,
            vlm_protocol=protocol,
            vlm_model="qwen2.5vl:7b",
            job_chunk_lines=3,
            job_output_lines=6,
        )
        live = start_server(settings)
        try:
            with live.client() as client:
                status, lines = run_batch(client, jsonl(*LINES))
        finally:
            live.stop()
        yield protocol, standin, status, _line_map(lines)


def test_every_valid_line_is_ok_and_the_batch_completes(flow: Any) -> None:
    protocol, _, status, lines = flow
    ok = expected_ok(protocol)
    assert status["status"] == "completed", status
    failed = len(LINES) - len(ok)
    assert status["progress"] == {"total": len(LINES), "completed": len(ok), "failed": failed}
    assert {i for i, line in lines.items() if line["status"] == "ok"} == ok, lines
    if protocol == "moondream":
        error = lines[SEVERAL]["error"]
        assert error["code"] == "invalid_request" and "openai-protocol" in error["message"]


def test_each_vlm_line_made_one_call_and_the_detector_line_none(flow: Any) -> None:
    protocol, standin, _, _ = flow
    counts = sorted(len(r["images"]) for r in standin.requests)
    single = len(LINES) - 2  # neither the detector's line nor the query over two images
    assert counts == [1] * single + ([] if protocol == "moondream" else [2])


def _seen(standin: VlmStandin, fragment: str) -> dict[str, Any]:
    """The one request whose body or prompt mentions `fragment`."""
    found = [r for r in standin.requests if fragment in json.dumps(r["body"])]
    assert len(found) == 1, (fragment, standin.requests)
    return found[0]


def _size(description: str) -> tuple[int, int]:
    match = re.match(r"(\d+)x(\d+) mean", description)
    assert match, description
    return int(match[1]), int(match[2])


def test_captions_and_answers_describe_the_image_the_backend_received(flow: Any) -> None:
    _, standin, _, lines = flow
    captions = [r for r in standin.requests if "question" not in json.dumps(r["body"])]
    assert all(lines[i]["result"]["caption"] for i in ("cap", "cap-short"))
    described = {r["images"][0] for r in captions if len(r["images"]) == 1}
    for line_id in ("cap", "cap-short"):
        caption = lines[line_id]["result"]["caption"]
        assert [d for d in described if d in caption], (caption, described)
    wide = _size(_seen(standin, "How big?")["images"][0])
    assert wide[0] / wide[1] == pytest.approx(320 / 240, rel=0.1)  # the wide image, resized
    small = _seen(standin, "What colour?")["images"][0]
    assert small in lines["ask"]["result"]["answer"]
    if SEVERAL in expected_ok(flow[0]):
        both = _seen(standin, "Are these the same?")["images"]
        tall = _size(both[1])
        assert tall[0] / tall[1] == pytest.approx(200 / 300, rel=0.1)
        for description in both:
            assert description in lines[SEVERAL]["result"]["answer"]


def test_the_caption_length_and_settings_reach_the_backend(flow: Any) -> None:
    protocol, standin, _, _ = flow
    short = [r for r in standin.requests if "0.5" in json.dumps(r["body"])]
    assert len(short) == 1, standin.requests
    body = short[0]["body"]
    if protocol == "moondream":
        assert body["length"] == "short"
        assert body["settings"]["temperature"] == 0.5 and body["settings"]["max_tokens"] == 40
    else:
        assert body["temperature"] == 0.5 and body["max_tokens"] == 40
    assert "seed" not in json.dumps(body)  # a key the line's settings ignore is not passed on


def test_detect_and_point_find_the_square_in_fractions_of_the_image(flow: Any) -> None:
    _, _, _, lines = flow
    width, height, (x1, y1, x2, y2) = SQUARES["tall"]
    (box,) = lines["box"]["result"]["objects"]
    tolerance = 2 / 28  # a box in pixels of the resized image, mapped back
    assert box["x_min"] == pytest.approx(x1 / width, abs=tolerance)
    assert box["y_min"] == pytest.approx(y1 / height, abs=tolerance)
    assert box["x_max"] == pytest.approx(x2 / width, abs=tolerance)
    assert box["y_max"] == pytest.approx(y2 / height, abs=tolerance)
    width, height, (x1, y1, x2, y2) = SQUARES["small"]
    (point,) = lines["dot"]["result"]["points"]
    assert point["x"] == pytest.approx((x1 + x2) / 2 / width, abs=tolerance)
    assert point["y"] == pytest.approx((y1 + y2) / 2 / height, abs=tolerance)
    people = lines["person"]["result"]["objects"]
    assert people and all(0 <= b["x_min"] < b["x_max"] <= 1 for b in people)


def test_reasoning_only_when_asked_for_and_given(flow: Any) -> None:
    protocol, _, _, lines = flow
    assert "reasoning" not in lines["ask-plain"]["result"]
    # Moondream's REST answers it in a field; the chat prompt asks for it before 'Answer:'.
    reasoned = "reasoned about" if protocol == "moondream" else "I looked at 1 image(s)"
    assert reasoned in lines["ask"]["result"]["reasoning"]


def test_usage_per_line_as_reported_and_the_batch_usage_their_sum(flow: Any) -> None:
    protocol, _, status, lines = flow
    assert lines["person"]["usage"] == {"input_tokens": 0, "output_tokens": 0}
    vlm = [lines[i] for i in expected_ok(protocol) - {"person"}]
    for line in vlm:
        usage = line["usage"]
        assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0, line
        if protocol == "moondream":  # what the stand-in reports for every call there
            assert usage == {"input_tokens": 700, "output_tokens": 12}, line
    assert status["usage"] == {
        "input_tokens": sum(line["usage"]["input_tokens"] for line in vlm),
        "output_tokens": sum(line["usage"]["output_tokens"] for line in vlm),
    }


def test_usage_is_absent_when_the_backend_reports_none(serve: Callable[..., LiveServer]) -> None:
    with run_standin(report_usage=False) as standin:
        live = serve(vlm_url=standin.url)
        with live.client() as client:
            status, lines = run_batch(client, jsonl(*LINES[:1], LINES[-1]))
    assert [line["status"] for line in lines] == ["ok", "ok"], lines
    assert "usage" not in lines[0]
    assert lines[1]["usage"] == {"input_tokens": 0, "output_tokens": 0}
    assert status["usage"] == {"input_tokens": 0, "output_tokens": 0}


def test_each_vlm_call_costs_credits_beside_the_image(
    serve: Callable[..., LiveServer], vlm_standin: VlmStandin
) -> None:
    live = serve(
        vlm_url=vlm_standin.url,
        auth="required",
        credits_per_image=1,
        credits_per_vlm_call=4,
        vlm_attempts=1,
        job_lines_in_flight=1,  # lines reach the backend in order: the scripted fault hits "b"
        job_parallel_chunks=1,
    )
    store = KeyStore(make_engine(live.settings))
    key = store.create("moondream-vlm", credits=1000)
    vlm_standin.fail_next("", "500")  # the second VLM call fails: only its image is billed
    lines = [
        {"id": "a", "skill": "caption", "image": IMAGES["wide"]},
        {"id": "b", "skill": "caption", "image": IMAGES["tall"]},
        {"id": "c", "skill": "query", "images": [IMAGES["wide"], IMAGES["tall"]], "question": "?"},
        {"id": "d", "skill": "detect", "image": COCO, "object": "person"},
    ]
    headers = {"X-Moondream-Auth": key.secret}
    with live.client() as client:
        status, out = run_batch(client, jsonl(*lines), headers)
    assert [line["status"] for line in out] == ["ok", "error", "ok", "ok"], out
    assert out[1]["error"]["code"] == "processing_error"
    info = store.get(key.info.id)
    # a: 1 + 4; b: its image only; c: two images, one call; d: one image on the detector
    assert info is not None and info.credits == 1000 - ((1 + 4) + 1 + (2 + 4) + 1)
    assert status["status"] == "completed"


def test_without_a_backend_vlm_lines_say_why_and_coco_lines_still_run(
    serve: Callable[..., LiveServer],
) -> None:
    live = serve()
    lines = [
        {"id": "c", "skill": "caption", "image": IMAGES["wide"]},
        {"id": "d", "skill": "detect", "image": IMAGES["wide"], "object": "door handle"},
        {"id": "p", "skill": "detect", "image": COCO, "object": "person"},
    ]
    with live.client() as client:
        _, out = run_batch(client, jsonl(*lines))
    by_id = _line_map(out)
    assert by_id["p"]["status"] == "ok"
    for line_id in ("c", "d"):
        error = by_id[line_id]["error"]
        assert error["code"] == "processing_error", error
        assert "BATCHVISION_VLM_URL" in error["message"], error
    assert "'door handle' is not a COCO object class" in by_id["d"]["error"]["message"]
