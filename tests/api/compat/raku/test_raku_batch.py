"""Raku Sight batch prediction over real HTTP: the page's own Python examples (v1 uploads, v2
URLs from a local image server) against the real app with real COCO photos, the real detector
and the stand-in VLM; per-file failures; every 400 and 413; keys and credits."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from raku_support import (
    BASE,
    PAGE_FILES,
    QUERY,
    detail,
    images_base,
    labels,
    multipart,
    page_files,
    predict_batch,
    predict_batch_v2,
    raku_server,
    truth_labels,
)

from batchvision.accounts.keys import KeyStore
from batchvision.core.db import make_engine
from conftest import LiveServer, coco_image
from vlm_standin import VlmStandin, run_standin

__all__ = ["images_base"]  # a fixture, used by name
V1 = "/api/v1/inference/predict/batch"
V2 = "/api/v1/inference/predict/batch/v2"
YOLO = json.dumps({"is_yolo": True, "is_llm": False})
LLM = json.dumps({"is_yolo": False, "is_llm": True})
PHOTO = coco_image("000000000139.jpg")


@pytest.fixture(scope="module")
def standin() -> Iterator[VlmStandin]:
    with run_standin() as found:
        yield found


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, standin: VlmStandin) -> Iterator[LiveServer]:
    server = raku_server(tmp_path_factory.mktemp("raku"), standin.url)
    BASE["url"] = server.url
    with server.client() as client:  # the detector loads once, before the page's 5 s timeouts
        client.post(V1, **multipart([("warm.jpg", PHOTO)], [YOLO], api_key="k"))
    yield server
    server.stop()


def post(live: LiveServer, path: str, **kwargs: Any) -> httpx.Response:
    with live.client() as client:
        return client.post(path, **kwargs)


def test_the_pages_v1_example_detects_and_answers_each_file_as_its_metadata_asks(
    live: LiveServer, tmp_path: Path, standin: VlmStandin
) -> None:
    asked = len(standin.requests)
    result = predict_batch(
        api_key="YOUR_API_KEY",
        query=QUERY,
        file_paths=page_files(tmp_path),
        metadata=[
            {"is_yolo": True, "is_llm": False},
            {"is_yolo": True, "is_llm": True},
            {"is_yolo": False, "is_llm": True},
        ],
    )
    assert result["code"] == 0
    first, second, third = result["result"]
    assert [e["index"] for e in result["result"]] == [0, 1, 2]
    assert [e["filename"] for e in result["result"]] == list(PAGE_FILES)
    assert all("error" not in e for e in result["result"])
    assert {"person", "tv"} <= labels(first) <= truth_labels("img1.jpg") | {"laptop", "couch"}
    assert first["llm"] is None and third["yolo"] is None
    assert labels(second) == {"bear"}
    [bear] = second["yolo"]["objects"]
    assert bear["class_id"] == 21 and 0.5 < bear["confidence"] <= 1
    x1, y1, x2, y2 = bear["box"]
    assert bear["box_normalized"] == pytest.approx(
        [x1 / 586, y1 / 640, x2 / 586, y2 / 640], abs=1e-4
    )
    for entry in (second, third):
        assert QUERY in entry["llm"]["answer"]  # the stand-in answers with the prompt it got
        assert entry["llm"]["usage"]["output_tokens"] > 0
    assert len(standin.requests) - asked == 2  # one call per is_llm file
    assert first["assets"]["annotated_image"].endswith("/0-annotated.png")
    assert third["assets"]["annotated_image"] is None  # nothing detected to draw
    assert third["assets"]["output_json"].endswith("/2-output.json")


def test_the_pages_v2_example_fetches_each_url_through_the_allow_list(
    live: LiveServer, images_base: str
) -> None:
    data = [
        {
            "image_url": f"{images_base}/img2.jpg",
            "filename": "photo.jpg",
            "is_yolo": True,
            "is_llm": False,
        },
        {"image_url": f"{images_base}/img3.jpg", "is_yolo": True, "is_llm": True},
    ]
    result = predict_batch_v2(api_key="YOUR_API_KEY", query="Describe the scene", data=data)
    bear, street = result["result"]
    assert result["code"] == 0
    assert bear["filename"] == "photo.jpg" and street["filename"] == "img3.jpg"
    assert labels(bear) == {"bear"}
    assert {"stop sign"} <= labels(street) <= truth_labels("img3.jpg")
    assert "Describe the scene" in street["llm"]["answer"]


def _entry_error(entry: dict[str, Any], code: str) -> str:
    assert entry["error"]["code"] == code, entry
    message: str = entry["error"]["message"]
    assert message and "Traceback" not in message
    return message


def test_per_file_failures_are_that_files_error_and_the_rest_succeed(live: LiveServer) -> None:
    files = [("a.jpg", PHOTO), ("none.jpg", PHOTO), ("ask.jpg", PHOTO), ("bad.jpg", b"not a jpeg")]
    neither = json.dumps({"is_yolo": False, "is_llm": False})
    response = post(live, V1, **multipart(files, [YOLO, neither, LLM, YOLO], api_key="k"))
    assert response.status_code == 200, response.text
    good, none, ask, bad = response.json()["result"]
    assert "person" in labels(good) and "error" not in good
    assert "neither" in _entry_error(none, "invalid_request")
    assert "query" in _entry_error(ask, "invalid_request")
    _entry_error(bad, "image_decode_failed")
    for entry in (none, ask, bad):
        assert entry["yolo"] is None and entry["llm"] is None and entry["assets"] is None


def test_urls_refused_or_not_fetched_fail_only_their_file(
    live: LiveServer, images_base: str
) -> None:
    data = [
        {"image_url": "http://10.0.0.1/x.jpg", "is_yolo": True},
        {"image_url": f"{images_base}/redirect-private", "is_yolo": True},
        {"image_url": f"{images_base}/missing.jpg", "is_yolo": True},
        {"image_url": f"{images_base}/text", "is_yolo": True},
        {"image_url": f"{images_base}/img1.jpg", "is_yolo": True},
    ]
    response = post(live, V2, json={"api_key": "k", "data": data})
    private, redirected, missing, text, good = response.json()["result"]
    _entry_error(private, "url_not_allowed")
    _entry_error(redirected, "url_not_allowed")
    _entry_error(missing, "fetch_failed")
    _entry_error(text, "image_decode_failed")
    assert "person" in labels(good)


@pytest.mark.parametrize(
    ("fields", "metadata", "says"),
    [
        ({"api_key": "k"}, [YOLO], "got 1 metadata for 2 files"),
        ({"api_key": "k"}, [YOLO, "{not json"], "metadata[1]"),
        ({"api_key": "k"}, [YOLO, '{"is_yolo": "yes"}'], "metadata[1].is_yolo"),
        ({"api_key": "k"}, [YOLO, "[]"], "metadata[1]"),
        ({}, [YOLO, YOLO], "api_key is required"),
        ({"api_key": " "}, [YOLO, YOLO], "api_key is required"),
        ({"api_key": "k", "query": "x" * 4001}, [YOLO, LLM], "query"),
    ],
)
def test_bad_v1_parameters_are_400_in_the_detail_shape(
    live: LiveServer, fields: dict[str, str], metadata: list[str], says: str
) -> None:
    response = post(live, V1, **multipart([("a.jpg", PHOTO), ("b.jpg", PHOTO)], metadata, **fields))
    assert says in detail(response, 400, "invalid_request")


def test_v1_without_files_or_as_json_is_400(live: LiveServer) -> None:
    no_files = post(live, V1, data={"api_key": "k", "metadata": [YOLO]}, files={"x": ("", b"")})
    detail(no_files, 400, "invalid_request")
    as_json = post(live, V1, json={"api_key": "k"})
    assert "multipart/form-data" in detail(as_json, 400, "invalid_request")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"api_key": "k", "data": []}, "data"),
        ({"api_key": "k", "data": "x"}, "data"),
        ({"api_key": "k", "data": [{"filename": "a.jpg"}]}, "data.0.image_url"),
        ({"api_key": "k", "data": [{"image_url": "x", "is_llm": "true"}]}, "data.0.is_llm"),
        ({"data": [{"image_url": "x"}]}, "api_key is required"),
        ({"api_key": "k", "query": 5, "data": [{"image_url": "x"}]}, "query"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_v2_bodies_are_400_in_the_detail_shape(live: LiveServer, body: Any, says: str) -> None:
    assert says in detail(post(live, V2, json=body), 400, "invalid_request")


def test_v2_body_that_is_not_json_is_400(live: LiveServer) -> None:
    response = post(live, V2, content=b"{no", headers={"Content-Type": "application/json"})
    detail(response, 400, "invalid_request")


def test_more_than_fifty_files_or_urls_is_413(live: LiveServer) -> None:
    small = coco_image("000000000724.jpg")[:2000]
    files = [(f"{i}.jpg", small) for i in range(51)]
    response = post(live, V1, **multipart(files, [YOLO] * 51, api_key="k"))
    assert "50" in detail(response, 413, "too_many_images")
    urls = [{"image_url": "http://10.0.0.1/x.jpg", "is_yolo": True}] * 51
    assert "50" in detail(
        post(live, V2, json={"api_key": "k", "data": urls}), 413, "too_many_images"
    )


def test_a_file_or_body_over_its_byte_limit_is_413(
    serve: Callable[..., LiveServer],
) -> None:
    live = serve(raku_max_file_bytes=100_000, raku_max_request_bytes=400_000)
    big = post(live, V1, **multipart([("a.jpg", PHOTO)], [YOLO], api_key="k"))  # 161,811 bytes
    assert "100000" in detail(big, 413, "payload_too_large")
    small = PHOTO[:90_000]
    body = post(
        live, V1, **multipart([(f"{i}.jpg", small) for i in range(5)], [YOLO] * 5, api_key="k")
    )
    assert "400000" in detail(body, 413, "payload_too_large")


def test_a_failing_or_missing_vision_backend_fails_only_the_llm_part(
    serve: Callable[..., LiveServer], tmp_path: Path
) -> None:
    both = json.dumps({"is_yolo": True, "is_llm": True})
    files = [("both.jpg", PHOTO), ("llm.jpg", PHOTO), ("yolo.jpg", PHOTO)]
    down = serve(vlm_url="http://127.0.0.1:9/v1", vlm_model="m", vlm_attempts=1)
    absent = serve()
    for live, code in ((down, None), (absent, "model_unavailable")):
        response = post(live, V1, **multipart(files, [both, LLM, YOLO], api_key="k", query=QUERY))
        assert response.status_code == 200, response.text
        first, llm_only, yolo_only = response.json()["result"]
        assert "person" in labels(first) and first["llm"] is None
        assert first["assets"]["annotated_image"] is not None  # what did run is kept
        for entry in (first, llm_only):
            assert entry["error"]["code"] == (code or entry["error"]["code"])
            assert entry["error"]["code"] != "internal_error"
        assert llm_only["yolo"] is None and llm_only["llm"] is None
        assert "person" in labels(yolo_only) and "error" not in yolo_only


def test_keys_and_credits_answer_in_the_detail_shape_and_charge_what_ran(
    serve: Callable[..., LiveServer], standin: VlmStandin
) -> None:
    live = serve(auth="required", vlm_url=standin.url, vlm_model="q", credits_per_vlm_call=2)
    store = KeyStore(make_engine(live.settings))
    key = store.create("raku", credits=10)
    detail(
        post(live, V1, **multipart([("a.jpg", PHOTO)], [YOLO], api_key="wrong")),
        401,
        "unauthorized",
    )
    both = json.dumps({"is_yolo": True, "is_llm": True})
    files = [("a.jpg", PHOTO), ("b.jpg", PHOTO), ("bad.jpg", b"junk")]
    form = multipart(files, [both, YOLO, both], api_key=key.secret, query=QUERY)
    assert post(live, V1, **form).status_code == 200
    # a: 1 + 2 (its answer), b: 1, bad.jpg: nothing (never read, never asked)
    assert store.by_name("raku").credits == 10 - 4
    too_dear = multipart([("a.jpg", PHOTO)] * 3, [both] * 3, api_key=key.secret, query=QUERY)
    assert "needs 9" in detail(post(live, V1, **too_dear), 402, "insufficient_credits")
    bearer = post(
        live,
        V2,
        json={"data": [{"image_url": "x"}]},
        headers={"Authorization": f"Bearer {key.secret}"},
    )
    assert (
        bearer.status_code == 200
        and bearer.json()["result"][0]["error"]["code"] == "invalid_request"
    )


def test_unknown_paths_and_wrong_methods_answer_in_the_detail_shape(live: LiveServer) -> None:
    with live.client() as client:
        detail(client.get(V1), 405, "method_not_allowed")
        detail(client.post("/api/v1/inference/predict/nope", json={}), 404, "not_found")
        detail(client.get("/api/v1/inference/assets/results/x/0-output.json"), 403, "forbidden")


def test_a_server_fault_is_a_generic_500_in_the_detail_shape(
    serve: Callable[..., LiveServer],
) -> None:
    live = serve()
    blobs = Path(live.settings.data_dir) / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    (blobs / "results").write_text("a file where the results folder should be")
    response = post(live, V1, **multipart([("a.jpg", PHOTO)], [YOLO], api_key="k"))
    assert detail(response, 500, "internal_error") == "internal server error"


def test_an_images_rate_limit_is_429_with_retry_after_in_the_detail_shape(
    serve: Callable[..., LiveServer],
) -> None:
    live = serve(auth="required")
    key = KeyStore(make_engine(live.settings)).create("rated", images_per_minute=3).secret
    form = multipart([("a.jpg", PHOTO), ("b.jpg", PHOTO)], [YOLO, YOLO], api_key=key)
    assert post(live, V1, **form).status_code == 200
    limited = post(live, V1, **form)
    detail(limited, 429, "rate_limited")
    assert int(limited.headers["retry-after"]) >= 1


_VALUES: list[Any] = [None, True, 0, -1, 1.5, "", "x", "\x00", "😀", [], {}, [1], {"a": 1}]
_KEYS = ["api_key", "query", "data", "image_url", "filename", "is_yolo", "is_llm"]
_KEYS += ["object_path", "expires_in"]


def _random_body(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 2 or roll < 0.4:
        return rng.choice(_VALUES)
    if roll < 0.6:
        return [_random_body(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(_KEYS): _random_body(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def test_random_bodies_never_cause_a_server_error(live: LiveServer) -> None:
    rng = random.Random(20261203)
    paths = [V2, "/api/v1/inference/predict/stream/v2", "/api/v1/inference/assets/signed-url"]
    with live.client() as client:
        for _ in range(150):
            body = _random_body(rng)
            if isinstance(body, dict) and rng.random() < 0.7:
                body["api_key"] = "k"
            response = client.post(rng.choice(paths), json=body)
            assert response.status_code < 500, response.text
            if response.status_code >= 400:
                detail(response, response.status_code, response.json()["detail"]["code"])


def test_openapi_documents_every_route_and_its_body(live: LiveServer) -> None:
    with live.client() as client:
        paths = client.get("/openapi.json").json()["paths"]
    for route in ("predict/batch", "predict/batch/v2", "predict/stream", "predict/stream/v2"):
        body = paths[f"/api/v1/inference/{route}"]["post"]["requestBody"]["content"]
        assert "$ref" not in json.dumps(body)
        media = "application/json" if route.endswith("v2") else "multipart/form-data"
        fields = body[media]["schema"]["properties"]
        assert {"api_key", "query"} <= set(fields) and (
            {"files", "metadata"} <= set(fields) or "data" in fields
        )
    assert "object_path" in json.dumps(paths["/api/v1/inference/assets/signed-url"])


def test_without_the_allow_list_loopback_link_local_and_metadata_urls_are_refused(
    serve: Callable[..., LiveServer], images_base: str
) -> None:
    strict = serve()
    urls = [
        f"{images_base}/img1.jpg",  # 127.0.0.1
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x.jpg",
        "http://192.168.1.1/x.jpg",
    ]
    data = [{"image_url": url, "is_yolo": True} for url in urls]
    response = post(strict, V2, json={"api_key": "k", "data": data})
    for entry in response.json()["result"]:
        _entry_error(entry, "url_not_allowed")
